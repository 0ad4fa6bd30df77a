"""The student learns from pool images it never queried: FixMatch consistency (Sohn et al. 2020, "FixMatch:
Simplifying Semi-Supervised Learning with Consistency and Confidence"), which Jagielski et al. 2020 ("High Accuracy and
High Fidelity Extraction of Neural Networks", Sec. 5) bring to model extraction: an attacker with few queries and many
unlabelled images of the task trains its student on both.

Each step draws ``ratio`` unlabelled images per queried one; the student's own answer on a weakly augmented view (a
random shift) is, where its top probability reaches ``threshold``, the target of a strongly augmented view (random
rotation, rescaling, translation and a cut-out square): its top-1 as a hard label (``target: hard``, FixMatch's), or
its whole distribution (``target: soft``, as UDA's consistency, Xie et al. 2020: a student distilled at a
temperature answers soft distributions, and its top probability rarely reaches FixMatch's 0.95). The unlabelled
loss is that cross-entropy over the whole unlabelled batch (the unconfident images count as zero), times
``weight``. Nothing unlabelled reaches the API: the images cost no query.

    consistency = FixMatch(images=20000, ratio=4, threshold=0.0, target="soft")
    loss = kl(student(x_queried), answers) + consistency.loss(student, unlabelled_batch, generator)[0]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.engine.priors import affine_warp
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive

from .distillation import random_shift

TARGETS = ("hard", "soft")


def strong_augment(
    x: Tensor, generator: torch.Generator, degrees: float, scale: float, translate: int, erase: int
) -> Tensor:
    """A strong view of each image of ``x`` (N, C, H, W): rotated by up to ``degrees``, rescaled by a factor in
    [1 − scale, 1 + scale], shifted by up to ``translate`` pixels each way (bilinear, black outside the image), then
    a ``erase`` × ``erase`` square at a random place set to 0 (cutout; DeVries & Taylor 2017). Draws from
    ``generator`` (on the CPU)."""
    n, _, h, w = x.shape
    draws = (2 * torch.rand(4, n, generator=generator, dtype=torch.float64) - 1).to(x.device)
    zoom = 1 / (1 + scale * draws[1])  # the sampling grid scaled by 1/s: the image scaled by s
    shift = torch.stack([draws[2] * (2 * translate / w), draws[3] * (2 * translate / h)])  # normalised coordinates
    views = affine_warp(x, draws[0] * math.radians(degrees), zoom, shift)
    if erase > 0:
        top = torch.randint(0, max(h - erase, 0) + 1, (n,), generator=generator).to(x.device)
        left = torch.randint(0, max(w - erase, 0) + 1, (n,), generator=generator).to(x.device)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + erase)  # (N, H)
        in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + erase)  # (N, W)
        views = views * ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])
    return views


class FixMatch:
    """FixMatch's unlabelled loss for a student (see the module docstring).

    Args:
        images: how many unlabelled pool images the attacker holds beside its queries (0: off).
        ratio: unlabelled images per queried image in a step (FixMatch's μ).
        threshold: the student's top probability on the weak view above which its answer is kept (τ).
        target: ``hard`` (the weak view's top-1) or ``soft`` (its distribution) as the strong view's target.
        weight: the unlabelled loss's weight (λ_u).
        weak_shift: the weak view's random shift, in pixels.
        degrees, scale, translate, erase: the strong view (:func:`strong_augment`).
    """

    def __init__(
        self,
        images: int = 0,
        ratio: int = 4,
        threshold: float = 0.0,
        weight: float = 1.0,
        weak_shift: int = 1,
        degrees: float = 20.0,
        scale: float = 0.15,
        translate: int = 3,
        erase: int = 8,
        target: str = "soft",
    ):
        require_choice(target, TARGETS, "student.unlabelled.target")
        for value, key in ((images, "images"), (weak_shift, "weak_shift"), (translate, "translate"), (erase, "erase")):
            require_int(value, f"student.unlabelled.{key}", minimum=0)
        require_int(ratio, "student.unlabelled.ratio")
        if not 0 <= float(threshold) < 1:
            raise ConfigError(f"student.unlabelled.threshold={threshold} is not allowed: it must be in [0, 1).")
        require_positive(weight, "student.unlabelled.weight", allow_zero=True)
        require_positive(degrees, "student.unlabelled.degrees", allow_zero=True)
        if not 0 <= float(scale) < 1:
            raise ConfigError(f"student.unlabelled.scale={scale} is not allowed: it must be in [0, 1).")
        self.images, self.ratio, self.threshold, self.weight = int(images), int(ratio), float(threshold), float(weight)
        self.weak_shift, self.degrees, self.scale = int(weak_shift), float(degrees), float(scale)
        self.translate, self.erase, self.target = int(translate), int(erase), target

    @property
    def active(self) -> bool:
        return self.images > 0 and self.weight > 0

    def batch(self, unlabelled: Tensor, labelled: int, generator: torch.Generator) -> Tensor:
        """``ratio`` × ``labelled`` images drawn from ``unlabelled`` (M, C, H, W), with replacement."""
        index = torch.randint(0, len(unlabelled), (self.ratio * labelled,), generator=generator)
        return unlabelled[index.to(unlabelled.device)]

    def loss(self, net: nn.Module, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The weighted unlabelled loss of ``net`` on the unlabelled batch ``x`` (U, C, H, W), and the share of it
        whose pseudo-label was kept."""
        with torch.no_grad():
            weak = net(random_shift(x, self.weak_shift, generator)).softmax(dim=-1)
        confidence, pseudo = weak.max(dim=-1)
        keep = (confidence >= self.threshold).to(x.dtype)
        strong = net(strong_augment(x, generator, self.degrees, self.scale, self.translate, self.erase))
        goal = pseudo if self.target == "hard" else weak
        loss = (F.cross_entropy(strong, goal, reduction="none") * keep).mean()
        return self.weight * loss, keep.mean()
