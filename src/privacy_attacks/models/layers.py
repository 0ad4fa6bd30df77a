"""Pieces shared by the shape-aware models: the input check, the normalisation layer, the norm layer choice."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from privacy_attacks.errors import ConfigError, is_integer, require_choice
from privacy_attacks.models.lenet5 import Normalize

# Normalisation layers inside a network: batch norm (Opacus cannot train it under DP-SGD), group norm (per example,
# so DP-SGD can), or none.
NORMS = ("batch", "group", "none")
GROUPS = 16  # group norm: this many groups, or the largest divisor of the channels below it


def image_shape_of(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``image_shape`` as (C, H, W) integers; :class:`ConfigError` unless it is three positive integers."""
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(is_integer(s) and s > 0 for s in shape):
        raise ConfigError(f"image_shape={list(shape)!r} is not allowed: it must be [channels, height, width].")
    return shape  # type: ignore[return-value]


def input_normalize(mean: float | Sequence[float] | None, std: float | Sequence[float] | None) -> nn.Module:
    """(x - mean) / std per channel (:class:`~privacy_attacks.models.lenet5.Normalize`); the identity without them."""
    if mean is None or std is None:
        return nn.Identity()
    return Normalize(mean, std)


def norm2d(kind: str, channels: int) -> nn.Module:
    """The normalisation layer ``kind`` (one of :data:`NORMS`) over ``channels`` feature maps."""
    require_choice(kind, NORMS, "norm")
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, GROUPS), channels)
    return nn.Identity()
