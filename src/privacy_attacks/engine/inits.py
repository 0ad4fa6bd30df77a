"""Initialisations of the reconstructed images: ``init(shape, generator) -> Tensor`` in [0, 1].

``shape`` is (N, C, H, W); ``generator`` is a seeded ``torch.Generator`` (CPU) so restarts
and runs are reproducible. The engine moves the result to its device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class NoiseInit:
    """Gaussian noise N(``mean``, ``std``²), clamped to [0, 1]."""

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        self.mean, self.std = mean, std

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return (self.mean + self.std * torch.randn(shape, generator=generator)).clamp_(0, 1)


class UniformInit:
    """Uniform noise U(0, 1)."""

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.rand(shape, generator=generator)


class ConstantInit:
    """Every pixel ``value`` (``zeros``: 0, ``constant``: 0.5); restarts then differ only by jitter."""

    def __init__(self, value: float = 0.5):
        self.value = value

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.full(shape, float(self.value))


class MeanImageInit:
    """The mean image of the attacker's own training pool (a *stronger attacker* who knows the data's mean image).

    ``data`` is the run's data config; the mean is over
    :func:`~privacy_attacks.data.identity.attacker_training_images` (the training images outside the validation
    split), read on first use, so that neither of gradient and feature inversion's private sets (``report``: test
    images; ``tune``: the validation split) takes part in the start; output inversion's private images, the target's
    training images, are among those averaged (the stronger attacker knows the data's mean image). ``noise`` adds
    Gaussian noise of that standard deviation so restarts differ.
    """

    def __init__(self, data: Any = None, noise: float = 0.05):
        self.data, self.noise = data, noise
        self._mean: Tensor | None = None

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if self._mean is None:
            from privacy_attacks.data.identity import attacker_training_images

            if self.data is None:
                raise ValueError("MeanImageInit needs the data config: build it with data=cfg.data.")
            self._mean = attacker_training_images(self.data).float().mean(dim=0)
        noise = self.noise * torch.randn(shape, generator=generator)
        return (self._mean.expand(shape) + noise).clamp_(0, 1)


class GuessInit:
    """Start from a guess of each target image (B, C, H, W), e.g. a learned inversion network's output,
    plus Gaussian noise of std ``noise`` so restarts differ; restart-major like the engine's images."""

    def __init__(self, guess: Tensor | None = None, noise: float = 0.0):
        self.guess, self.noise = guess, noise

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if self.guess is None:
            raise ValueError("GuessInit needs a guess: build it with guess=(B, C, H, W) images.")
        guess = self.guess.detach().cpu().repeat(shape[0] // len(self.guess), 1, 1, 1)
        return (guess + self.noise * torch.randn(shape, generator=generator)).clamp_(0, 1)
