"""Feature-matching objective for the reconstruction engine (Mahendran & Vedaldi 2015, "Understanding
Deep Image Representations by Inverting Them").

The attacker holds the target's activations Φ_l(x₀) at one layer for each private image x₀ and
minimises ‖Φ_l(x) − Φ_l(x₀)‖² / ‖Φ_l(x₀)‖² (+ the engine's TV prior).
"""

from __future__ import annotations

from torch import Tensor, nn


class FeatureMatching(nn.Module):
    """Objective ``images (N, 1, 28, 28) -> per-image loss (N,)``: normalised feature distance at ``layer``.

    The R·B images are restart-major: image r·B + i reconstructs private image i (B = ``num_images``).

    Args:
        model: a frozen network with ``features(x) -> {layer: activation}`` (LeNet5).
        layer: the layer the attacker observes (one of ``model.LAYERS``).
        target_features: Φ_l(x₀), (B, ...).
    """

    def __init__(self, model: nn.Module, layer: str, target_features: Tensor):
        super().__init__()
        self.model, self.layer = model, layer
        self.num_images = len(target_features)  # the engine's N
        self.register_buffer("target_features", target_features.detach().clone())
        self.register_buffer("target_energy", target_features.detach().flatten(1).pow(2).sum(1).clamp_min(1e-12))

    def forward(self, images: Tensor) -> Tensor:
        features = self.model.features(images)[self.layer].flatten(1)
        restarts = len(images) // self.num_images
        target = self.target_features.flatten(1).repeat(restarts, 1)
        return (features - target).pow(2).sum(1) / self.target_energy.repeat(restarts)
