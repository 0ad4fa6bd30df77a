"""The likelihood-ratio attack (LiRA): Carlini, Chien, Nasr, Song, Terzis & Tramèr 2022,
"Membership inference attacks from first principles".

For each evaluation image (x, y) the attacker fits Gaussians to the logit-scaled confidence
phi = log(p_y / (1 - p_y)) of shadow models that trained on x (IN) and that did not (OUT), and
scores the target's phi(x):

- ``online``: log N(phi; mu_in, sigma_in^2) - log N(phi; mu_out, sigma_out^2), a likelihood
  ratio; shadow models train on random halves of the evaluation images (plus the attacker's own
  images to reach the target's training-set size), so every evaluation image has
  ``num_shadows / 2`` IN and as many OUT models. An evaluation set of more than twice the target's training-set
  size (thousands of non-members) gives each shadow model a random target-sized subset of it instead, every image
  IN for about ``num_shadows · train_size / N`` models (:func:`~.shadow_models.partition_in_masks`). The attack
  never sees membership labels;
- ``offline``: shadow models train on the attacker's own images only (all evaluation images are
  OUT), score Pr[Z < phi], Z ~ N(mu_out, sigma_out^2) (a one-sided test; reported as
  its z-score (phi - mu_out) / sigma_out, which ranks images the same);
- ``fixed_variance``: one sigma shared by all images (per IN/OUT), better with few shadow models; ``"auto"``, one
  below :data:`PER_IMAGE_VARIANCE_MODELS` (64) shadow models and one per image from there, as the paper advises;
- ``query_shift``: the paper's query augmentations (its Sec. 5.2: "the target model is queried on augmented
  versions of each example"): the target and every shadow model also answer the image translated by every shift
  (i, j) with |i| + |j| <= ``query_shift`` pixels (1: five copies, the identity first), a Gaussian pair is fitted
  for each copy, and the score is the mean over copies of each copy's score. Every copy is a query.

Member decisions: likelihood ratio > 1 (online), phi above the OUT mean (offline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, is_integer, require_int
from privacy_attacks.seeding import generator

from .augment import translate, translations
from .base import AttackContext, AttackOutput, MembershipAttack, config_key
from .scores import logit_confidence
from .shadow_models import (
    ShadowModels,
    balanced_in_masks,
    partition_in_masks,
    provision_shadow_models,
    subset_indices,
)
from .shokri import check_shadow_count, offline_shadow_models, shadow_seeds

# From this many shadow models on, fixed_variance="auto" fits one variance per image (Carlini et al. 2022 advise one
# variance for all images below 64 shadow models, per-image variances from there).
PER_IMAGE_VARIANCE_MODELS = 64


def resolve_fixed_variance(value: bool | str, num_shadows: int, key: str = "fixed_variance") -> bool:
    """Whether the Gaussians share one variance: ``value`` when it is a bool; ``"auto"``: below
    :data:`PER_IMAGE_VARIANCE_MODELS` shadow models. :class:`ConfigError` (naming ``key``) for anything else."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return not (is_integer(num_shadows) and num_shadows >= PER_IMAGE_VARIANCE_MODELS)
    raise ConfigError(
        f"{key}={value!r} is not allowed: it must be a boolean, true (one variance for all images) or false (one per "
        f"image), or auto (one for all below {PER_IMAGE_VARIANCE_MODELS} shadow models, one per image from there)."
    )


def gaussian_log_pdf(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x; mean, std^2), element-wise."""
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)


def masked_mean_std(values: Tensor, mask: Tensor, fixed_variance: bool) -> tuple[Tensor, Tensor]:
    """Per-column mean and std (N,) of values (S, N) over the rows where ``mask`` (S, N) is True;
    with ``fixed_variance`` one std of all the masked deviations, shared by every column."""
    weight = mask.double()
    count = weight.sum(dim=0).clamp_min(1)
    mean = (values * weight).sum(dim=0) / count
    squared = ((values - mean) ** 2) * weight
    if fixed_variance:
        std = (squared.sum() / weight.sum().clamp_min(1)).sqrt().expand_as(mean)
    else:
        std = (squared.sum(dim=0) / count).sqrt()
    return mean, std.clamp_min(1e-6)


def likelihood_ratio(target: Tensor, shadow: Tensor, in_mask: Tensor, fixed_variance: bool, online: bool) -> Tensor:
    """LiRA's score (N,) of a per-image statistic, the target's ``target`` (N,) against its shadow models' ``shadow``
    (S, N), of which ``in_mask`` (S, N) trained on each image: online, the likelihood ratio
    log N(target; IN) - log N(target; OUT) of Gaussians fitted to the IN and the OUT values; offline, the z-score
    (target - mu_out) / sigma_out (it orders images like log Pr[Z < target] without its underflow to 0 for large z).
    A member decision is a score above 0."""
    mean_out, std_out = masked_mean_std(shadow, ~in_mask, fixed_variance)
    if not online:
        return (target - mean_out) / std_out
    mean_in, std_in = masked_mean_std(shadow, in_mask, fixed_variance)
    return gaussian_log_pdf(target, mean_in, std_in) - gaussian_log_pdf(target, mean_out, std_out)


def calibration_shadows(context: AttackContext, num_shadows: int, online: bool) -> tuple[ShadowModels, Tensor]:
    """The shadow models of a LiRA-style calibration (:func:`online_shadow_models` or
    :func:`~.shokri.offline_shadow_models`) and which evaluation images each trained on, (S, N) bool (none
    offline)."""
    if online:
        shadows, n_eval = online_shadow_models(context, num_shadows)
        return shadows, shadows.in_mask[:, :n_eval]
    shadows = offline_shadow_models(context, num_shadows)
    return shadows, torch.zeros(len(shadows), len(context.eval_images), dtype=torch.bool)


def online_subsets(train_size: int, eval_size: int) -> bool:
    """True where online shadow models train on target-sized subsets of the evaluation images alone (an evaluation
    set of more than 2 x ``train_size`` images); False where they train on halves of it topped up with the
    attacker's own images."""
    return eval_size // 2 > train_size


def check_online_sizes(train_size: int, eval_size: int, attacker_size: int) -> None:
    """:class:`ConfigError` when online shadow models (half of the evaluation images each, topped up with the
    attacker's own images to ``train_size``) cannot be drawn: an odd evaluation set has no halves, and the top-up
    needs 2 x (train_size - eval_size / 2) of the attacker's images. An evaluation set of more than 2 x train_size
    images needs neither: each model trains on a train_size subset of it (:func:`online_subsets`)."""
    if online_subsets(train_size, eval_size):
        return
    if eval_size % 2:
        raise ConfigError(
            f"online LiRA and RMIA train each shadow model on exactly half of the evaluation images, and "
            f"{eval_size} (eval_members + eval_nonmembers) has no halves: make eval_members + eval_nonmembers even."
        )
    needed = 2 * (train_size - eval_size // 2)
    if attacker_size < needed:
        raise ConfigError(
            f"attacker_size={attacker_size} is too small for LiRA's shadow models: {needed} images needed (2 x "
            f"(shadow_train_size - half the evaluation set)): raise attacker_size (null: all of the attacker's "
            f"images) or lower shadow_train_size={train_size}."
        )


def online_shadow_models(context: AttackContext, num_shadows: int) -> tuple[ShadowModels, int]:
    """Online shadow models: each trains on a random half of the evaluation images and of the attacker's first
    2 x (train_size - N/2) images (balanced: every image IN for half the models); where N > 2 x train_size, on a
    random train_size subset of the N evaluation images alone (:func:`partition_in_masks`). Returns them and N, the
    number of evaluation images (the first N columns of their ``in_mask``). Cached on disk; online RMIA shares them."""
    masks_generator = generator(context.seed, "shadow_masks", "online")
    n_eval = len(context.eval_images)
    if online_subsets(context.train_size, n_eval):
        masks = partition_in_masks(n_eval, context.train_size, num_shadows, masks_generator)
        images, labels = context.eval_images, context.eval_labels
    else:
        extra = context.train_size - n_eval // 2
        eval_masks = balanced_in_masks(n_eval, num_shadows, masks_generator)
        extra_masks = balanced_in_masks(2 * extra, num_shadows, masks_generator)
        masks = torch.cat([eval_masks, extra_masks], dim=1)
        images = torch.cat([context.eval_images, context.attacker_images[: 2 * extra]])
        labels = torch.cat([context.eval_labels, context.attacker_labels[: 2 * extra]])
    shadows, _ = provision_shadow_models(
        context.recipe,
        images,
        labels,
        subset_indices(masks),
        shadow_seeds(context.seed, num_shadows),
        context.cache_dir,
        context.device,
    )
    return shadows, n_eval


class LiRA(MembershipAttack):
    """Carlini et al. 2022 likelihood-ratio attack.

    Args:
        num_shadows: shadow models (even; IN/OUT pairs). The paper's online attack uses 64-256;
            16 already beats the threshold baselines here.
        online: online (IN and OUT models) or offline (OUT models only).
        fixed_variance: one variance for all images (true) or one per image (false); ``"auto"``, true below 64
            shadow models (:func:`resolve_fixed_variance`).
        query_shift: the largest translation (pixels, |i| + |j|) of the query augmentations; 0, the image alone.
        keys: the config key of an argument, named in its errors, where it is not the argument's own name
            (``{"num_shadows": "num_ref_models"}`` under ``experiment=membership_budget``); see
            :func:`~.base.config_key`.
    """

    shadow_answers = True

    def __init__(
        self,
        num_shadows: int = 16,
        online: bool = True,
        fixed_variance: bool | str = "auto",
        query_shift: int = 0,
        keys: Mapping[str, str] | None = None,
    ):
        check_shadow_count(num_shadows, config_key(keys, "num_shadows"))
        require_int(query_shift, config_key(keys, "query_shift"), minimum=0)
        self.fixed_variance = resolve_fixed_variance(fixed_variance, num_shadows, config_key(keys, "fixed_variance"))
        self.num_shadows, self.online = num_shadows, bool(online)
        self.shifts = translations(int(query_shift))

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """:class:`ConfigError` when shadow models cannot reach ``train_size`` images each."""
        if self.online:
            check_online_sizes(train_size, eval_size, attacker_size)
        elif attacker_size < 2 * train_size:
            raise ConfigError(
                f"attacker_size={attacker_size} is too small for LiRA's shadow models: {2 * train_size} images needed "
                f"(2 x shadow_train_size): raise attacker_size (null: all of the attacker's images) or lower "
                f"shadow_train_size={train_size}."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: the evaluation set, once per query augmentation (shadow models answer the
        rest)."""
        return eval_size * len(self.shifts)

    def __call__(self, context: AttackContext) -> AttackOutput:
        shadows, in_mask = calibration_shadows(context, self.num_shadows, self.online)
        scores = torch.stack([self.copy_scores(context, shadows, in_mask, shift) for shift in self.shifts]).mean(0)
        info = {
            "lira/num_shadows": float(len(shadows)),
            "lira/query_copies": float(len(self.shifts)),
            "lira/fixed_variance": float(self.fixed_variance),
        }
        return AttackOutput(scores, (scores > 0).long(), info)

    def copy_scores(self, context: AttackContext, shadows: ShadowModels, in_mask: Tensor, shift) -> Tensor:
        """The scores (N,) of the evaluation images translated by ``shift``: the online likelihood ratio
        log N(phi; IN) - log N(phi; OUT), or offline the z-score (phi - mu_out) / sigma_out (it orders images like
        log Pr[Z < phi] without its underflow to 0 for large z); a member decision is a score above 0."""
        images = translate(context.eval_images, shift)
        shadow_log_probs = context.shadow_log_probs(shadows.logits(images))
        shadow_phi = torch.stack([logit_confidence(lp, context.eval_labels) for lp in shadow_log_probs])  # (S, N)
        target_phi = logit_confidence(context.query_log_probs(images), context.eval_labels)  # (N,)
        return likelihood_ratio(target_phi, shadow_phi, in_mask, self.fixed_variance, self.online)
