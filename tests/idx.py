"""Write small MNIST-format (IDX) files (MNIST, Fashion-MNIST), so the data path is tested without the real data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch


def write_idx(path: Path, data: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (magic 0x0000080N, big-endian sizes)."""
    header = struct.pack(">I", 0x0800 + data.dim()) + b"".join(struct.pack(">I", s) for s in data.shape)
    path.write_bytes(header + data.to(torch.uint8).contiguous().numpy().tobytes())


def write_fake_mnist(root: Path, n_train: int = 600, n_test: int = 100, seed: int = 0) -> Path:
    """A fake MNIST under ``root/MNIST/raw``: random digits-sized images, labels cycling 0-9."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=generator))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    return root


def write_fake_fashion(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> Path:
    """Fashion-MNIST's four IDX files (``.gz`` as the Debian package has them) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, data in (
            ("images-idx3", torch.randint(0, 256, (n, 28, 28), generator=generator)),
            ("labels-idx1", torch.arange(n) % 10),
        ):
            path = folder / f"{prefix}-{kind}-ubyte"
            write_idx(path, data)
            if gz:
                Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
    return folder
