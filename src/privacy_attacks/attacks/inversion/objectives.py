"""Objectives of output-based model inversion: the similarity ℓ(f(x), ỹ) between the target's output and a class.

Every similarity maps logits (N, K) and requested classes (N,) to a per-image loss (N,), lower is better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


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
        weight_noise: model augmentation: each forward pass sees the target with every weight w replaced by
            w · (1 + weight_noise · ε), ε ~ N(0, 1) drawn afresh per pass from the attacker's generator
            (:meth:`use_generator`), so the images must keep their class under a whole neighbourhood of the
            target, not under its exact weights only (the model augmentation of Nguyen et al., CVPR 2023, with
            perturbed weights in place of surrogates trained on public data). 0: the target itself.
        feature_dropout: model augmentation by dropout: each forward pass zeroes each output of every ``nn.Conv2d``
            and ``nn.Linear`` but the last with this probability (and scales the rest by 1 / (1 − p)), per image,
            drawn from the same generator (the dropout erosion of Ghost Networks, Li et al., AAAI 2020). 0: off.

    ``forward(images (R·N, C, H, W)) -> (R·N,)``: image ``r·N + i`` is scored against ``labels[i]``; it is
    ``head(network(images))``, so engines that share ``net`` can be fitted as one
    (:mod:`privacy_attacks.engine.stacked`; under model augmentation each engine draws its own networks and is
    fitted alone).
    """

    def __init__(
        self,
        net: nn.Module,
        labels: Tensor,
        similarity: nn.Module,
        image_shape: tuple[int, ...] = (1, 28, 28),
        weight_noise: float = 0.0,
        feature_dropout: float = 0.0,
    ):
        super().__init__()
        if weight_noise < 0:
            raise ValueError(f"weight_noise must be >= 0, got {weight_noise}.")
        if not 0 <= feature_dropout < 1:
            raise ValueError(f"feature_dropout must be in [0, 1), got {feature_dropout}.")
        self.net, self.similarity = net, similarity
        self.image_shape = tuple(int(s) for s in image_shape)  # the engine's image shape
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long))
        self.num_images = len(self.labels)
        self.weight_noise, self.feature_dropout = float(weight_noise), float(feature_dropout)
        self.generator: torch.Generator | None = None

    def use_generator(self, generator: torch.Generator) -> None:
        """Draw the weight noise and dropout masks from ``generator`` (the engine's, from the attack seed)."""
        self.generator = generator

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.network(images))

    @property
    def augmented(self) -> bool:
        """Whether each pass sees a network of its own draw (weight noise or feature dropout)."""
        return self.weight_noise > 0 or self.feature_dropout > 0

    @property
    def stack_key(self) -> tuple:
        """Equal for objectives whose :meth:`network` is the same function (the same frozen net; never equal for
        two model-augmented objectives, whose networks are their own draws)."""
        return ("augmented logits", id(self)) if self.augmented else ("logits", id(self.net))

    def network(self, images: Tensor) -> Tensor:
        """The frozen net's logits (R·N, K) of ``images`` (R·N, C, H, W), under a fresh draw if model-augmented."""
        if not self.augmented:
            return self.net(images)
        if self.generator is None:
            raise RuntimeError("ClassInversion draws its networks from its own generator: call use_generator() first.")
        weights = dict(self.net.named_parameters())
        if self.weight_noise > 0:
            weights = {name: w * (1 + self.weight_noise * self._noise(w.shape, w)) for name, w in weights.items()}
        hooks = []
        if self.feature_dropout > 0:
            layers = [m for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
            hooks = [layer.register_forward_hook(self._dropout) for layer in layers]
        try:
            return functional_call(self.net, weights, (images,))
        finally:
            for hook in hooks:
                hook.remove()

    def _noise(self, shape: torch.Size, like: Tensor) -> Tensor:
        """N(0, 1) of ``shape`` from the attacker's generator, on ``like``'s device and dtype."""
        return torch.randn(shape, generator=self.generator, dtype=like.dtype).to(like.device)

    def _dropout(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        """Forward hook: ``output`` with each element kept with probability 1 − p and scaled by 1 / (1 − p)."""
        keep = torch.rand(output.shape, generator=self.generator, dtype=output.dtype).to(output.device)
        return output * (keep >= self.feature_dropout) / (1 - self.feature_dropout)

    def head(self, logits: Tensor) -> Tensor:
        """The per-image loss (R·N,) of the network's logits (R·N, K) of restart-major images."""
        return self.similarity(logits, self.labels.repeat(len(logits) // self.num_images))
