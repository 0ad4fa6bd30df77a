"""Fashion-MNIST images (Xiao et al. 2017) read from their IDX files: natural out-of-distribution images.

The files are found directly under ``root`` (as the Debian package ``dataset-fashion-mnist`` installs
them, in ``/usr/share/datasets/fashion-mnist``) or in torchvision's ``FashionMNIST/raw/`` layout.
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import Tensor

from privacy_attacks.data.idx import read_idx_images

FASHION_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
FASHION_SIZE = 70_000  # 60,000 training then 10,000 test images


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
