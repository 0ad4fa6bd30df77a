"""Fashion-MNIST (Xiao et al. 2017) read from its IDX files: a dataset of its own (``data=fashion_mnist``,
:class:`FashionMNISTSource`) and natural out-of-distribution images for an MNIST model (the stealing pool).

The files are found directly under ``root`` (as the Debian package ``dataset-fashion-mnist`` installs
them, in ``/usr/share/datasets/fashion-mnist``) or in torchvision's ``FashionMNIST/raw/`` layout.
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import Tensor

from privacy_attacks.data.idx import read_idx_images, read_idx_labels
from privacy_attacks.data.source import ImageSource, SourceData, fetch, uint8_to_pixels
from privacy_attacks.errors import DataUnavailableError

FASHION_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
FASHION_LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
FASHION_SIZE = 70_000  # 60,000 training then 10,000 test images
FASHION_TRAIN_SIZE = 60_000
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def find_idx(root: Path, name: str) -> Path | None:
    """The IDX file ``name`` (or ``name.gz``) under ``root`` or ``root/FashionMNIST/raw``; None if absent."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def fashion_mnist_available(root: Path) -> bool:
    """Whether both image files are under ``root``."""
    return all(find_idx(root, name) for name in FASHION_FILES)


def download_fashion_mnist(root: Path, timeout: float = 15) -> None:
    """Download both image files through torchvision into ``root`` (needs internet; raises on failure)."""
    from torchvision.datasets import FashionMNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def load_fashion_mnist(root: Path) -> Tensor:
    """All 70,000 images (training then test), float (70000, 1, 28, 28) in [0, 1]."""
    parts = [read_idx_images(find_idx(root, name)) for name in FASHION_FILES]
    return torch.cat(parts).float().div_(255.0)


class FashionMNISTSource(ImageSource):
    """Fashion-MNIST as a dataset: 60,000 training and 10,000 test images, (1, 28, 28), ten kinds of clothing.

    Args:
        root: a folder holding the four IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-...``) directly, as the Debian package ``dataset-fashion-mnist`` installs them, or in torchvision's
            ``FashionMNIST/raw/`` layout.
        download: download through torchvision into ``root`` when the files are missing (needs internet and a
            writable ``root``).
    """

    name = "fashion_mnist"
    train_size = FASHION_TRAIN_SIZE

    def __init__(self, root: str = "/usr/share/datasets/fashion-mnist", download: bool = False):
        self.root, self.download = Path(root).expanduser(), download

    def identity(self) -> tuple:
        return (str(self.root.resolve()),)

    def available(self) -> bool:
        """Whether the four files are under ``root``."""
        return all(find_idx(self.root, name) for name in (*FASHION_FILES, *FASHION_LABEL_FILES))

    def _missing(self, reason: str) -> str:
        return (
            f"Fashion-MNIST is not under {self.root} and {reason}. Install it with "
            "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), or point the "
            "project at a folder holding its four IDX files with the config value data.source.root=/path/to/folder "
            "or the environment variable FASHION_MNIST_ROOT=/path/to/folder, or run once with internet and "
            "data.source.download=true."
        )

    def read(self) -> SourceData:
        if not self.available():
            if not self.download:
                raise DataUnavailableError(self._missing("data.source.download is false"))
            fetch(lambda: download_fashion_mnist(self.root), self._missing, root=self.root)
        images = [uint8_to_pixels(read_idx_images(find_idx(self.root, name))) for name in FASHION_FILES]
        labels = [read_idx_labels(find_idx(self.root, name)) for name in FASHION_LABEL_FILES]
        return SourceData(images[0], labels[0], images[1], labels[1], CLASS_NAMES)
