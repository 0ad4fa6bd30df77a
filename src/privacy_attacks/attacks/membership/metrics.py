"""Membership-inference metrics (Carlini et al. 2022 argue for TPR at low FPR next to AUC).

Label convention: member = 1, non-member = 0; a higher score means "member".
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, BinaryROC, MulticlassAccuracy

FPR_LEVELS = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}


def _ranks(scores: Tensor) -> Tensor:
    """Scores mapped to [0, 1] by their dense rank (ties kept): torchmetrics would squash scores
    outside [0, 1] with a sigmoid, which merges large scores into ties."""
    _, inverse = torch.unique(scores.double(), sorted=True, return_inverse=True)
    return inverse.double() / max(int(inverse.max()), 1)


def roc_curve(scores: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ROC curve ``(fpr, tpr)`` of scores (N,) against membership (N,) (1 = member)."""
    fpr, tpr, _ = BinaryROC(thresholds=None)(_ranks(scores), membership.long())
    return fpr.double(), tpr.double()


def tpr_at_fpr(fpr: Tensor, tpr: Tensor, max_fpr: float) -> float:
    """The highest TPR of an ROC curve at FPR <= ``max_fpr``."""
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def membership_metrics(scores: Tensor, membership: Tensor, predictions: Tensor) -> dict[str, float]:
    """``mia/auc``, ``mia/balanced_acc``, ``mia/advantage``, ``mia/tpr@1%fpr``, ``mia/tpr@0.1%fpr``.

    Args:
        scores: (N,) membership scores (higher = member).
        membership: (N,) 1 for members, 0 for non-members.
        predictions: (N,) the attack's hard decisions (1 = member) at its own threshold;
            ``balanced_acc`` is their mean per-class accuracy. ``advantage`` is max_t TPR - FPR
            over all thresholds (Yeom et al. 2018).
    """
    membership = membership.long()
    fpr, tpr = roc_curve(scores, membership)
    metrics = {
        "mia/auc": float(BinaryAUROC(thresholds=None)(_ranks(scores), membership)),
        "mia/balanced_acc": float(MulticlassAccuracy(num_classes=2, average="macro")(predictions.long(), membership)),
        "mia/advantage": float((tpr - fpr).max()),
    }
    metrics.update({f"mia/{name}": tpr_at_fpr(fpr, tpr, level) for name, level in FPR_LEVELS.items()})
    return metrics
