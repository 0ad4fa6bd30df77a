"""Objectives of output-based model inversion: the similarity ℓ(f(x), ỹ) between the target's output and a class.

Every similarity maps logits (N, K) and requested classes (N,) to a per-image loss (N,), lower is better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropySimilarity(nn.Module):
    """``ce``: cross-entropy −log p_ỹ(x), the lecture's ℓ(f(x), ỹ)."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="none")


class ProbabilitySimilarity(nn.Module):
    """``prob``: 1 − p_ỹ(x), the cost of MI-Face (Fredrikson, Jha & Ristenpart, CCS 2015)."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return 1 - logits.softmax(dim=-1).gather(1, labels[:, None]).squeeze(1)


class LogitSimilarity(nn.Module):
    """``logit``: −z_ỹ(x), the raw class score (Simonyan et al. 2014, class-model visualisation)."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return -logits.gather(1, labels[:, None]).squeeze(1)


class MarginSimilarity(nn.Module):
    """``margin``: max(max_{j≠ỹ} z_j − z_ỹ, −κ) (Carlini & Wagner, S&P 2017, objective f6)."""

    def __init__(self, kappa: float = 10.0):
        super().__init__()
        self.kappa = kappa

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        requested = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, logits.shape[-1]).bool(), float("-inf")).amax(dim=-1)
        return (others - requested).clamp_min(-self.kappa)


class MSESimilarity(nn.Module):
    """``mse``: ‖softmax(z) − onehot(ỹ)‖² summed over classes."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return (logits.softmax(dim=-1) - F.one_hot(labels, logits.shape[-1]).to(logits)).pow(2).sum(dim=-1)


class ClassInversion(nn.Module):
    """Output-based inversion objective: ``similarity(net(x), ỹ)`` per image (Fredrikson et al. 2015).

    Args:
        net: the frozen target, (N, C, H, W) in [0, 1] -> logits (N, K).
        labels: the N requested classes ỹ (long), one reconstruction each.
        similarity: one of the similarities above.
        image_shape: (C, H, W) of the target's inputs (MNIST's by default).

    ``forward(images (R·N, C, H, W)) -> (R·N,)``: image ``r·N + i`` is scored against ``labels[i]``; it is
    ``head(network(images))``, so engines that share ``net`` can be fitted as one
    (:mod:`privacy_attacks.engine.stacked`).
    """

    def __init__(
        self, net: nn.Module, labels: Tensor, similarity: nn.Module, image_shape: tuple[int, ...] = (1, 28, 28)
    ):
        super().__init__()
        self.net, self.similarity = net, similarity
        self.image_shape = tuple(int(s) for s in image_shape)  # the engine's image shape
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long))
        self.num_images = len(self.labels)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.network(images))

    @property
    def stack_key(self) -> tuple:
        """Equal for objectives whose :meth:`network` is the same function (the same frozen net)."""
        return ("logits", id(self.net))

    def network(self, images: Tensor) -> Tensor:
        """The frozen net's logits (R·N, K) of ``images`` (R·N, C, H, W)."""
        return self.net(images)

    def head(self, logits: Tensor) -> Tensor:
        """The per-image loss (R·N,) of the network's logits (R·N, K) of restart-major images."""
        return self.similarity(logits, self.labels.repeat(len(logits) // self.num_images))
