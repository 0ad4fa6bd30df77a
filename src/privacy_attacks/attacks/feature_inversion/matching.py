"""Feature-matching objective for the reconstruction engine (Mahendran & Vedaldi 2015, "Understanding
Deep Image Representations by Inverting Them").

The attacker holds the target's activations Φ_l(x₀) at one layer for each private image x₀ and
minimises ‖Φ_l(x) − Φ_l(x₀)‖² / ‖Φ_l(x₀)‖² (+ the engine's TV prior).
"""

from __future__ import annotations

from torch import Tensor, nn

from privacy_attacks.models.taps import layer_output


class FeatureMatching(nn.Module):
    """Objective ``images (N, C, H, W) -> per-image loss (N,)``: normalised feature distance at ``layer``.

    The R·B images are restart-major: image r·B + i reconstructs private image i (B = ``num_images``).

    Args:
        model: the frozen target.
        layer: the layer the attacker observes: a named block or a module path
            (:func:`~privacy_attacks.models.taps.layer_output`).
        target_features: Φ_l(x₀), (B, ...).
        image_shape: (C, H, W) of the private images (MNIST's by default).
    """

    def __init__(
        self, model: nn.Module, layer: str, target_features: Tensor, image_shape: tuple[int, ...] = (1, 28, 28)
    ):
        super().__init__()
        self.model, self.layer = model, layer
        self.image_shape = tuple(int(s) for s in image_shape)  # the engine's image shape
        self.num_images = len(target_features)  # the engine's N
        self.register_buffer("target_features", target_features.detach().clone())
        self.register_buffer("target_energy", target_features.detach().flatten(1).pow(2).sum(1).clamp_min(1e-12))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.network(images))

    @property
    def stack_key(self) -> tuple:
        """Equal for objectives whose :meth:`network` is the same function (one model, one layer): engines that
        share it can be fitted as one (:mod:`privacy_attacks.engine.stacked`)."""
        return ("layer", id(self.model), self.layer)

    def network(self, images: Tensor) -> Tensor:
        """The frozen model's activations at ``layer`` of ``images`` (R·B, C, H, W)."""
        return layer_output(self.model, self.layer, images)

    def head(self, features: Tensor) -> Tensor:
        """The per-image normalised distance (R·B,) of restart-major ``features`` to the observed ones."""
        features = features.flatten(1)
        restarts = len(features) // self.num_images
        target = self.target_features.flatten(1).repeat(restarts, 1)
        return (features - target).pow(2).sum(1) / self.target_energy.repeat(restarts)
