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
    """The mean training image of the data (a *stronger attacker* who knows the data distribution's mean).

    Read on first use from ``source`` (an :class:`~privacy_attacks.data.source.ImageSource`, the data config's
    ``source``), or for MNIST's config from ``root`` (torchvision's layout); ``noise`` adds Gaussian noise of that
    standard deviation so restarts differ.
    """

    def __init__(self, root: str | None = None, download: bool = False, noise: float = 0.05, source: Any = None):
        self.root, self.download, self.noise, self.source = root, download, noise, source
        self._mean: Tensor | None = None

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if self._mean is None:
            if self.source is not None:
                images = self.source.load().train_images
            else:
                from privacy_attacks.data.mnist import load_mnist

                images, _ = load_mnist(self.root, train=True, download=self.download)
            self._mean = images.mean(dim=0)
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
