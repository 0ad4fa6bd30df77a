"""The data module of every dataset: a source's tensors, split and batched on the training device.

Small image datasets fit in memory, and per-item PIL transforms with worker processes would dominate the time of
small models, so the images are loaded once as float (N, C, H, W) tensors in [0, 1] (by an
:class:`~privacy_attacks.data.source.ImageSource`), moved to the device and sliced into batches there.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.data.tensors import BATCH_ORDERS, PoissonBatches, TensorBatches, split_indices
from privacy_attacks.errors import ConfigError, is_integer, require_choice, require_int, require_positive


def checked_shape(value: Sequence[int] | None) -> tuple[int, ...] | None:
    """``data.image_shape`` as a tuple (None stays None), or :class:`ConfigError` unless it is [C, H, W] > 0."""
    if value is None:
        return None
    shape = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    if len(shape) != 3 or not all(is_integer(s) and s > 0 for s in shape):
        raise ConfigError(f"data.image_shape={list(shape)!r} is not allowed: it must be [channels, height, width].")
    return shape


def channel_values(value: Sequence[float] | float | None, key: str, channels: int | None) -> tuple[float, ...] | None:
    """``data.mean`` or ``data.std`` (``key``) as a tuple of floats, one for all channels or one per channel, or
    :class:`ConfigError` in one line naming the key."""
    if value is None:
        return None
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"data.{key}={list(values)!r} is not allowed: it must be a list of numbers, one per channel.")
    if channels is not None and len(values) not in (1, channels):
        raise ConfigError(
            f"data.{key}={list(values)!r} is not allowed: it must hold one number per channel ({channels}), or one "
            "for all."
        )
    if key == "std" and min(values) <= 0:
        raise ConfigError(f"data.std={list(values)!r} is not allowed: every channel's std must be > 0.")
    return tuple(float(v) for v in values)


def mean_and_std(
    mean: Sequence[float] | float | None, std: Sequence[float] | float | None, channels: int | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``data.mean`` and ``data.std`` (:func:`channel_values`), or :class:`ConfigError` when only one is set: the
    networks normalise with both or with neither, so one alone would silently switch normalisation off."""
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise ConfigError(
            f"data.{given} is set but data.{missing} is not: the networks normalise with both or neither; set "
            f"data.{missing} too (per channel), or leave both null."
        )
    return channel_values(mean, "mean", channels), channel_values(std, "std", channels)


class ImageDataModule(L.LightningDataModule):
    """A dataset with a seeded train/validation split of its training set and its official test set.

    Args:
        source: where the images come from (:class:`~privacy_attacks.data.source.ImageSource`: MNIST,
            Fashion-MNIST, CIFAR, SVHN, a folder of images, synthetic images...).
        name: the dataset's name (``data=<name>``): in messages, and in a cached model's key unless it is ``mnist``.
        image_shape: (C, H, W) of the images, as the models are built for it (checked against the source's images;
            None: taken from them).
        num_classes: the number of classes (checked against the labels; None: taken from the source).
        mean, std: per-channel pixel mean and standard deviation the models normalise with (one number: every
            channel alike; None: the models do not normalise).
        val_size: validation images taken from the training set.
        split_seed: seed of the train/validation/non-member split.
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test.
        members: train on only this many images of the training pool (None: all of it);
            the rest of the pool are non-members the model never saw.
        member_offset: the members start at this position of the (seeded) training pool, so two
            recipes can train on disjoint halves.
        poisson_sampling: training batches by Poisson sampling (:class:`PoissonBatches`, for DP-SGD): as many
            per epoch as the fixed-size batches would be, each image in each with probability ``sample_rate``.
        extra_images, extra_labels: (K, C, H, W) float and (K,) long training examples added to the members
            (the canaries of the one-run audit); None: none.
        batch_order: how each epoch's batch order (or Poisson masks) is seeded from the run's seed and the epoch
            (:func:`~privacy_attacks.data.tensors.epoch_seed`): ``hashed`` (independent across seeds and epochs) or
            ``consecutive`` (``seed + epoch``, the order of the numbers measured before it existed). The epoch is the
            trainer's, so a resumed fit continues the uninterrupted sequence.
        seed: the run's seed, which the batch order follows (None: ``torch.initial_seed()``, what
            ``seed_everything`` set).

    After ``setup``: ``tensors`` and ``indices`` per split, ``class_names``, ``train_size``, ``steps_per_epoch`` and
    ``sample_rate`` (1 / steps per epoch, as Opacus's).
    """

    def __init__(
        self,
        source: ImageSource,
        name: str | None = None,
        image_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 2000,
        members: int | None = None,
        member_offset: int = 0,
        poisson_sampling: bool = False,
        extra_images: Tensor | None = None,
        extra_labels: Tensor | None = None,
        batch_order: str = "hashed",
        seed: int | None = None,
    ):
        super().__init__()
        require_choice(batch_order, BATCH_ORDERS, "data.batch_order")
        require_positive(batch_size, "batch_size")
        if (extra_images is None) != (extra_labels is None) or (
            extra_images is not None and len(extra_images) != len(extra_labels)
        ):
            raise ValueError("extra_images and extra_labels come together, one label per image.")
        require_positive(eval_batch_size, "data.eval_batch_size")
        if num_classes is not None:
            require_int(num_classes, "data.num_classes", minimum=2)
        self.source = source
        self.name = name if name is not None else source.name
        self._image_shape = checked_shape(image_shape)
        channels = self._image_shape[0] if self._image_shape is not None else None
        self._mean, self._std = mean_and_std(mean, std, channels)
        self._num_classes = None if num_classes is None else int(num_classes)
        if source.train_size is not None:  # bad sizes stop here, before anything is read
            split_indices(val_size, split_seed, members, source.train_size, member_offset)
        self.poisson_sampling = poisson_sampling
        self.val_size, self.split_seed = val_size, split_seed
        self.batch_size, self.eval_batch_size, self.members = batch_size, eval_batch_size, members
        self.member_offset = member_offset
        self.batch_order, self.seed = batch_order, seed
        self.extra = None if extra_images is None else (extra_images, extra_labels.long())
        self.class_names: tuple[str, ...] | None = None
        self.indices: dict[str, Tensor] = {}
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}

    def prepare_data(self) -> None:
        self.source.load()

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        data = self.source.load()
        self._check(data)
        images, labels = data.train_images, data.train_labels
        self.indices = split_indices(self.val_size, self.split_seed, self.members, len(labels), self.member_offset)
        for split in ("train", "val"):
            index = self.indices[split]
            self.tensors[split] = (images[index].to(device), labels[index].to(device))
        if self.extra is not None:
            train_images, train_labels = self.tensors["train"]
            self.tensors["train"] = (
                torch.cat([train_images, self.extra[0].to(device)]),
                torch.cat([train_labels, self.extra[1].to(device)]),
            )
        self.tensors["test"] = (data.test_images.to(device), data.test_labels.to(device))

    def _check(self, data: SourceData) -> None:
        """One line naming the key when the source's tensors do not match what the config declares."""
        for part, images, labels in (
            ("training", data.train_images, data.train_labels),
            ("test", data.test_images, data.test_labels),
        ):
            if images.dim() != 4 or len(images) != len(labels):
                raise ConfigError(
                    f"data={self.name}: the source's {part} set is not (N, C, H, W) images with one label each "
                    f"(images {tuple(images.shape)}, labels {tuple(labels.shape)})."
                )
            shape = tuple(images.shape[1:])
            if self._image_shape is None:
                self._image_shape = shape
            if shape != self._image_shape:
                if shape[-1] in (1, 3) and shape[0] not in (1, 3) and shape[-1] == self._image_shape[0]:
                    raise ConfigError(
                        f"data={self.name}'s {part} images are channels-last, {list(shape)} (H, W, C): the source "
                        f"must give (N, C, H, W) images (images.permute(0, 3, 1, 2)), as data.image_shape="
                        f"{list(self._image_shape)} declares."
                    )
                raise ConfigError(
                    f"data.image_shape={list(self._image_shape)} does not match data={self.name}'s {part} images "
                    f"{list(shape)}: set data.image_shape={list(shape)}."
                )
        classes = len(data.class_names) if data.class_names is not None else None
        if self._num_classes is None:
            self._num_classes = classes or int(data.train_labels.max()) + 1
        if classes is not None and classes != self._num_classes:
            raise ConfigError(
                f"data.num_classes={self._num_classes} does not match data={self.name}, which has {classes} classes: "
                f"set data.num_classes={classes}."
            )
        for labels in (data.train_labels, data.test_labels):
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self._num_classes):
                raise ConfigError(
                    f"data.num_classes={self._num_classes} is not allowed for data={self.name}: its labels run from "
                    f"{int(labels.min())} to {int(labels.max())}, and must run from 0 to num_classes - 1."
                )
        if self.extra is not None and tuple(self.extra[0].shape[1:]) != self._image_shape:
            raise ConfigError(
                f"extra training images of shape {list(self.extra[0].shape[1:])} do not match data={self.name}'s "
                f"images {list(self._image_shape)}."
            )
        self.class_names = data.class_names or tuple(str(c) for c in range(self._num_classes))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        if self._image_shape is None:
            raise RuntimeError("image_shape is known after setup() when the config does not declare it.")
        return self._image_shape

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        if self._num_classes is None:
            raise RuntimeError("num_classes is known after setup() when the config does not declare it.")
        return self._num_classes

    @property
    def mean(self) -> tuple[float, ...] | None:
        """Per-channel pixel mean the models normalise with (None: they do not)."""
        return self._mean

    @property
    def std(self) -> tuple[float, ...] | None:
        """Per-channel pixel standard deviation the models normalise with (None: they do not)."""
        return self._std

    @property
    def train_size(self) -> int:
        """Training images (after ``setup``)."""
        return len(self.tensors["train"][1])

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch: ceil(train_size / batch_size), with either sampling."""
        return -(-self.train_size // self.batch_size)

    @property
    def sample_rate(self) -> float:
        """The probability that an image joins a Poisson batch: 1 / steps per epoch (Opacus's definition)."""
        return 1 / self.steps_per_epoch

    def train_dataloader(self) -> TensorBatches | PoissonBatches:
        # torch.initial_seed() is what seed_everything(seed) set: the batch order follows the run's seed.
        seed = (torch.initial_seed() if self.seed is None else int(self.seed)) % 2**31
        epoch_of = self._current_epoch if self.trainer is not None else None
        order = {"seed": seed, "batch_order": self.batch_order, "epoch_of": epoch_of}
        if self.poisson_sampling:
            return PoissonBatches(*self.tensors["train"], self.sample_rate, self.steps_per_epoch, **order)
        return TensorBatches(*self.tensors["train"], self.batch_size, shuffle=True, **order)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["test"], self.eval_batch_size)
