"""Query data: the unlabeled images a model-stealing attacker holds and sends to the API.

A pool knows its ``size`` without loading anything (so a budget can be checked before any work)
and hands out the first ``n`` images of a seeded shuffle (:meth:`QueryPool.take`), each once.

Splits of MNIST (documented in docs and README.md, "Model stealing"):

- evaluation sets (:func:`evaluation_split`), never in any pool: ``report`` is the official MNIST
  test images 0-4,999, where reported numbers are measured; ``tune`` is the validation split of the
  training images (``data.val_size`` images drawn by ``data.split_seed``), where settings are chosen;
- ``mnist`` pool (:class:`MNISTPool`): the training images outside the validation split plus the
  test images 5,000-9,999 (60,000 digits with the default split): the attacker's own unlabeled
  digits, part of which the target was trained on, as for any public-data stealing attack;
- ``fashion_mnist`` pool (:class:`FashionMNISTPool`): the 70,000 Fashion-MNIST images
  (Xiao et al. 2017), natural out-of-distribution images;
- ``noise`` pool (:class:`NoisePool`): uniform noise in [0, 1], ``size`` images, drawn by seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from privacy_attacks.data import load_mnist
from privacy_attacks.data.fashion_mnist import (
    FASHION_SIZE,
    download_fashion_mnist,
    fashion_mnist_available,
    load_fashion_mnist,
)
from privacy_attacks.data.mnist import TRAIN_SIZE, split_training_indices
from privacy_attacks.errors import ConfigError, DataUnavailableError, is_integer, require_positive

EVALUATION_SIZE = 5000
MNIST_TEST_SIZE = 10_000


EVALUATION_SETS = ("report", "tune")


def evaluation_split(
    root: str | Path, download: bool = False, which: str = "report", val_size: int = 5000, split_seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The student's evaluation images ``(images (N, 1, 28, 28), labels (N,))``.

    ``which="report"``: MNIST test images 0-4,999 (reported numbers); ``"tune"``: the validation split
    of the training images (``val_size`` drawn by ``split_seed``; settings are chosen there).
    """
    if which not in EVALUATION_SETS:
        raise ConfigError(f"evaluation={which!r} is not one of the choices: {', '.join(EVALUATION_SETS)}.")
    if which == "tune":
        images, labels = load_mnist(root, train=True, download=download)
        index = split_training_indices(val_size, split_seed, total=len(labels))["val"]
        return images[index], labels[index]
    images, labels = load_mnist(root, train=False, download=download)
    return images[:EVALUATION_SIZE], labels[:EVALUATION_SIZE]


class QueryPool:
    """Base class: ``size`` images; :meth:`take` gives the first ``n`` of a seeded shuffle."""

    name = "base"

    @property
    def size(self) -> int:
        raise NotImplementedError

    def load(self) -> Tensor:
        """All ``size`` images, (size, 1, 28, 28) in [0, 1], in a fixed order."""
        raise NotImplementedError

    def take(self, n: int, seed: int = 0) -> Tensor:
        """The first ``n`` images of the pool shuffled by ``seed``: (n, 1, 28, 28) in [0, 1]."""
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


class MNISTPool(QueryPool):
    """The attacker's MNIST digits: the training images outside the validation split (``val_size``, drawn
    by ``split_seed``), then test images 5,000-9,999 (60,000 with the default split).

    Disjoint from both evaluation sets of :func:`evaluation_split`.
    """

    name = "mnist"

    def __init__(self, root: str = "data", download: bool = False, val_size: int = 5000, split_seed: int = 0):
        self.root, self.download, self.val_size, self.split_seed = root, download, int(val_size), int(split_seed)

    @property
    def size(self) -> int:
        return TRAIN_SIZE - self.val_size + MNIST_TEST_SIZE - EVALUATION_SIZE

    def load(self) -> Tensor:
        train, _ = load_mnist(self.root, train=True, download=self.download)
        test, _ = load_mnist(self.root, train=False, download=self.download)
        return torch.cat([train[self.sources()["train"]], test[EVALUATION_SIZE:]])

    def sources(self) -> dict[str, Tensor]:
        """Which indices of which MNIST file make up the pool, in the pool's order (for tests and docs)."""
        split = split_training_indices(self.val_size, self.split_seed)
        return {
            "train": torch.cat([split["train"], split["nonmember"]]).sort().values,
            "test": torch.arange(EVALUATION_SIZE, MNIST_TEST_SIZE),
        }


class FashionMNISTPool(QueryPool):
    """Fashion-MNIST's 70,000 images (train then test), out-of-distribution queries for an MNIST target.

    Args:
        root: a folder holding the IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``)
            directly, as the Debian package ``dataset-fashion-mnist`` installs them under
            ``/usr/share/datasets/fashion-mnist``, or in torchvision's ``FashionMNIST/raw/`` layout.
        download: download through torchvision into ``root`` when the files are missing (needs internet).
    """

    name = "fashion_mnist"

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
    """Uniform noise images in [0, 1]; image ``i`` of the shuffled pool is drawn from ``seed``.

    Only the ``n`` images taken are generated (``size`` bounds the budget).
    """

    name = "noise"

    def __init__(self, size: int = 100_000):
        require_positive(size, "pools.noise.size")
        self._size = int(size)

    @property
    def size(self) -> int:
        return self._size

    def load(self) -> Tensor:
        return self.take(self._size)

    def take(self, n: int, seed: int = 0) -> Tensor:
        self.check_budget(n)
        return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
