"""Pieces shared by the models: the input check, the normalisation layers, the base of named-block networks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from privacy_attacks.errors import ConfigError, is_integer, require_choice

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Normalisation layers inside a network: batch norm (Opacus cannot train it under DP-SGD), group norm (per example,
# so DP-SGD can), or none.
NORMS = ("batch", "group", "none")
GROUPS = 16  # group norm: this many groups, or the largest divisor of the channels below it


class Normalize(nn.Module):
    """Maps [0, 1] pixels to zero-mean unit-variance inputs: (x - mean) / std, shapes unchanged.

    ``mean`` and ``std`` are numbers (every channel alike: MNIST's by default) or sequences of one number per channel
    (kept as buffers outside the state dict, so they move with the module and cost no weights).
    """

    def __init__(self, mean: float | Sequence[float] = MNIST_MEAN, std: float | Sequence[float] = MNIST_STD):
        super().__init__()
        if len(_floats(mean)) == 1 and len(_floats(std)) == 1:  # one number for every channel: the scalar path
            self.mean, self.std = _floats(mean)[0], _floats(std)[0]
        else:
            self.register_buffer("mean", torch.tensor(_floats(mean)).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_floats(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _floats(value: float | Sequence[float]) -> list[float]:
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


class NamedBlocks(nn.Module):
    """Base of the classifiers whose intermediate features attacks read: ``normalize`` (a module), then the blocks
    named in ``LAYERS``, in order, the last giving the logits. :meth:`features` returns every block's output."""

    LAYERS: tuple[str, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        h = self.normalize(x)
        for name in self.LAYERS:
            h = getattr(self, name)(h)
        return h

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Every named block's output for ``x``: {layer name: activation}, in forward order."""
        out, h = {}, self.normalize(x)
        for name in self.LAYERS:
            h = getattr(self, name)(h)
            out[name] = h
        return out


def image_shape_of(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``image_shape`` as (C, H, W) integers; :class:`ConfigError` unless it is three positive integers."""
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(is_integer(s) and s > 0 for s in shape):
        raise ConfigError(f"image_shape={list(shape)!r} is not allowed: it must be [channels, height, width].")
    return shape  # type: ignore[return-value]


def input_normalize(mean: float | Sequence[float] | None, std: float | Sequence[float] | None) -> nn.Module:
    """(x - mean) / std per channel (:class:`Normalize`); the identity without them."""
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


def load_stacked(net: nn.Module, stacked: Mapping[str, Tensor], index: int, assign: bool = False) -> nn.Module:
    """Put model ``index`` of weights stacked by :func:`torch.func.stack_module_state` (name -> (S, ...)) into ``net``
    and return it: the state dict's entries through ``load_state_dict`` (``assign``: take the tensors as they are, for
    a template on the meta device), the buffers kept outside the state dict (:class:`Normalize`'s per-channel mean
    and std) set in place, as ``stack_module_state`` returns those too."""
    persistent = set(net.state_dict())
    chosen = {name: value[index].detach().clone() for name, value in stacked.items()}
    net.load_state_dict({name: value for name, value in chosen.items() if name in persistent}, assign=assign)
    for name, value in chosen.items():
        if name not in persistent:
            owner, _, attribute = name.rpartition(".")
            setattr(net.get_submodule(owner), attribute, value)  # a buffer of that name: replaced in place
    return net
