"""The relative membership inference attack (RMIA): Zarifzadeh, Liu, Wang & Shokri 2024, "Low-Cost High-Power
Membership Inference Attacks" (ICML).

RMIA compares the target's likelihood ratio on x with its ratio on population points z the attacker holds:

    LR(x, z) = (Pr(x | θ) / Pr(x)) / (Pr(z | θ) / Pr(z)),     score(x) = Pr_z[ LR(x, z) ≥ γ ],

where Pr(x | θ) is the probability the target gives x's true label and Pr(x) its average over reference models
(the shadow models of :mod:`.shadow_models`, shared with LiRA through the same cache):

- ``online``: reference models train on random halves of the evaluation images and of the population (each
  image IN for half of them, as for online LiRA), and Pr(x), Pr(z) average all of them. Where the evaluation set
  is large and each model trains on a target-sized subset of it instead (an image IN for fewer than half of the
  models), Pr(x) is ½(mean over the IN models + mean over the OUT models), the paper's average over reference models
  of which half trained on x (:func:`online_prior`); the population is then OUT for every model and Pr(z) their
  mean, which leaves the order of the images unchanged (see below) but lowers the fraction, so the hard decision
  leans to non-member;
- offline: reference models train on the attacker's own images only (every evaluation image and every z is OUT),
  and the missing IN side is approximated linearly: Pr(x) = ½((1 + a) Pr_OUT(x) + (1 − a)). ``a`` is set, unless
  given, on one reference model used as a temporary target, over the reference models' own training population
  (never on evaluation images): the ``a`` of the grid whose scores separate that model's members best (AUC).

The target is queried on the evaluation images and on the population points (``num_population``).

For a fixed population and γ, score(x) is a non-decreasing step function of the ratio p_x / P_x alone, so
``score="ratio"`` ranks the images by log(p_x / P_x) itself: the same order without the step function's ties (every
x whose ratio beats every z's scores 1), which matter at low false-positive rates. The hard decision stays the
fraction's, Pr_z[LR(x, z) ≥ γ] ≥ ½, either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive

from .base import AttackContext, AttackOutput, MembershipAttack, config_key
from .lira import check_online_sizes, online_shadow_models, online_subsets
from .metrics import mann_whitney_auc
from .shadow_models import ShadowModels
from .shokri import check_shadow_count, offline_shadow_models

A_GRID = tuple(i / 10 for i in range(11))
SCORE_KINDS = ("fraction", "ratio")


def true_label_probs(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Pr(x | model): the probability of each image's true label, from log-probabilities (..., N, C) and labels (N,)."""
    index = labels.expand(*log_probs.shape[:-2], -1).unsqueeze(-1)
    return log_probs.gather(-1, index).squeeze(-1).exp()


def offline_prior(prob_out: Tensor, a: float) -> Tensor:
    """The offline Pr(x) from the mean probability of OUT reference models: ½((1 + a) Pr_OUT + (1 − a))."""
    return 0.5 * ((1 + a) * prob_out + (1 - a))


def online_prior(ref_probs: Tensor, in_mask: Tensor) -> Tensor:
    """Pr(x) (N,) from the reference models' probabilities ref_probs (S, N) and in_mask (S, N): their mean where
    every image is IN for exactly half of the models, else ½(mean over IN models + mean over OUT models) per image
    (one side's mean alone for an image that the other side lacks)."""
    in_count = in_mask.sum(dim=0)
    if bool((2 * in_count == len(in_mask)).all()):
        return ref_probs.mean(dim=0)
    weight = in_mask.to(ref_probs.dtype)
    mean_in = (ref_probs * weight).sum(dim=0) / in_count.clamp_min(1)
    mean_out = (ref_probs * (1 - weight)).sum(dim=0) / (len(in_mask) - in_count).clamp_min(1)
    both = 0.5 * (mean_in + mean_out)
    return torch.where(in_count == 0, mean_out, torch.where(in_count == len(in_mask), mean_in, both))


def likelihood_ratio(target: Tensor, prior: Tensor) -> Tensor:
    """p / P (...,): the target's probability over its reference average (floored at 1e-30)."""
    return target / prior.clamp_min(1e-30)


def rmia_scores(target_x: Tensor, prior_x: Tensor, target_z: Tensor, prior_z: Tensor, gamma: float) -> Tensor:
    """score(x) = the fraction of population points z with LR(x, z) = (p_x / P_x) / (p_z / P_z) ≥ γ, (N,).

    target_x, prior_x: (N,) the target's probability of each x's label and its reference average; same for z (P,).
    """
    ratio_x = likelihood_ratio(target_x, prior_x)
    ratio_z = likelihood_ratio(target_z, prior_z)
    return (ratio_x[:, None] / ratio_z[None, :] >= gamma).double().mean(dim=1)


def fit_offline_a(
    probs: Tensor,
    in_mask: Tensor,
    population_probs: Tensor,
    gamma: float,
    grid: Sequence[float] = A_GRID,
    key: str = "methods.<name>.a",
) -> float:
    """The ``a`` of ``grid`` with the best AUC when reference model 0 plays the target (needs 2 or more models).

    probs: (S, M) the reference models' probabilities of the true labels of their own training population, in_mask
    (S, M) which images each trained on; population_probs: (S, P) on population points none of them trained on.
    Model 0's members (its training images, with the OUT signal of the other models that did not train on them)
    are told from non-members (the first half of the population points) with the second half as the comparison
    population z. No evaluation image is used. ``key``: the config key of ``a``, named when it cannot be set.
    """
    others_out = ~in_mask[1:]
    members = in_mask[0] & others_out.any(dim=0)
    if len(probs) < 2 or not members.any() or population_probs.shape[1] < 2:
        raise ConfigError(f"RMIA cannot set `a` with these reference models: give {key} a value in [0, 1].")
    out_mean = (probs[1:] * others_out).sum(dim=0)[members] / others_out.sum(dim=0)[members]
    half = population_probs.shape[1] // 2
    nonmember_out, z_out = population_probs[1:, :half].mean(dim=0), population_probs[1:, half:].mean(dim=0)
    target = torch.cat([probs[0][members], population_probs[0, :half]])
    labels = torch.cat([torch.ones(int(members.sum()), dtype=torch.long), torch.zeros(half, dtype=torch.long)])
    best, best_auc = grid[0], -1.0
    for a in grid:
        prior = offline_prior(torch.cat([out_mean, nonmember_out]), a)
        scores = rmia_scores(target, prior, population_probs[0, half:], offline_prior(z_out, a), gamma)
        auc = mann_whitney_auc(scores, labels)
        if auc > best_auc:
            best, best_auc = a, auc
    return float(best)


class RMIA(MembershipAttack):
    """Zarifzadeh et al. 2024 relative membership inference.

    Args:
        num_ref_models: reference models (even; IN/OUT pairs). The paper: strong with 1-4.
        online: IN and OUT reference models (trained on halves of the evaluation images) or OUT only.
        num_population: population points z (the attacker's images no reference model trained on, offline; the
            population the reference models share with the evaluation images, online).
        gamma: the likelihood-ratio threshold γ (> 0).
        a: offline only: the IN-side factor in [0, 1]; None: set on reference model 0 as a temporary target.
        score: ``"fraction"``, the paper's Pr_z[LR(x, z) ≥ γ]; ``"ratio"``, log(p_x / P_x), the same order without
            its ties (see the module).
        keys: the config key of an argument, named in its errors, where it is not the argument's own name
            (``{"a": "methods.rmia_offline.a"}``); see :func:`~.base.config_key`.
    """

    shadow_answers = True

    def __init__(
        self,
        num_ref_models: int = 4,
        online: bool = False,
        num_population: int = 1000,
        gamma: float = 1.0,
        a: float | None = None,
        score: str = "fraction",
        keys: Mapping[str, str] | None = None,
    ):
        check_shadow_count(num_ref_models, config_key(keys, "num_ref_models"))
        require_int(num_population, config_key(keys, "num_population"))
        require_positive(gamma, config_key(keys, "gamma"))
        self.a_key = config_key(keys, "a")
        if a is not None and (isinstance(a, bool) or not (isinstance(a, (int, float)) and 0 <= a <= 1)):
            raise ConfigError(
                f"{self.a_key}={a!r} is not allowed: it must be a number in [0, 1] or null (set on a reference model)."
            )
        self.num_ref_models, self.online, self.num_population = int(num_ref_models), bool(online), int(num_population)
        require_choice(score, SCORE_KINDS, config_key(keys, "score"))
        self.gamma, self.a, self.score = float(gamma), a, score

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """:class:`ConfigError` when the reference models or the population cannot be drawn from the attacker's data."""
        if self.online and online_subsets(train_size, eval_size):
            available = attacker_size
            where, fix = "the attacker's images", "raise attacker_size"
        elif self.online:
            check_online_sizes(train_size, eval_size, attacker_size)
            available = 2 * (train_size - eval_size // 2)
            where = (
                f"the images the online reference models add to the {eval_size} evaluation images: "
                f"2 x ({train_size} - {eval_size} / 2)"
            )
            fix = "raise shadow_train_size or lower eval_members or eval_nonmembers"
        else:
            available = attacker_size - 2 * train_size
            where = f"the attacker's images beyond the reference models' 2 x {train_size}"
            fix = "lower shadow_train_size or raise attacker_size"
        if available < self.num_population:
            raise ConfigError(
                f"num_population={self.num_population} is more than the {max(available, 0)} population images "
                f"available ({where}): lower num_population, or {fix}."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """The evaluation images and the population points."""
        return eval_size + self.num_population

    def _probs(self, context: AttackContext, shadows: ShadowModels, images: Tensor, labels: Tensor) -> Tensor:
        return true_label_probs(context.shadow_log_probs(shadows.logits(images)), labels)

    def __call__(self, context: AttackContext) -> AttackOutput:
        if self.online:
            shadows, _ = online_shadow_models(context, self.num_ref_models)  # online LiRA's models, shared
            # The population the models add to the evaluation images, IN for half of them like x; where they train
            # on the evaluation images alone (many non-members), the attacker's first images, OUT for every model.
            start = 0
        else:
            shadows = offline_shadow_models(context, self.num_ref_models)
            start = 2 * context.train_size  # beyond the models' training population: OUT for every model
        z = slice(start, start + self.num_population)
        z_images, z_labels = context.attacker_images[z], context.attacker_labels[z]
        ref_x = self._probs(context, shadows, context.eval_images, context.eval_labels)  # (S, N)
        ref_z = self._probs(context, shadows, z_images, z_labels)  # (S, P)
        target_x = true_label_probs(context.query_log_probs(context.eval_images), context.eval_labels)
        target_z = true_label_probs(context.query_log_probs(z_images), z_labels)
        info = {"rmia/num_ref_models": float(len(shadows)), "rmia/num_population": float(len(z_images))}
        if self.online:
            prior_x, prior_z = online_prior(ref_x, shadows.in_mask[:, : ref_x.shape[1]]), ref_z.mean(dim=0)
        else:
            a = self.a
            if a is None:
                population = context.attacker_images[: 2 * context.train_size]
                own = self._probs(context, shadows, population, context.attacker_labels[: len(population)])
                a = fit_offline_a(own, shadows.in_mask, ref_z, self.gamma, key=self.a_key)
            prior_x, prior_z = offline_prior(ref_x.mean(dim=0), a), offline_prior(ref_z.mean(dim=0), a)
            info["rmia/a"] = float(a)
        fraction = rmia_scores(target_x, prior_x, target_z, prior_z, self.gamma)
        if self.score == "ratio":
            scores = likelihood_ratio(target_x.double(), prior_x.double()).log()
        else:
            scores = fraction
        return AttackOutput(scores, (fraction >= 0.5).long(), info)
