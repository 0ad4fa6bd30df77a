"""A heuristic ε estimate from a membership attack's scores: ``mia/epsilon_heuristic``. Not a certified bound.

An (ε, δ)-DP mechanism limits every test of one example's membership: TPR ≤ e^ε · FPR + δ and TNR ≤ e^ε · FNR + δ
(Kairouz et al. 2015). Read across the evaluation images, a measured operating point gives ε ≥ log((TPR − δ) / FPR)
and ε ≥ log((1 − FPR − δ) / (1 − TPR)); here with Clopper–Pearson bounds in place of the point estimates
(Jagielski, Ullman & Oprea 2020; Nasr et al. 2021). The threshold and the direction are chosen on one half of the
evaluation set and the value is computed on the other half, so choosing the best of many thresholds does not
inflate it; each Clopper–Pearson bound is one-sided at 1 − (1 − confidence)/2.

What it is not: a lower bound that holds with the stated confidence for the target. The evaluation images of one
trained model are not independent trials (none joined the training set by its own coin: the members are a fixed
set, and all share one run), and the per-example δ does not compose into a guarantee on the whole training set, so
neither Kairouz et al. 2015 nor Steinke, Nasr & Jagielski 2023 licenses it. It is a per-example estimate under the
assumption of independent trials, for comparing attacks and targets. For a bound that holds from one training run
use ``attack=audit`` (Steinke et al. 2023: each canary joins by an independent coin), ``audit/canary_epsilon_lb``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import beta
from torch import Tensor


def _lower(k: np.ndarray, n: int, tail: float) -> np.ndarray:
    return np.where(k == 0, 0.0, beta.ppf(tail, np.maximum(k, 1), n - k + 1))


def _upper(k: np.ndarray, n: int, tail: float) -> np.ndarray:
    return np.where(k == n, 1.0, beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)))


def epsilon_bounds(
    true_positives: np.ndarray, false_positives: np.ndarray, members: int, nonmembers: int, delta: float, tail: float
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson ε values (≥ 0) of each operating point, in both directions: (log((TPR_lo − δ)/FPR_hi),
    log((1 − FPR_hi − δ)/(1 − TPR_lo))), each Clopper–Pearson bound one-sided with ``tail`` probability."""
    tpr_low = _lower(true_positives, members, tail)
    fpr_high = _upper(false_positives, nonmembers, tail)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.log(np.clip(tpr_low - delta, 0, None) / fpr_high)
        negative = np.log(np.clip(1 - fpr_high - delta, 0, None) / (1 - tpr_low))
    clean = lambda e: np.nan_to_num(np.clip(e, 0, None), nan=0.0, posinf=0.0)  # noqa: E731 - 0/0, x/0: no bound
    return clean(positive), clean(negative)


def _counts(scores: np.ndarray, membership: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of "member when score ≥ t" for each threshold t."""
    member_scores = np.sort(scores[membership == 1])
    nonmember_scores = np.sort(scores[membership == 0])
    tp = len(member_scores) - np.searchsorted(member_scores, thresholds, side="left")
    fp = len(nonmember_scores) - np.searchsorted(nonmember_scores, thresholds, side="left")
    return tp, fp


def epsilon_heuristic(
    scores: Tensor, membership: Tensor, delta: float = 1e-5, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """``mia/epsilon_heuristic``: the Clopper–Pearson ε estimate of the threshold and direction chosen on one half of
    the evaluation set (a random half, drawn by ``seed``), computed on the other half, as if every image were an
    independent trial (see the module docstring); with ``mia/epsilon_heuristic_delta`` and
    ``mia/epsilon_heuristic_confidence``. Scores (N,), higher = member; membership (N,) 1/0."""
    scores_np = scores.detach().double().cpu().numpy()
    membership_np = membership.detach().long().cpu().numpy()
    order = torch.randperm(len(scores_np), generator=torch.Generator().manual_seed(seed)).numpy()
    choose, measure = order[: len(order) // 2], order[len(order) // 2 :]
    tail = (1 - confidence) / 2
    thresholds = np.unique(scores_np[choose])
    best, best_value, best_direction = None, -1.0, 0
    chosen = (scores_np[choose], membership_np[choose])
    tp, fp = _counts(*chosen, thresholds)
    bounds = epsilon_bounds(tp, fp, int(chosen[1].sum()), int((chosen[1] == 0).sum()), delta, tail)
    for direction, values in enumerate(bounds):
        if len(values) and values.max() > best_value:
            best, best_value, best_direction = thresholds[int(values.argmax())], float(values.max()), direction
    epsilon = 0.0
    measured = (scores_np[measure], membership_np[measure])
    members, nonmembers = int(measured[1].sum()), int((measured[1] == 0).sum())
    if best is not None and members and nonmembers:
        tp, fp = _counts(*measured, np.array([best]))
        epsilon = float(epsilon_bounds(tp, fp, members, nonmembers, delta, tail)[best_direction][0])
    return {
        "mia/epsilon_heuristic": epsilon,
        "mia/epsilon_heuristic_delta": float(delta),
        "mia/epsilon_heuristic_confidence": float(confidence),
    }


def epsilon_from_rates(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The point estimate ε = max(log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR)), 0), for hand checks."""
    values = [0.0]
    if tpr - delta > 0 and fpr > 0:
        values.append(math.log((tpr - delta) / fpr))
    if 1 - fpr - delta > 0 and tpr < 1:
        values.append(math.log((1 - fpr - delta) / (1 - tpr)))
    return max(values)
