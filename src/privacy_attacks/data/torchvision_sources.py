"""Datasets read through torchvision's classes (files in torchvision's layout under ``root``, downloaded there on
request), converted to tensors once: CIFAR-10, CIFAR-100, SVHN, and any other torchvision image-classification
dataset by its class (:class:`TorchvisionSource`)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from privacy_attacks.data.source import ImageSource, SourceData, no_empty_folders_left, uint8_to_pixels
from privacy_attacks.errors import ConfigError, DataUnavailableError


class TorchvisionSource(ImageSource):
    """Any torchvision image-classification dataset: ``dataset(**train)`` and ``dataset(**test)`` give the training
    and test sets, each image converted by ``ToTensor`` (float (C, H, W) in [0, 1]), all stacked once.

    Args:
        dataset: the dataset class with its ``root`` and ``download`` bound (in a config, ``_target_:
            torchvision.datasets.<Name>`` with ``_partial_: true``).
        train, test: the keyword arguments that choose each split (``{train: true}`` for most datasets,
            ``{split: train}`` for SVHN-like ones).
        name: the dataset's name in messages (None: the class's name).
        train_size: the training set's size when known without reading it (lets a bad ``data.val_size`` stop at
            once; None: checked after loading).

    Example (a config's ``source:`` node)::

        _target_: privacy_attacks.data.TorchvisionSource
        dataset: {_target_: torchvision.datasets.KMNIST, _partial_: true, root: data, download: true}
    """

    root_key = "data.source.dataset.root"
    download_key = "data.source.dataset.download"
    env: str | None = None

    def __init__(
        self,
        dataset: Callable[..., Any],
        train: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        name: str | None = None,
        train_size: int | None = None,
    ):
        self.dataset = dataset
        self.train_args = dict(train) if train is not None else {"train": True}
        self.test_args = dict(test) if test is not None else {"train": False}
        keywords = getattr(dataset, "keywords", {})
        self.root = Path(str(keywords.get("root", "."))).expanduser()
        self.download = bool(keywords.get("download", False))
        self.name = name or getattr(getattr(dataset, "func", dataset), "__name__", "dataset")
        self.train_size = train_size
        self.train_size_key = "data.source.train_size" if train_size is not None else None

    def identity(self) -> tuple:
        func = getattr(self.dataset, "func", self.dataset)
        keywords = {k: v for k, v in getattr(self.dataset, "keywords", {}).items() if k not in ("root", "download")}
        return (
            f"{func.__module__}.{func.__qualname__}",
            str(self.root.resolve()),
            repr(sorted(keywords.items())),
            repr(sorted(self.train_args.items())),
            repr(sorted(self.test_args.items())),
        )

    def _missing(self, reason: str) -> str:
        env = f" (or the environment variable {self.env}=/path/to/folder)" if self.env else ""
        return (
            f"{self.name} is not under {self.root} and {reason}. Point the config value {self.root_key}=/path/to/folder"
            f"{env} at a folder holding it in torchvision's layout, or run once on a machine with internet and "
            f"{self.download_key}=true."
        )

    def _open(self, split: Mapping[str, Any]) -> Any:
        """The torchvision dataset of one split; :class:`DataUnavailableError` when its files are missing."""
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            with no_empty_folders_left(self.root if self.download else None):
                return self.dataset(**split)
        except TypeError as error:
            raise ConfigError(f"{self.name} does not take the split arguments {dict(split)}: {error}.") from None
        except (RuntimeError, OSError) as error:  # torchvision: "Dataset not found or corrupted"; network failures
            reason = (str(error).splitlines() or [""])[0]
            if self.download:
                reason = f"downloading it failed ({type(error).__name__}: {reason})"
            else:
                reason = f"{self.download_key} is false ({reason})"
            raise DataUnavailableError(self._missing(reason)) from error
        finally:
            socket.setdefaulttimeout(previous)

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor]:
        """A torchvision dataset as float (N, C, H, W) pixels in [0, 1] and long (N,) labels (item by item, through
        ``ToTensor``; subclasses read the arrays torchvision keeps in memory directly)."""
        from torchvision.transforms.functional import to_tensor

        images, labels = [], []
        for index in range(len(dataset)):
            image, label = dataset[index]
            images.append(image if isinstance(image, Tensor) else to_tensor(image))
            labels.append(int(label))
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            first, other = sorted(shapes)[:2]
            raise ConfigError(
                f"{self.name} gives images of several shapes ({list(first)}, {list(other)}, ...): give the dataset a "
                "transform that makes them one, e.g. data.source.dataset.transform: {_target_: "
                "torchvision.transforms.Resize, size: [<height>, <width>]}."
            )
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def read(self) -> SourceData:
        train, test = self._open(self.train_args), self._open(self.test_args)
        train_images, train_labels = self.tensors(train)
        test_images, test_labels = self.tensors(test)
        classes = getattr(train, "classes", None)
        names = tuple(str(c) for c in classes) if classes else None
        return SourceData(train_images, train_labels, test_images, test_labels, names)


class CIFAR10Source(TorchvisionSource):
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, (3, 32, 32), ten classes, read by
    ``torchvision.datasets.CIFAR10`` from ``root/cifar-10-batches-py/``."""

    root_key, download_key, env = "data.source.root", "data.source.download", "CIFAR10_ROOT"
    torchvision_class, label = "CIFAR10", "CIFAR-10"
    size = 50_000

    def __init__(self, root: str = "data", download: bool = True):
        import torchvision.datasets

        dataset = functools.partial(getattr(torchvision.datasets, self.torchvision_class), root=root, download=download)
        super().__init__(dataset, name=self.label, train_size=self.size)
        self.train_size_key = None  # the dataset's own size, not a setting

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor]:
        images = uint8_to_pixels(torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous())  # (N, H, W, C)
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)


class CIFAR100Source(CIFAR10Source):
    """CIFAR-100 (Krizhevsky 2009): 50,000 training and 10,000 test images, (3, 32, 32), 100 fine classes, read by
    ``torchvision.datasets.CIFAR100`` from ``root/cifar-100-python/``."""

    env, torchvision_class, label = "CIFAR100_ROOT", "CIFAR100", "CIFAR-100"


class SVHNSource(CIFAR10Source):
    """SVHN (Netzer et al. 2011), the cropped digits: 73,257 training and 26,032 test images, (3, 32, 32), ten digits
    (label 0 is the digit 0), read by ``torchvision.datasets.SVHN`` from ``root/{train,test}_32x32.mat``."""

    env, torchvision_class, label = "SVHN_ROOT", "SVHN", "SVHN"
    size = 73_257

    def __init__(self, root: str = "data", download: bool = True):
        super().__init__(root, download)
        self.train_args, self.test_args = {"split": "train"}, {"split": "test"}

    def tensors(self, dataset: Any) -> tuple[Tensor, Tensor]:
        images = uint8_to_pixels(torch.from_numpy(dataset.data).contiguous())  # already (N, C, H, W)
        return images, torch.as_tensor(dataset.labels, dtype=torch.long)

    def read(self) -> SourceData:
        data = super().read()
        data.class_names = tuple(str(digit) for digit in range(10))
        return data
