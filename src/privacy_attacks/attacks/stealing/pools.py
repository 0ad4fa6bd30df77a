"""Query data: the unlabeled images a model-stealing attacker holds and sends to the API.

A pool hands out the first ``n`` images of a seeded shuffle (:meth:`QueryPool.take`), each once, and knows its
``size`` and ``image_shape`` before any training (so a budget and a shape are checked before any work).

The configured dataset (``data=``) gives the evaluation sets and the in-distribution pool, the same way for every
dataset (for MNIST they are the sets documented in docs/stealing.md):

- evaluation sets (:func:`dataset_evaluation_split`), never in any pool: ``report`` is the first half of the
  dataset's test images (MNIST's 0-4,999), where reported numbers are measured; ``tune`` is the validation split of
  the training images (``data.val_size`` images drawn by ``data.split_seed``), where settings are chosen;
- the dataset's own pool (:class:`DatasetPool`, ``queries=<the dataset's name>``, the default): the training images
  outside the validation split plus the second half of the test images (60,000 for MNIST with the default split):
  the attacker's own unlabeled in-distribution images, part of which the target was trained on, as for any
  public-data stealing attack.

Pools of other data (``pools:`` in ``conf/attack/distillation.yaml``), out of distribution for the target; their
images must have the data's shape:

- ``mnist`` (:class:`MNISTPool`): MNIST's pool as above (against a Fashion-MNIST target, say);
- ``fashion_mnist`` (:class:`FashionMNISTPool`): the 70,000 Fashion-MNIST images (Xiao et al. 2017), natural
  out-of-distribution images for an MNIST target;
- ``noise`` (:class:`NoisePool`): uniform noise in [0, 1] of the data's shape, ``size`` images, drawn by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from privacy_attacks.data.fashion_mnist import (
    FASHION_SIZE,
    download_fashion_mnist,
    fashion_mnist_available,
    load_fashion_mnist,
)
from privacy_attacks.data.identity import data_name, data_source, is_mnist
from privacy_attacks.data.mnist import IMAGE_SHAPE, TRAIN_SIZE, MNISTSource
from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.errors import ConfigError, DataUnavailableError, is_integer, require_positive

EVALUATION_SIZE = 5000  # MNIST's report set: the first half of its 10,000 test images
MNIST_TEST_SIZE = 10_000


EVALUATION_SETS = ("report", "tune")


def report_size(test_size: int) -> int:
    """Test images in the ``report`` evaluation set: the first half (the second half is in the dataset's pool)."""
    return test_size // 2


def dataset_evaluation_split(
    data: SourceData, which: str = "report", val_size: int = 5000, split_seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The student's evaluation images ``(images (N, C, H, W), labels (N,))`` of a dataset.

    ``which="report"``: the first half of the test images (reported numbers); ``"tune"``: the validation split of
    the training images (``val_size`` drawn by ``split_seed``; settings are chosen there).
    """
    if which not in EVALUATION_SETS:
        raise ConfigError(f"evaluation={which!r} is not one of the choices: {', '.join(EVALUATION_SETS)}.")
    if which == "tune":
        index = split_indices(val_size, split_seed, None, len(data.train_labels))["val"]
        return data.train_images[index], data.train_labels[index]
    size = report_size(len(data.test_labels))
    return data.test_images[:size], data.test_labels[:size]


def evaluation_split(
    root: str | Path, download: bool = False, which: str = "report", val_size: int = 5000, split_seed: int = 0
) -> tuple[Tensor, Tensor]:
    """MNIST's evaluation images (:func:`dataset_evaluation_split` of MNIST's files under ``root``): test images
    0-4,999 for ``report``, the validation split for ``tune``."""
    return dataset_evaluation_split(MNISTSource(str(root), download).load(), which, val_size, split_seed)


def shape_text(shape: Sequence[int]) -> str:
    """(1, 28, 28) -> ``1x28x28``."""
    return "x".join(str(int(s)) for s in shape)


def shared_images(pool_images: Tensor, images: Tensor) -> int:
    """How many of ``images`` (N, C, H, W) in [0, 1] are also in ``pool_images`` (M, C, H, W), pixel for pixel at
    8 bits: an exact-copy check (a dataset's own files read twice), not a near-duplicate search."""

    def keys(batch: Tensor) -> list[bytes]:
        pixels = (batch.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).flatten(1).numpy()
        return [row.tobytes() for row in pixels]

    held = set(keys(pool_images))
    return sum(key in held for key in keys(images))


class QueryPool:
    """Base class: ``size`` images of ``image_shape``; :meth:`take` gives the first ``n`` of a seeded shuffle."""

    name = "base"

    @property
    def size(self) -> int:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the pool's images."""
        return tuple(self.take(1).shape[1:])

    def load(self) -> Tensor:
        """All ``size`` images, (size, C, H, W) in [0, 1], in a fixed order."""
        raise NotImplementedError

    def take(self, n: int, seed: int = 0) -> Tensor:
        """The first ``n`` images of the pool shuffled by ``seed``: (n, C, H, W) in [0, 1]."""
        self.check_budget(n)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))[:n]
        return self.load()[order]

    def check_budget(self, n: int) -> None:
        """:class:`ConfigError` unless 0 < ``n`` <= ``size``."""
        require_positive(n, "query_budget")
        if not is_integer(n) or n > self.size:
            raise ConfigError(
                f"query_budget={n!r} is not allowed: the {self.name} query pool holds {self.size} images "
                f"and each is queried at most once "
                f"(choose query_budget <= {self.size} or another pool with queries=...)."
            )

    def check_shape(self, image_shape: Sequence[int], data_name: str) -> None:
        """One line naming both shapes when the pool's images are not ``image_shape`` (the data's, which the target
        takes)."""
        shape = self.image_shape
        if tuple(shape) != tuple(image_shape):
            raise ConfigError(
                f"queries={self.name} gives {shape_text(shape)} images, but the target takes data={data_name}'s "
                f"{shape_text(image_shape)} images: choose a pool of that shape (queries={data_name}, its own "
                "images, or queries=noise)."
            )


class DatasetPool(QueryPool):
    """A dataset's own images as queries: its training images outside the validation split (``val_size``, drawn by
    ``split_seed``), in index order, then the second half of its test images.

    Disjoint from both evaluation sets of :func:`dataset_evaluation_split`. The sizes are read from the source
    (loading it) unless given as ``train_size`` and ``test_size``.
    """

    def __init__(
        self,
        source: ImageSource,
        val_size: int = 5000,
        split_seed: int = 0,
        name: str | None = None,
        train_size: int | None = None,
        test_size: int | None = None,
    ):
        self.source, self.val_size, self.split_seed = source, int(val_size), int(split_seed)
        self.name = name if name is not None else source.name
        self._sizes = None if train_size is None or test_size is None else (int(train_size), int(test_size))
        self._shape: tuple[int, ...] | None = None

    def _data(self) -> SourceData:
        data = self.source.load()
        self._sizes = (len(data.train_labels), len(data.test_labels))
        self._shape = tuple(data.train_images.shape[1:])
        return data

    def sizes(self) -> tuple[int, int]:
        """(training images, test images) of the dataset."""
        if self._sizes is None:
            self._data()
        return self._sizes

    @property
    def size(self) -> int:
        train, test = self.sizes()
        return train - self.val_size + test - report_size(test)

    @property
    def image_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._data()
        return self._shape

    def load(self) -> Tensor:
        data = self._data()
        sources = self.sources()
        return torch.cat([data.train_images[sources["train"]], data.test_images[sources["test"]]])

    def sources(self) -> dict[str, Tensor]:
        """Which indices of the training and test sets make up the pool, in the pool's order (for tests and docs)."""
        train, test = self.sizes()
        split = split_indices(self.val_size, self.split_seed, None, train)
        return {
            "train": torch.cat([split["train"], split["nonmember"]]).sort().values,
            "test": torch.arange(report_size(test), test),
        }


class MNISTPool(DatasetPool):
    """MNIST's digits (:class:`DatasetPool` of MNIST's files under ``root``): the training images outside the
    validation split (``val_size``, drawn by ``split_seed``), then test images 5,000-9,999 (60,000 with the default
    split); the sizes and shape are known without reading the files."""

    name = "mnist"

    def __init__(self, root: str = "data", download: bool = False, val_size: int = 5000, split_seed: int = 0):
        super().__init__(MNISTSource(root, download), val_size, split_seed, "mnist", TRAIN_SIZE, MNIST_TEST_SIZE)
        self.root, self.download = root, download
        self._shape = IMAGE_SHAPE


def data_pool(data) -> DatasetPool:
    """The in-distribution pool of the data config ``data`` (``conf/data/<name>.yaml``): :class:`MNISTPool` for
    MNIST's config, else :class:`DatasetPool` of its source, both under its split (``val_size``, ``split_seed``)."""
    if is_mnist(data):
        return MNISTPool(data.root, data.get("download", False), data.val_size, data.split_seed)
    return DatasetPool(data_source(data), data.val_size, data.split_seed, data_name(data))


class FashionMNISTPool(QueryPool):
    """Fashion-MNIST's 70,000 images (train then test), out-of-distribution queries for an MNIST target.

    Args:
        root: a folder holding the IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``)
            directly, as the Debian package ``dataset-fashion-mnist`` installs them under
            ``/usr/share/datasets/fashion-mnist``, or in torchvision's ``FashionMNIST/raw/`` layout.
        download: download through torchvision into ``root`` when the files are missing (needs internet).
    """

    name = "fashion_mnist"
    image_shape = (1, 28, 28)

    def __init__(self, root: str = "/usr/share/datasets/fashion-mnist", download: bool = False):
        self.root, self.download = Path(root).expanduser(), download
        self._images: Tensor | None = None

    @property
    def size(self) -> int:
        return FASHION_SIZE

    def available(self) -> bool:
        return fashion_mnist_available(self.root)

    def _missing(self, reason: str) -> DataUnavailableError:
        return DataUnavailableError(
            f"Fashion-MNIST is not under {self.root} and {reason}. Install it with "
            "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), or point the "
            "project at a folder holding its IDX files with the config value pools.fashion_mnist.root=/path/to/folder "
            "or the environment variable FASHION_MNIST_ROOT=/path/to/folder, or run once with internet and "
            "pools.fashion_mnist.download=true."
        )

    def ensure_available(self) -> None:
        """Download if allowed; :class:`DataUnavailableError` saying what to set otherwise."""
        if self.available():
            return
        if not self.download:
            raise self._missing("pools.fashion_mnist.download is false")
        try:
            download_fashion_mnist(self.root)
        except Exception as error:  # noqa: BLE001 - any network or disk failure means the same to the user
            raise self._missing(f"downloading it failed ({error})") from error

    def load(self) -> Tensor:
        if self._images is None:
            self.ensure_available()
            self._images = load_fashion_mnist(self.root)
        return self._images


class NoisePool(QueryPool):
    """Uniform noise images in [0, 1] of ``image_shape`` (the data's); image ``i`` of the shuffled pool is drawn
    from ``seed``.

    Only the ``n`` images taken are generated (``size`` bounds the budget).
    """

    name = "noise"

    def __init__(self, size: int = 100_000, image_shape: Sequence[int] = IMAGE_SHAPE):
        require_positive(size, "pools.noise.size")
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(is_integer(s) and s > 0 for s in shape):
            raise ConfigError(
                f"pools.noise.image_shape={list(shape)!r} is not allowed: it must be [channels, height, width]."
            )
        self._size, self._shape = int(size), tuple(int(s) for s in shape)

    @property
    def size(self) -> int:
        return self._size

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self._shape

    def load(self) -> Tensor:
        return self.take(self._size)

    def take(self, n: int, seed: int = 0) -> Tensor:
        self.check_budget(n)
        return torch.rand(n, *self._shape, generator=torch.Generator().manual_seed(seed))
