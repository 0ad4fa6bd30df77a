"""Label-only membership inference by data augmentation (Choquette-Choo, Tramèr, Carlini & Papernot 2021,
"Label-only membership inference attacks", ICML; its "data augmentation" attack).

The attacker sees the target's predicted label only. It queries each image x of label y in K augmented copies:
the translations by (i, j) pixels with |i| + |j| <= ``max_shift`` (the paper's d; the untranslated image among them)
and ``noise_copies`` copies with Gaussian noise of standard deviation ``noise_std`` added to the pixels. A model is
more robust on what it was trained on, so members keep their label in more copies: the score is the fraction of the
K copies the target labels y. The hard decision's threshold is calibrated on the attacker's own non-members (as the
threshold attacks' is): the (1 - ``reference_fpr``) quantile of their scores; AUC and TPR at FPR need none.
Every copy is one query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.seeding import derive_seed

from .base import AttackContext, AttackOutput, MembershipAttack


def translations(max_shift: int) -> list[tuple[int, int]]:
    """The shifts (i, j) with |i| + |j| <= ``max_shift``, the identity first."""
    shifts = [(i, j) for i in range(-max_shift, max_shift + 1) for j in range(-max_shift, max_shift + 1)]
    return sorted((s for s in shifts if abs(s[0]) + abs(s[1]) <= max_shift), key=lambda s: (abs(s[0]) + abs(s[1]), s))


def translate(images: Tensor, shift: tuple[int, int]) -> Tensor:
    """``images`` (N, C, H, W) moved by ``shift`` = (rows, columns) pixels, the uncovered border zero."""
    i, j = shift
    if i == j == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (abs(j), abs(j), abs(i), abs(i)))
    top, left = abs(i) - i, abs(j) - j
    return padded[..., top : top + height, left : left + width]


class LabelOnlyAugmentAttack(MembershipAttack):
    """The fraction of augmented copies of each image that the target labels correctly (label-only; see the module).

    Args:
        max_shift: translations by up to this many pixels in |i| + |j| (1: 5 copies, 2: 13).
        noise_copies: copies with Gaussian pixel noise besides the translations.
        noise_std: the noise's standard deviation, in pixel units ([0, 1] images).
        reference_size: the attacker's own images (non-members) the hard decision's threshold is calibrated on.
        reference_fpr: the fraction of those known non-members the threshold flags.
    """

    def __init__(
        self,
        max_shift: int = 1,
        noise_copies: int = 0,
        noise_std: float = 0.1,
        reference_size: int = 1000,
        reference_fpr: float = 0.5,
    ):
        require_int(max_shift, "methods.label_only_augment.max_shift", minimum=0)
        require_int(noise_copies, "methods.label_only_augment.noise_copies", minimum=0)
        require_positive(noise_std, "methods.label_only_augment.noise_std")
        require_int(reference_size, "methods.label_only_augment.reference_size")
        if not 0 < reference_fpr < 1:
            raise ConfigError(
                f"methods.label_only_augment.reference_fpr={reference_fpr!r} is not allowed: it must be in (0, 1)."
            )
        self.shifts = translations(max_shift)
        if len(self.shifts) + noise_copies < 2:
            raise ConfigError(
                "method=label_only_augment needs at least two copies of each image: set "
                "methods.label_only_augment.max_shift >= 1 or noise_copies >= 1."
            )
        self.noise_copies, self.noise_std = noise_copies, noise_std
        self.reference_size, self.reference_fpr = reference_size, reference_fpr

    @property
    def copies(self) -> int:
        """K: the queries per image."""
        return len(self.shifts) + self.noise_copies

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """The threshold needs some of the attacker's own images."""
        if attacker_size < 1:
            raise ConfigError("method=label_only_augment calibrates its threshold on the attacker's own images: none.")

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: K copies of each evaluation and calibration image."""
        return self.copies * (eval_size + min(self.reference_size, attacker_size))

    def augmented(self, images: Tensor, seed: int) -> Tensor:
        """(K, N, C, H, W): the translations, then the noisy copies (noise from ``seed``)."""
        copies = [translate(images, shift) for shift in self.shifts]
        if self.noise_copies:
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn((self.noise_copies, *images.shape), generator=generator, dtype=images.dtype)
            copies += list(images.unsqueeze(0) + self.noise_std * noise)
        return torch.stack(copies)

    def scores(self, context: AttackContext, images: Tensor, labels: Tensor, role: str) -> Tensor:
        """(N,) float64: the fraction of each image's K copies the target labels correctly."""
        copies = self.augmented(images, derive_seed(context.seed, "label_only_augment", role) % 2**63)
        predicted = context.query_log_probs(copies.flatten(0, 1)).argmax(dim=1).view(self.copies, len(labels))
        return (predicted == labels.unsqueeze(0)).double().mean(dim=0)

    def __call__(self, context: AttackContext) -> AttackOutput:
        eval_scores = self.scores(context, context.eval_images, context.eval_labels, "eval")
        n = min(self.reference_size, len(context.attacker_labels))
        reference = self.scores(context, context.attacker_images[:n], context.attacker_labels[:n], "reference")
        threshold = torch.quantile(reference, 1 - self.reference_fpr)
        info = {"attack/threshold": float(threshold), "attack/copies": float(self.copies)}
        return AttackOutput(eval_scores, (eval_scores > threshold).long(), info)
