"""Threshold attacks that need no training: one score of the target's answer, one threshold.

- ``loss``: Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy risk in machine learning: analyzing
  the connection to overfitting" (members have lower loss);
- ``confidence``: the top-1 confidence (Salem et al. 2019, "ML-Leaks");
- ``entropy``: the prediction entropy (Salem et al. 2019);
- ``modified_entropy``: Song & Mittal 2021, "Systematic evaluation of privacy risks of machine
  learning models" (uses the label; monotone in the correct class's confidence).

Scores need no fitting; AUC and TPR at FPR are threshold-free. The hard decision (for
``balanced_acc``) uses a threshold calibrated on the attacker's own images, which the target
never saw: the ``1 - reference_fpr`` quantile of their scores, so the attack flags that fraction
of known non-members.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from privacy_attacks.errors import ConfigError

from .base import AttackContext, AttackOutput, MembershipAttack, config_key
from .scores import ScoreFunction, chosen_score


class ThresholdAttack(MembershipAttack):
    """Score each evaluation image by ``score`` of the target's answer; member if above the threshold.

    Args:
        score: a name of ``scores`` (``loss``, ``confidence``, ``entropy``, ``modified_entropy``, ``logit``,
            ``hinge``: conf/attack/_scores.yaml).
        scores: name -> score function, (log_probs (N, C), labels (N,)) -> (N,), or the config's node of one
            (conf/attack/_scores.yaml), built when chosen.
        reference_size: attacker images queried to calibrate the threshold.
        reference_fpr: the fraction of those known non-members the threshold flags.
        keys: the config key of an argument, named in its errors, where it is not the argument's own name
            (``methods.loss.score``).
    """

    def __init__(
        self,
        score: str,
        scores: Mapping[str, ScoreFunction],
        reference_size: int = 1000,
        reference_fpr: float = 0.5,
        keys: Mapping[str, str] | None = None,
    ):
        self.score_function = chosen_score(scores, score, config_key(keys, "score"))
        self.score, self.reference_size, self.reference_fpr = score, reference_size, reference_fpr

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """Any positive sizes work: the calibration uses at most ``reference_size`` of the attacker's images."""
        if attacker_size < 1 or self.reference_size < 1:
            raise ConfigError(
                f"the {self.score} threshold is calibrated on the attacker's own images: attacker_size={attacker_size} "
                f"and reference_size={self.reference_size} must both be at least 1."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: the evaluation set and the calibration images."""
        return eval_size + min(self.reference_size, attacker_size)

    def __call__(self, context: AttackContext) -> AttackOutput:
        score = self.score_function
        eval_scores = score(context.query_log_probs(context.eval_images), context.eval_labels)
        reference = context.attacker_images[: self.reference_size], context.attacker_labels[: self.reference_size]
        reference_scores = score(context.query_log_probs(reference[0]), reference[1])
        threshold = torch.quantile(reference_scores, 1 - self.reference_fpr)
        return AttackOutput(eval_scores, (eval_scores > threshold).long(), {"attack/threshold": float(threshold)})
