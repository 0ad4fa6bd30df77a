"""Translations of images: the augmented queries of the label-only attack (Choquette-Choo et al. 2021) and of
LiRA's query augmentations (Carlini et al. 2022)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def translations(max_shift: int) -> list[tuple[int, int]]:
    """The shifts (i, j) with |i| + |j| <= ``max_shift``, the identity first."""
    shifts = [(i, j) for i in range(-max_shift, max_shift + 1) for j in range(-max_shift, max_shift + 1)]
    return sorted((s for s in shifts if abs(s[0]) + abs(s[1]) <= max_shift), key=lambda s: (abs(s[0]) + abs(s[1]), s))


def translate(images: Tensor, shift: tuple[int, int]) -> Tensor:
    """``images`` (N, C, H, W) moved by ``shift`` = (rows, columns) pixels, the uncovered border zero."""
    i, j = shift
    if i == j == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (abs(j), abs(j), abs(i), abs(i)))
    top, left = abs(i) - i, abs(j) - j
    return padded[..., top : top + height, left : left + width]
