"""Where a dataset's images come from: an :class:`ImageSource` returns the training and test sets as tensors.

A source is the one dataset-specific piece of the data layer (``data.source`` in a ``conf/data/*.yaml``): it reads
(or downloads, or generates) the images once and returns them as float (N, C, H, W) pixels in [0, 1] with long
labels; :class:`~privacy_attacks.data.module.ImageDataModule` splits, batches and moves them, the same way for every
dataset. Loaded tensors are kept per process (a few datasets at a time), keyed by the source's settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, DataUnavailableError

KEPT_DATASETS = 2  # loaded datasets kept per process (each as float tensors: CIFAR-10 is 0.7 GB)


@dataclass
class SourceData:
    """A dataset as tensors: float (N, C, H, W) pixels in [0, 1], long (N,) labels; ``class_names`` in label order
    (None: the labels' numbers)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: tuple[str, ...] | None = None

    def clone(self) -> SourceData:
        return SourceData(
            self.train_images.clone(),
            self.train_labels.clone(),
            self.test_images.clone(),
            self.test_labels.clone(),
            self.class_names,
        )


def checked(data: SourceData, source: str) -> SourceData:
    """``data`` as a source read it, or :class:`ConfigError` in one line when it is not what every part of the
    framework expects: float pixels in [0, 1] (uint8 or 0-255 values: divide by 255), integer labels (returned as
    long), training and test images of one shape; a set in class order shuffled (:func:`out_of_class_order`)."""
    shapes = {}
    for part, images, labels in (
        ("training", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        if not images.is_floating_point():
            raise ConfigError(f"{source} gives {part} images of dtype {images.dtype}: give floats in [0, 1] (/ 255).")
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ConfigError(
                f"{source} gives {part} pixels from {float(images.min()):g} to {float(images.max()):g}: give pixels "
                "in [0, 1] (divide 0-255 values by 255; the data config's mean and std normalise them)."
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ConfigError(f"{source} gives {part} labels of dtype {labels.dtype}: give integer class indices.")
        shapes[part] = tuple(images.shape[1:])
    if shapes["training"] != shapes["test"] and len(data.test_images):
        raise ConfigError(
            f"{source} gives training images of shape {list(shapes['training'])} and test images of shape "
            f"{list(shapes['test'])}: both sets must have one shape."
        )
    data.train_labels, data.test_labels = data.train_labels.long(), data.test_labels.long()
    data.train_images, data.train_labels = out_of_class_order(data.train_images, data.train_labels)
    data.test_images, data.test_labels = out_of_class_order(data.test_images, data.test_labels)
    return data


def out_of_class_order(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """A set whose labels come in class order (a folder of class subfolders, some torchvision datasets) in a fixed
    shuffled order (seed 0), as MNIST's and CIFAR's sets come: the parts read by position (the stealing report set,
    the first half of the test images; the GAN's public images, the second) then hold every class. A set in any
    other order is returned as it is."""
    if len(labels) < 2 or labels.unique().numel() < 2 or bool((labels[1:] < labels[:-1]).any()):
        return images, labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images[order], labels[order]


_loaded: OrderedDict[tuple, SourceData] = OrderedDict()
_digests: dict[tuple, str] = {}


class ImageSource:
    """Base of the dataset sources: subclasses implement :meth:`read` and :meth:`identity`.

    ``train_size`` is the size of the training set when known without reading it (for the split's checks at
    construction; None: checked after loading); where a config declares it (``train_size_key``), :meth:`load` checks
    it against the images read.
    """

    name = "images"
    train_size: int | None = None
    train_size_key: str | None = None  # the config key that declares train_size, checked against the images read

    def identity(self) -> tuple:
        """The settings that determine the tensors :meth:`read` returns (hashable): the key of the process's cache."""
        raise NotImplementedError

    def read(self) -> SourceData:
        """Read, download or generate the dataset; :class:`DataUnavailableError` saying what to set when it cannot."""
        raise NotImplementedError

    def load(self) -> SourceData:
        """The dataset (a copy of the process's cached tensors: a caller may change them in place)."""
        key = (type(self).__qualname__, *self.identity())
        if key not in _loaded:
            try:
                data = self.read()
            except FileNotFoundError as error:  # a source of one's own that names no key: still one line
                reason = f"{error.filename} does not exist" if error.filename else str(error)
                raise DataUnavailableError(
                    f"{type(self).__name__} cannot read its data: {reason} (check the paths its data config gives it)."
                ) from None
            _loaded[key] = checked(data, type(self).__name__)
            while len(_loaded) > KEPT_DATASETS:
                _loaded.popitem(last=False)
        _loaded.move_to_end(key)
        read = len(_loaded[key].train_labels)
        if self.train_size_key and self.train_size is not None and read != self.train_size:  # sizes worked out wrong
            raise ConfigError(
                f"{getattr(self, 'name', type(self).__name__)} holds {read:,} training images, not the "
                f"{self.train_size:,} its config declares: set {self.train_size_key}={read} (or null, to count them "
                "when they are read)."
            )
        return _loaded[key].clone()

    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the training and test images and labels as :meth:`load` returns them:
        what names the data in a cached model's key, so other content never reuses a model trained on these."""
        key = (type(self).__qualname__, *self.identity())
        if key not in _digests:
            data = self.load()
            hashed = hashlib.sha256()
            for tensor in (data.train_images, data.train_labels, data.test_images, data.test_labels):
                hashed.update(tensor.contiguous().numpy().tobytes())
            _digests[key] = hashed.hexdigest()[:16]
        return _digests[key]


def uint8_to_pixels(images: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float pixels in [0, 1]."""
    return images.float().div_(255.0)


def fetch(
    download: Callable[[], Any], missing: Callable[[str], str], timeout: float = 15, root: str | Path | None = None
) -> None:
    """Run ``download()`` with a socket timeout; any failure becomes :class:`DataUnavailableError` with the message
    ``missing(reason)``, and leaves no folder it made empty under ``root`` (:func:`no_empty_folders_left`)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with no_empty_folders_left(root):
            download()
    except Exception as error:  # noqa: BLE001 - any network or file failure means the same to the user
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"  # torchvision: the cause comes last
        raise DataUnavailableError(missing(f"downloading it failed ({type(error).__name__}: {reason})")) from error
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def no_empty_folders_left(root: str | Path | None) -> Iterator[None]:
    """Run the body (a download into ``root``); when it fails, remove the folders it made that are still empty: those
    up to two levels under ``root`` (torchvision's ``<root>/MNIST/raw``), ``root`` itself and the parents it made for
    it (a failed download leaves no trace). Only those two levels are listed, so a large data folder costs nothing."""
    if root is None:
        yield
        return
    root = Path(root).expanduser().absolute()
    made_parents = [p for p in (root, *root.parents) if not p.exists()]  # root first

    def folders() -> set[Path]:
        return {p for pattern in ("*", "*/*") for p in root.glob(pattern) if p.is_dir()} if root.is_dir() else set()

    before = folders()
    try:
        yield
    except BaseException:
        made = folders() - before
        for folder in [*sorted(made, key=lambda p: len(p.parts), reverse=True), *made_parents]:  # deepest first
            with contextlib.suppress(OSError):  # not empty (files of the download kept), or gone
                folder.rmdir()
        raise


def balanced_labels(count: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """``count`` labels, as evenly spread over ``num_classes`` as possible, in a seeded order."""
    return (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
