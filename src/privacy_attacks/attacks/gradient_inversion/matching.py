"""Gradient-matching objectives for the reconstruction engine (DLG, iDLG, Inverting Gradients).

The attacker holds the shared model and a client's gradient g* = ∇_θ L(f_θ(x*), y*). It optimises
dummy images x (and, for DLG, dummy soft labels) so that the dummy gradient ∇_θ L(f_θ(x), y) matches:

- DLG (Zhu, Liu & Han 2019, "Deep Leakage from Gradients"): squared L2 distance Σ_l ‖g_l − g*_l‖²,
  labels optimised jointly as soft labels softmax(ŷ);
- iDLG (Zhao, Mopuri & Bilen 2020): the same distance with the label recovered analytically;
- IG (Geiping, Bauermeister, Dröge & Moeller 2020, "Inverting Gradients"): cosine distance
  1 − ⟨g, g*⟩ / (‖g‖ ‖g*‖) over all parameters, plus a TV prior (added by the engine).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.attacks.gradient_inversion.client import model_loss
from privacy_attacks.seeding import generator

log = logging.getLogger(__name__)


class SquaredL2Distance(nn.Module):
    """DLG's distance between two gradients (lists of tensors): Σ_l ‖g_l − g*_l‖² (scalar)."""

    def forward(self, gradient: list[Tensor], target: list[Tensor]) -> Tensor:
        return sum((g - t).pow(2).sum() for g, t in zip(gradient, target, strict=True))


class CosineDistance(nn.Module):
    """IG's distance: 1 − ⟨g, g*⟩ / (‖g‖ ‖g*‖), all parameters flattened into one vector (scalar)."""

    def forward(self, gradient: list[Tensor], target: list[Tensor]) -> Tensor:
        dot = sum((g * t).sum() for g, t in zip(gradient, target, strict=True))
        norm = sum(g.pow(2).sum() for g in gradient).sqrt() * sum(t.pow(2).sum() for t in target).sqrt()
        return 1 - dot / norm.clamp_min(1e-12)


def soft_cross_entropy(logits: Tensor, soft_labels: Tensor) -> Tensor:
    """DLG's loss with soft labels: mean_i Σ_c −softmax(ŷ)_ic · log softmax(z)_ic; ``soft_labels`` are logits ŷ."""
    return -(F.softmax(soft_labels, dim=-1) * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class GradientMatching(nn.Module):
    """Objective ``images -> per-image loss (N,)``: the distance of the dummy batch's gradient to the shared one.

    The N = restarts × B images are read as ``restarts`` independent dummy batches of B images
    (restart-major: image r·B + i is image i of restart r). Each batch's gradient distance d_r is
    given to each of its images as d_r / B, so the per-image losses sum to Σ_r d_r.

    Args:
        model: the shared model (frozen; its weights are differentiated through leaf copies, never changed).
        target_gradient: the client's gradient, one tensor per parameter (``named_parameters`` order).
        batch_size: B, the client's batch size.
        distance: :class:`SquaredL2Distance` (DLG, iDLG) or :class:`CosineDistance` (IG).
        labels: (B,) long labels (recovered analytically), or None for DLG's trainable soft labels.
        restarts: number of independent dummy batches optimised together.
        num_classes: C, the size of the soft labels when ``labels`` is None.
        seed: the attacker's seed for this client; DLG's initial soft labels are drawn from
            :func:`~privacy_attacks.seeding.generator` ``(seed, "labels")``, never from the global RNG.
        image_shape: (C, H, W) of the client's images, the engine's dummy images' shape (MNIST's by default).
    """

    def __init__(
        self,
        model: nn.Module,
        target_gradient: list[Tensor],
        batch_size: int,
        distance: nn.Module,
        labels: Tensor | None = None,
        restarts: int = 1,
        num_classes: int = 10,
        seed: int = 0,
        image_shape: tuple[int, ...] = (1, 28, 28),
    ):
        super().__init__()
        self.model, self.distance = model, distance
        self.image_shape = tuple(int(s) for s in image_shape)  # the engine's image shape
        self.batch_size, self.restarts = int(batch_size), int(restarts)
        self.num_images = self.batch_size  # the engine's N
        self._stacked = True  # the restarts matched in one vmapped call (False after vmap refused the model)
        self.target_names = []
        for index, tensor in enumerate(target_gradient):
            self.register_buffer(f"target_{index}", tensor.detach().clone())
            self.target_names.append(f"target_{index}")
        if labels is None:
            # DLG: dummy labels ŷ ~ N(0, 1), optimised with the images.
            shape = (self.restarts, self.batch_size, num_classes)
            self.soft_labels = nn.Parameter(torch.randn(shape, generator=generator(seed, "labels")))
            self.register_buffer("labels", None)
        else:
            self.soft_labels = None
            self.register_buffer("labels", labels.detach().clone().long())

    @property
    def target_gradient(self) -> list[Tensor]:
        return [getattr(self, name) for name in self.target_names]

    def forward(self, images: Tensor) -> Tensor:
        distances = self._distances(images)
        return (distances / self.batch_size).repeat_interleave(self.batch_size)

    def _distances(self, images: Tensor) -> Tensor:
        """Gradient distance of each restart's dummy batch: (restarts,). Several restarts are one vectorised call
        (:func:`torch.func.vmap`), not a loop: on a small model a step of four costs about twice one's."""
        batches = images.view(self.restarts, self.batch_size, *images.shape[1:])
        if self.restarts == 1:
            soft_labels = None if self.soft_labels is None else self.soft_labels[0]
            return self._distance(batches[0], soft_labels).unsqueeze(0)
        if self._stacked:
            try:
                if self.soft_labels is None:
                    return torch.func.vmap(lambda batch: self._distance(batch, None))(batches)
                return torch.func.vmap(self._distance)(batches, self.soft_labels)
            except RuntimeError as error:  # a model vmap cannot run (it branches on its tensors' values): one by one
                if "vmap" not in str(error):
                    raise
                self._stacked = False
                log.info("The restarts are matched one by one: %s.", str(error).split("\n")[0].split(". ")[0])
        labels = [None] * self.restarts if self.soft_labels is None else self.soft_labels
        return torch.stack([self._distance(batch, label) for batch, label in zip(batches, labels, strict=True)])

    def _distance(self, batch: Tensor, soft_labels: Tensor | None) -> Tensor:
        """Distance of one dummy batch's gradient to the target (scalar): ``batch`` (B, C, H, W), ``soft_labels``
        (B, C) logits for DLG or None for the recovered labels. :func:`torch.func.grad` keeps the gradient
        differentiable with respect to ``batch`` (and the soft labels) for the outer optimisation, and computes it
        under an outer ``torch.no_grad()`` too (where the engine only scores, and no outer graph is built)."""
        labels, loss = (self.labels, F.cross_entropy) if soft_labels is None else (soft_labels, soft_cross_entropy)
        params = {name: p.detach() for name, p in self.model.named_parameters()}
        gradient = torch.func.grad(lambda p: model_loss(self.model, p, batch, labels, loss))(params)
        return self.distance(list(gradient.values()), self.target_gradient)

    def predicted_labels(self) -> Tensor:
        """Labels of the dummy images, (restarts · B,): the recovered ones, or argmax of DLG's soft labels."""
        if self.soft_labels is None:
            return self.labels.repeat(self.restarts)
        return self.soft_labels.detach().argmax(dim=-1).flatten()


def inverting_gradients_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.MultiStepLR:
    """Geiping et al.'s step-size schedule: × 0.1 after 3/8, 5/8 and 7/8 of the ``steps``."""
    milestones = sorted({max(1, int(steps * fraction)) for fraction in (3 / 8, 5 / 8, 7 / 8)})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
