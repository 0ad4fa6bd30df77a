"""Membership-inference metrics (Carlini et al. 2022 argue for TPR at low FPR next to AUC).

Label convention: member = 1, non-member = 0; a higher score means "member". A threshold ``t`` calls
every image with score >= t a member, so images with tied scores are always called together.

Operating points are counted in integers (true and false positives per threshold), so "TPR at 0.1% FPR"
on 1,000 non-members really allows one false positive (a float32 FPR of 1/1000 is 0.0010000000475 > 0.001).
The point metrics come with 95% intervals: a stratified bootstrap for the AUC and Clopper & Pearson (1934)
exact binomial intervals for each TPR at low FPR.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from scipy.stats import beta
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

FPR_LEVELS = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}

# Bootstrap resamples are drawn in chunks of about this many indices, to bound memory for large sets.
_CHUNK_ELEMENTS = 4_000_000


def _ranks(scores: Tensor) -> Tensor:
    """Scores mapped to [0, 1] by their dense rank (ties kept): torchmetrics would squash scores
    outside [0, 1] with a sigmoid, which merges large scores into ties."""
    _, inverse = torch.unique(scores.double(), sorted=True, return_inverse=True)
    return inverse.double() / max(int(inverse.max()), 1)


def _split(scores: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """(members' scores (P,), non-members' scores (Q,)) in float64; both classes must be present."""
    scores, membership = scores.reshape(-1).double(), membership.reshape(-1).long()
    if scores.shape != membership.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and membership {tuple(membership.shape)} differ in size")
    if not bool(((membership == 0) | (membership == 1)).all()):
        raise ValueError("membership must be 1 (member) or 0 (non-member)")
    members, nonmembers = scores[membership == 1], scores[membership == 0]
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError(f"need members and non-members, got {len(members)} and {len(nonmembers)}")
    return members, nonmembers


def operating_points(scores: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """Integer ``(true_positives, false_positives)``, each (G + 1,), one entry per threshold.

    Entry 0 is the threshold above every score (0, 0); entry g calls the g highest distinct scores
    members (a tied group is taken whole), so the last entry is (members, non-members). Both are
    non-decreasing int64 cumulative sums over the scores (N,) sorted in descending order.
    """
    _split(scores, membership)  # validates
    sorted_scores, order = torch.sort(scores.reshape(-1).double(), descending=True, stable=True)
    is_member = membership.reshape(-1).long()[order]
    group_end = torch.ones_like(is_member, dtype=torch.bool)
    group_end[:-1] = sorted_scores[1:] != sorted_scores[:-1]  # the last image of each tied group
    zero = torch.zeros(1, dtype=torch.long)
    true_positives = torch.cat([zero, is_member.cumsum(0)[group_end]])
    false_positives = torch.cat([zero, (1 - is_member).cumsum(0)[group_end]])
    return true_positives, false_positives


def roc_curve(scores: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ROC curve ``(fpr, tpr)``, each (G + 1,) float64 from (0, 0) to (1, 1), of scores (N,)
    against membership (N,) (1 = member); the same points as torchmetrics' ``BinaryROC``."""
    true_positives, false_positives = operating_points(scores, membership)
    return false_positives.double() / int(false_positives[-1]), true_positives.double() / int(true_positives[-1])


def allowed_false_positives(max_fpr: float, nonmembers: int) -> int:
    """⌊max_fpr · nonmembers⌋, robust to rounding (0.001 · 1000 gives 1, 0.29 · 100 gives 29)."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    return min(math.floor(max_fpr * nonmembers + 1e-9), nonmembers)


class TprAtFpr(NamedTuple):
    """An operating point at low FPR: ``tpr = true_positives / members``."""

    tpr: float
    true_positives: int
    false_positives_allowed: int
    members: int


def tpr_at_fpr_exact(scores: Tensor, membership: Tensor, max_fpr: float) -> TprAtFpr:
    """The best TPR over thresholds with at most ⌊max_fpr · N_nonmembers⌋ false positives
    (Carlini et al. 2022, "Membership Inference Attacks From First Principles").

    Args:
        scores: (N,) membership scores (higher = member).
        membership: (N,) 1 for members, 0 for non-members.
        max_fpr: the FPR level α in [0, 1].

    Counted in integers over tied groups taken whole: no interpolation between thresholds and no float
    FPR comparison. Returns ``(tpr, true_positives, false_positives_allowed, members)``.
    """
    return _tpr_at_fpr(*operating_points(scores, membership), max_fpr)


def _tpr_at_fpr(true_positives: Tensor, false_positives: Tensor, max_fpr: float) -> TprAtFpr:
    """``tpr_at_fpr_exact`` on the (G + 1,) integer operating points of ``operating_points``."""
    allowed = allowed_false_positives(max_fpr, int(false_positives[-1]))
    best = int(true_positives[false_positives <= allowed].max())  # entry 0 (no false positive) always qualifies
    members = int(true_positives[-1])
    return TprAtFpr(best / members, best, allowed, members)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper & Pearson 1934) two-sided interval ``(low, high)`` for a binomial proportion k / n.

    low = Beta⁻¹(a/2; k, n - k + 1) (0 when k = 0), high = Beta⁻¹(1 - a/2; k + 1, n - k) (1 when k = n),
    with a = 1 - confidence.
    """
    k, n = int(k), int(n)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def mann_whitney_auc(scores: Tensor, membership: Tensor) -> float:
    """AUC as the Mann–Whitney U statistic over P members and Q non-members, from average ranks
    (ties count one half): (R_members - P (P + 1) / 2) / (P Q). Scores (N,), membership (N,)."""
    members, nonmembers = _split(scores, membership)
    _, inverse, counts = torch.unique(torch.cat([members, nonmembers]), return_inverse=True, return_counts=True)
    average_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based, ties averaged
    p, q = len(members), len(nonmembers)
    rank_sum = float(average_rank[inverse[:p]].sum())
    return (rank_sum - p * (p + 1) / 2) / (p * q)


def _resampled_aucs(members: Tensor, nonmembers: Tensor, member_idx: Tensor, nonmember_idx: Tensor) -> Tensor:
    """AUC (B,) of each resample b: the members ``members[member_idx[b]]`` (member_idx (B, P')) against the
    non-members ``sorted(nonmembers)[nonmember_idx[b]]`` (nonmember_idx (B, Q')), indices into the sorted
    non-members. Counted as Mann–Whitney U in integers: for each resampled member, twice the number of
    resampled non-members below it plus the number tied with it, via a cumulative count over the sorted
    non-members, in O(B (P' + Q' + Q)) time and memory (no P × Q comparison matrix)."""
    sorted_nonmembers = nonmembers.sort().values
    below = torch.searchsorted(sorted_nonmembers, members, right=False)  # (P,) non-members strictly below
    at_or_below = torch.searchsorted(sorted_nonmembers, members, right=True)  # (P,) non-members <= score
    b, q = nonmember_idx.shape
    counts = torch.zeros(b, len(nonmembers) + 1, dtype=torch.long)
    counts[:, 1:].scatter_add_(1, nonmember_idx, torch.ones_like(nonmember_idx))
    cumulative = counts.cumsum(1)  # cumulative[b, j]: resampled non-members among the j lowest
    twice_wins = cumulative.gather(1, below[member_idx]) + cumulative.gather(1, at_or_below[member_idx])
    return twice_wins.sum(1).double() / (2 * member_idx.shape[1] * q)


def bootstrap_aucs(scores: Tensor, membership: Tensor, resamples: int = 1000, seed: int = 0) -> Tensor:
    """AUCs (resamples,) of a stratified bootstrap: members and non-members of scores (N,) / membership (N,)
    are each resampled with replacement to their own size, from a ``torch.Generator`` seeded by ``seed``.
    Each class is sorted before it is resampled, so the interval does not depend on the evaluation set's order."""
    members, nonmembers = _split(scores, membership)
    members = members.sort().values
    p, q = len(members), len(nonmembers)
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS // (p + 2 * q + 1))
    aucs = []
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        member_idx = torch.randint(p, (rows, p), generator=generator)
        nonmember_idx = torch.randint(q, (rows, q), generator=generator)
        aucs.append(_resampled_aucs(members, nonmembers, member_idx, nonmember_idx))
    return torch.cat(aucs) if aucs else torch.empty(0, dtype=torch.float64)


def bootstrap_auc_ci(
    scores: Tensor, membership: Tensor, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` of the AUC from a stratified bootstrap (``bootstrap_aucs``) over
    the evaluation set, scores (N,) and membership (N,); deterministic for a given ``seed``."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    aucs = bootstrap_aucs(scores, membership, resamples=resamples, seed=seed)
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(aucs, torch.tensor([tail, 1.0 - tail], dtype=aucs.dtype)).tolist()
    return low, high


def membership_metrics(
    scores: Tensor, membership: Tensor, predictions: Tensor, *, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """``mia/auc``, ``mia/balanced_acc``, ``mia/advantage``, ``mia/tpr@1%fpr``, ``mia/tpr@0.1%fpr``,
    the counts ``mia/members`` and ``mia/nonmembers``, and 95% intervals ``mia/auc_ci_low``/``_high``
    (stratified bootstrap, ``resamples`` draws seeded by ``seed``) and ``mia/tpr@…fpr_ci_low``/``_high``
    (Clopper–Pearson on the true positives at that operating point out of the members).

    Args:
        scores: (N,) membership scores (higher = member).
        membership: (N,) 1 for members, 0 for non-members.
        predictions: (N,) the attack's hard decisions (1 = member) at its own threshold;
            ``balanced_acc`` is their mean per-class accuracy. ``advantage`` is max_t TPR - FPR
            over all thresholds (Yeom et al. 2018).

    Every metric is a rate within one class or a ranking between classes, so it means the same when the set
    holds more non-members than members (``eval_nonmembers``): no plain accuracy, which the larger class would sway.

    The TPR intervals hold the operating point fixed: they do not include the uncertainty in which
    threshold gives at most ⌊α · N_nonmembers⌋ false positives on fresh data.
    """
    membership = membership.long()
    true_positives, false_positives = operating_points(scores, membership)
    members, nonmembers = int(true_positives[-1]), int(false_positives[-1])
    advantage = int((true_positives * nonmembers - false_positives * members).max()) / (members * nonmembers)
    auc_low, auc_high = bootstrap_auc_ci(scores, membership, resamples=resamples, seed=seed)
    metrics = {
        "mia/auc": float(BinaryAUROC(thresholds=None)(_ranks(scores), membership)),
        "mia/balanced_acc": float(MulticlassAccuracy(num_classes=2, average="macro")(predictions.long(), membership)),
        "mia/advantage": advantage,
        "mia/members": float(members),
        "mia/nonmembers": float(nonmembers),
        "mia/auc_ci_low": auc_low,
        "mia/auc_ci_high": auc_high,
    }
    for name, level in FPR_LEVELS.items():
        point = _tpr_at_fpr(true_positives, false_positives, level)
        low, high = clopper_pearson(point.true_positives, members)
        metrics.update({f"mia/{name}": point.tpr, f"mia/{name}_ci_low": low, f"mia/{name}_ci_high": high})
    return metrics
