"""Distillation losses: how far the student's outputs are from the target's answers.

Every loss is called as ``loss(student_logits, answers, mode) -> scalar`` with the student's
logits (N, C), the API's answers for the same images (see :mod:`privacy_attacks.blackbox`) and
the API's :class:`~privacy_attacks.blackbox.OutputMode`, and averages over the batch.
The losses by name are ``_target_`` nodes of ``conf/attack/_losses.yaml`` (``losses.<name>``), the
one registry that model stealing (``loss=<name>``) and the membership proxy (``methods.proxy.loss``) read.
``f`` below is the target (teacher), ``g`` the student; ``scores(f)`` are the answers in logit
form (``log p`` for probabilities: softmax is shift-invariant, so ``Softmax(scores / tau)`` is the
lecture's ``Softmax(f / tau)``).

- :class:`SquaredError` (``mse``), the lecture's first implementation:
  ``l = ||f(x) - g(x)||^2`` on the returned outputs (the student's probabilities against returned
  probabilities, its logits against returned logits, its probabilities against a one-hot label).
- :class:`LectureKL` (``kl``), the lecture's second implementation, exactly as written:
  ``f~ = Softmax(f / tau)``, ``g~ = Softmax(g)`` (no temperature on the student),
  ``l = sum_j f~_j log(f~_j / g~_j)``.
- :class:`HintonKL` (``kl_hinton``), Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a
  neural network": ``tau^2 KL(Softmax(f / tau) || Softmax(g / tau))``.
- :class:`SoftCrossEntropy` (``soft_ce``): ``-sum_j p_j log Softmax(g)_j`` with ``p`` the
  answered class distribution (no temperature).
- :class:`HardLabel` (``hard``): cross-entropy on the answer's top-1 class (the label-only baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.blackbox import OutputMode
from privacy_attacks.errors import UserError, require_positive


def _kl(target_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """Mean over the batch of ``sum_j p_j (log p_j - log q_j)``; ``0 log 0 = 0``."""
    return (torch.xlogy(target_probs, target_probs) - target_probs * student_log_probs).sum(dim=-1).mean()


class DistillationLoss(nn.Module):
    """Base class: ``forward(student_logits (N, C), answers, mode) -> scalar``."""

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        raise NotImplementedError


def scalar_loss(value: Tensor, loss: nn.Module) -> Tensor:
    """``value``, the batch's loss from ``loss``; :class:`~privacy_attacks.errors.UserError` (one line) unless it is one
    number: a loss per example would be summed where students train together and refused by autograd alone."""
    if value.ndim != 0:
        raise UserError(
            f"the distillation loss {type(loss).__name__} gave a value of shape {tuple(value.shape)}: forward() "
            "returns the batch's loss, one number (e.g. its mean over the examples)."
        )
    return value


class SquaredError(DistillationLoss):
    """Lecture, first implementation: ``||f(x) - g(x)||^2`` (sum over classes, mean over the batch)."""

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        diff = mode.student_view(student_logits) - mode.target_view(answers)
        return diff.pow(2).sum(dim=-1).mean()


class LectureKL(DistillationLoss):
    """Lecture, second implementation: ``KL(Softmax(f / tau) || Softmax(g))``.

    ``tau`` > 1 softens only the target, "amplifying the other classes' confidence" (lecture);
    the student's softmax has no temperature, exactly as the slide writes it.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        require_positive(temperature, "temperature")
        self.temperature = float(temperature)

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        teacher = (mode.scores(answers) / self.temperature).softmax(dim=-1)
        return _kl(teacher, student_logits.log_softmax(dim=-1))


class HintonKL(DistillationLoss):
    """Hinton et al. 2015: ``tau^2 KL(Softmax(f / tau) || Softmax(g / tau))``."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        require_positive(temperature, "temperature")
        self.temperature = float(temperature)

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        tau = self.temperature
        teacher = (mode.scores(answers) / tau).softmax(dim=-1)
        return tau**2 * _kl(teacher, (student_logits / tau).log_softmax(dim=-1))


class SoftCrossEntropy(DistillationLoss):
    """``-sum_j p_j log Softmax(g)_j`` with ``p = Softmax(scores(f))`` the answered distribution."""

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        teacher = mode.scores(answers).softmax(dim=-1)
        return -(teacher * student_logits.log_softmax(dim=-1)).sum(dim=-1).mean()


class HardLabel(DistillationLoss):
    """Cross-entropy on the top-1 class of each answer (what a label-only API allows)."""

    def forward(self, student_logits: Tensor, answers: Tensor, mode: OutputMode) -> Tensor:
        return F.cross_entropy(student_logits, mode.labels(answers))
