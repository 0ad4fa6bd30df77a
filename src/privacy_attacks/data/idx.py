"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.): image files as uint8 tensors, label files as long."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from privacy_attacks.errors import DataUnavailableError


def read_idx_images(path: Path) -> Tensor:
    """An IDX image file (optionally ``.gz``) as uint8 (N, 1, rows, cols)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">i4")
    if magic != 2051:
        raise DataUnavailableError(f"{path} is not an IDX image file (magic number {magic}, expected 2051).")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16, count=count * rows * cols)
    return torch.from_numpy(pixels.copy()).view(int(count), 1, int(rows), int(cols))


def read_idx_labels(path: Path) -> Tensor:
    """An IDX label file (optionally ``.gz``) as long (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic, count = np.frombuffer(data[:8], dtype=">i4")
    if magic != 2049:
        raise DataUnavailableError(f"{path} is not an IDX label file (magic number {magic}, expected 2049).")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8, count=count)
    return torch.from_numpy(labels.astype(np.int64))
