"""Defences of a federated client: it post-processes the gradient it shares (gradient inversion meets them).

Each takes the client's gradient, a list of tensors shaped like the model's parameters, and returns the list
it sends instead:

- :class:`GradientClipNoise`: DP-FedSGD style (McMahan et al. 2018, "Learning Differentially Private Recurrent
  Language Models"): the whole gradient clipped to L2 norm ``max_norm``, then Gaussian noise of standard
  deviation ``noise_multiplier · max_norm`` on every entry, from the client's own generator;
- :class:`GradientPrune`: the ``fraction`` of entries with the smallest magnitudes set to zero (Zhu et al. 2019);
- :class:`GradientQuantize`: each tensor rounded to ``2**bits − 1`` evenly spaced levels over
  [−max |g|, max |g|].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from privacy_attacks.errors import require_int, require_positive


class GradientDefense:
    """Base class: ``defense(gradient: list[Tensor]) -> list[Tensor]``, the gradient the client shares."""

    surface = "client"

    def __call__(self, gradient: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class GradientClipNoise(GradientDefense):
    """Clip the whole gradient to L2 norm ``max_norm``, add N(0, (``noise_multiplier`` · ``max_norm``)²) to each entry;
    ``seed`` seeds the client's generator (the attacker's seed never reaches it)."""

    def __init__(self, max_norm: float = 1.0, noise_multiplier: float = 0.01, seed: int = 0):
        require_positive(max_norm, "defense.max_norm")
        require_positive(noise_multiplier, "defense.noise_multiplier", allow_zero=True)
        self.max_norm, self.noise_multiplier, self.seed = float(max_norm), float(noise_multiplier), int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, gradient: list[Tensor]) -> list[Tensor]:
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in gradient)).item()
        scale = min(1.0, self.max_norm / norm) if norm > 0 else 1.0
        std = self.noise_multiplier * self.max_norm
        shared = []
        for g in gradient:
            noise = torch.randn(g.shape, generator=self._generator).to(g.device, g.dtype) * std
            shared.append(g * scale + noise)
        return shared


class GradientPrune(GradientDefense):
    """Zero the ``fraction`` (in [0, 1)) of all gradient entries with the smallest magnitudes: exactly
    ``floor(fraction · n)`` of the ``n`` entries, tied magnitudes taken in order of position."""

    def __init__(self, fraction: float = 0.5):
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
            from privacy_attacks.errors import ConfigError

            raise ConfigError(f"defense.fraction={fraction!r} is not allowed: it must be a number in [0, 1).")
        self.fraction = float(fraction)

    def __call__(self, gradient: list[Tensor]) -> list[Tensor]:
        flat = torch.cat([g.flatten() for g in gradient])
        count = math.floor(self.fraction * flat.numel())
        if count == 0:
            return [g.clone() for g in gradient]
        smallest = torch.argsort(flat.abs(), stable=True)[:count]
        pruned = flat.clone()
        pruned[smallest] = 0
        return [part.view_as(g) for part, g in zip(pruned.split([g.numel() for g in gradient]), gradient, strict=True)]


class GradientQuantize(GradientDefense):
    """Round each tensor to ``2**bits − 1`` evenly spaced levels over [−max |g|, max |g|] (``bits`` >= 2)."""

    def __init__(self, bits: int = 4):
        require_int(bits, "defense.bits", minimum=2)
        self.bits = int(bits)

    def __call__(self, gradient: list[Tensor]) -> list[Tensor]:
        steps = 2 ** (self.bits - 1) - 1  # levels on each side of 0
        shared = []
        for g in gradient:
            top = g.abs().max()
            if top == 0:
                shared.append(g.clone())
                continue
            shared.append(torch.round(g / top * steps) / steps * top)
        return shared
