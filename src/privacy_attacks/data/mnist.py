"""MNIST as whole tensors on the training device.

LeNet5 on MNIST is bound by data-loading overhead when every item goes through
PIL transforms and worker processes, so the 70k images are decoded once into a
uint8 tensor, converted to float [0, 1] pixels of shape (N, 1, 28, 28), moved to
the device and sliced into batches there (:class:`TensorBatches`).
"""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, DataUnavailableError, is_integer, require_choice, require_positive
from privacy_attacks.seeding import derive_seed

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_SIZE = 60_000
# data_digest of MNIST's own files (the md5-verified originals): the content every cached target was trained on.
MNIST_DIGEST = "55c41ac0f5a8c456"


def _has_local_copy(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in MNIST_FILES)


def _missing_message(root: Path, reason: str) -> str:
    return (
        f"MNIST is not under {root}/MNIST/raw/ and {reason}. "
        "Point the project at a local copy (a folder holding MNIST/raw/ in torchvision's layout) "
        "with the config value data.root=/path/to/folder or the environment variable "
        "MNIST_ROOT=/path/to/folder, or run once on a machine with internet and data.download=true."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(root: str, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import MNIST

    path = Path(root).expanduser()
    if not _has_local_copy(path):
        if not download:
            raise DataUnavailableError(_missing_message(path, "data.download is false"))
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            MNIST(str(path), train=True, download=True)
        except Exception as error:  # noqa: BLE001 - any network failure means the same to the user
            raise DataUnavailableError(_missing_message(path, f"downloading it failed ({error})")) from error
        finally:
            socket.setdefaulttimeout(previous)
    dataset = MNIST(str(path), train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div_(255.0)
    return images, dataset.targets.long()


def load_mnist(root: str | Path, train: bool = True, download: bool = False) -> tuple[Tensor, Tensor]:
    """Return MNIST ``(images, labels)``: float (N, 1, 28, 28) in [0, 1] and long (N,).

    ``train=True`` gives the 60k training images, ``False`` the official 10k test set.
    Reads ``root/MNIST/raw``; downloads through torchvision only when ``download`` is true.
    Raises :class:`DataUnavailableError` saying what to set when neither works.
    """
    images, labels = _load_cached(str(Path(root).expanduser().resolve()), bool(train), bool(download))
    return images.clone(), labels.clone()


@functools.lru_cache(maxsize=4)
def _digest_cached(root: str, download: bool) -> str:
    digest = hashlib.sha256()
    for train in (True, False):
        images, labels = _load_cached(root, train, download)
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def data_digest(root: str | Path, download: bool = False) -> str:
    """16 hex digits of the SHA-256 of the training and test images and labels under ``root`` (as
    :func:`load_mnist` gives them): what a cache key names so that other files under the same path (another dataset
    in MNIST's layout, a changed copy) never reuse a model trained on these. MNIST's own files give
    :data:`MNIST_DIGEST`."""
    return _digest_cached(str(Path(root).expanduser().resolve()), bool(download))


def split_training_indices(
    val_size: int, split_seed: int, members: int | None = None, total: int = TRAIN_SIZE, member_offset: int = 0
) -> dict[str, Tensor]:
    """Seeded split of the ``total`` (60k) training indices.

    Returns ``val`` (the first ``val_size`` of a seeded permutation), ``train`` (``members`` images of
    the rest, from position ``member_offset`` on; all of it when ``members`` is None) and ``nonmember``
    (the rest of the pool, never trained on). The three are disjoint.
    """
    pool_size = total - val_size
    if not 0 < val_size < total:
        raise ConfigError(f"data.val_size={val_size!r} is not allowed: it must be between 1 and {total - 1}.")
    if not is_integer(member_offset) or not 0 <= member_offset < pool_size:
        raise ConfigError(f"member_offset={member_offset!r} is not allowed: it must be an integer in [0, {pool_size}).")
    if members is not None and not 0 < members <= pool_size - member_offset:
        raise ConfigError(
            f"members={members} is not allowed: it must be between 1 and {pool_size - member_offset} "
            f"({total:,} training images minus val_size={val_size} minus member_offset={member_offset})."
        )
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(total, generator=generator)
    pool = order[val_size:]
    end = pool_size if members is None else member_offset + members
    return {
        "val": order[:val_size],
        "train": pool[member_offset:end],
        "nonmember": torch.cat([pool[:member_offset], pool[end:]]),
    }


def recipe_members(data: Any, recipe: Any) -> tuple[Tensor, Tensor]:
    """The training images and labels a classifier recipe trains on: its ``members`` images of the training
    pool from ``member_offset`` (all of the pool without ``members``), under the data config's split."""
    images, labels = load_mnist(data.root, train=True, download=data.download)
    index = split_training_indices(
        data.val_size, data.split_seed, recipe.get("members"), len(labels), recipe.get("member_offset", 0)
    )["train"]
    return images[index], labels[index]


BATCH_ORDERS = ("hashed", "consecutive")


def epoch_seed(seed: int, epoch: int, batch_order: str = "hashed") -> int:
    """The seed of epoch ``epoch``'s batch order (or Poisson masks) in a run seeded by ``seed``.

    ``hashed``: :func:`~privacy_attacks.seeding.derive_seed` ``(seed, "batch_order", epoch)`` (63 bits), so no two
    (seed, epoch) pairs share an order. ``consecutive``: ``seed + epoch``, the order of every model this project
    measured before: seed s at epoch e + 1 then replays seed s + 1 at epoch e, so neighbouring seeds are not
    independent replicates; kept to reproduce those numbers (``data.batch_order=consecutive``).
    """
    if batch_order == "consecutive":
        return int(seed) + int(epoch)
    return derive_seed(seed, "batch_order", epoch)


class _EpochBatches:
    """Base of the batch iterables: each pass draws from a generator seeded by :func:`epoch_seed` of the pass's
    epoch. The epoch is ``epoch_of()`` when given (the trainer's ``current_epoch``, so a fit resumed from a
    checkpoint continues the sequence of the uninterrupted one), else the count of passes so far."""

    def __init__(self, seed: int, batch_order: str, epoch_of: Callable[[], int] | None):
        require_choice(batch_order, BATCH_ORDERS, "data.batch_order")
        self.seed, self.batch_order, self.epoch_of = seed, batch_order, epoch_of
        self.epoch = 0

    def _next_generator(self) -> torch.Generator:
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        self.epoch = epoch + 1
        return torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.batch_order))


class TensorBatches(_EpochBatches):
    """An iterable of ``(images, labels)`` batches sliced from tensors already on the device.

    Shuffling draws a fresh permutation each epoch from a generator seeded by :func:`epoch_seed` ``(seed, epoch)``,
    so runs are reproducible without worker processes. ``batch_order`` defaults to ``consecutive`` here: the
    attacker's own fits (decoders, attack classifiers) pass seeds already derived per role by a hash, so their
    ``seed + epoch`` never meets another fit's; the data module passes its ``data.batch_order``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        batch_order: str = "consecutive",
        epoch_of: Callable[[], int] | None = None,
    ):
        super().__init__(seed, batch_order, epoch_of)
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self._next_generator()).to(self.images.device)
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield self.images[index], self.labels[index]


class PoissonBatches(_EpochBatches):
    """``steps`` batches of ``(images, labels)`` by Poisson sampling, as DP-SGD's accountant assumes: each image joins
    each batch independently with probability ``sample_rate``, so batch sizes vary (and may be zero).

    As Opacus's ``DPDataLoader``. Each pass over the ``steps`` batches draws from a generator seeded by
    :func:`epoch_seed` ``(seed, epoch)``: a resumed fit (``epoch_of``) draws the masks the uninterrupted one draws,
    which is what the restored accountant counts on.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        sample_rate: float,
        steps: int,
        seed: int = 0,
        batch_order: str = "hashed",
        epoch_of: Callable[[], int] | None = None,
    ):
        super().__init__(seed, batch_order, epoch_of)
        self.images, self.labels = images, labels
        self.sample_rate, self.steps = sample_rate, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        generator = self._next_generator()
        for _ in range(self.steps):
            index = (torch.rand(len(self.labels), generator=generator) < self.sample_rate).nonzero().squeeze(1)
            index = index.to(self.images.device)
            yield self.images[index], self.labels[index]


class MNISTDataModule(L.LightningDataModule):
    """MNIST with a seeded train/validation split of the 60k training images and the official test set.

    Args:
        root: folder holding ``MNIST/raw`` (torchvision's layout).
        download: download through torchvision when the files are not under ``root``.
        val_size: validation images taken from the training set.
        split_seed: seed of the train/validation/non-member split.
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test.
        members: train on only this many images of the training pool (None: all of it);
            the rest of the pool are non-members the model never saw.
        member_offset: the members start at this position of the (seeded) training pool, so two
            recipes can train on disjoint halves (the two judges of output inversion).
        poisson_sampling: training batches by Poisson sampling (:class:`PoissonBatches`, for DP-SGD): as many
            per epoch as the fixed-size batches would be, each image in each with probability ``sample_rate``.
        extra_images, extra_labels: (K, 1, 28, 28) float and (K,) long training examples added to the members
            (the canaries of the one-run audit, :mod:`privacy_attacks.attacks.audit`); None: none.
        batch_order: how each epoch's batch order (or Poisson masks) is seeded from the run's seed and the epoch
            (:func:`epoch_seed`): ``hashed`` (independent across seeds and epochs) or ``consecutive`` (``seed +
            epoch``, the order of the numbers measured before it existed). The epoch is the trainer's, so a resumed
            fit continues the uninterrupted sequence.
        seed: the run's seed, which the batch order follows (None: ``torch.initial_seed()``, what
            ``seed_everything`` set).

    After ``setup``: ``train_size``, ``steps_per_epoch`` and ``sample_rate`` (1 / steps per epoch, as Opacus's).
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
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
        split_training_indices(val_size, split_seed, members, member_offset=member_offset)  # bad sizes stop here
        self.poisson_sampling = poisson_sampling
        self.root, self.download = root, download
        self.val_size, self.split_seed = val_size, split_seed
        self.batch_size, self.eval_batch_size, self.members = batch_size, eval_batch_size, members
        self.member_offset = member_offset
        self.batch_order, self.seed = batch_order, seed
        self.extra = None if extra_images is None else (extra_images, extra_labels.long())
        self.indices: dict[str, Tensor] = {}
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}

    def prepare_data(self) -> None:
        load_mnist(self.root, train=True, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = load_mnist(self.root, train=True, download=self.download)
        self.indices = split_training_indices(
            self.val_size, self.split_seed, self.members, len(labels), self.member_offset
        )
        for split in ("train", "val"):
            index = self.indices[split]
            self.tensors[split] = (images[index].to(device), labels[index].to(device))
        if self.extra is not None:
            train_images, train_labels = self.tensors["train"]
            self.tensors["train"] = (
                torch.cat([train_images, self.extra[0].to(device)]),
                torch.cat([train_labels, self.extra[1].to(device)]),
            )
        test_images, test_labels = load_mnist(self.root, train=False, download=self.download)
        self.tensors["test"] = (test_images.to(device), test_labels.to(device))

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
