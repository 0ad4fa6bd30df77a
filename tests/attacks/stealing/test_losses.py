"""Distillation losses against the lecture's formulas."""

import math

import pytest
import torch

from privacy_attacks.attacks.stealing.losses import HardLabel, HintonKL, LectureKL, SoftCrossEntropy, SquaredError
from privacy_attacks.blackbox import Label, Logits, Probabilities
from privacy_attacks.errors import ConfigError
from tests.conftest import config_losses

TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.5, -1.0, 3.0]])


STUDENT = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_mse_matches_the_lecture_on_a_hand_computed_example():
    # Logits API: ||f - g||^2 = (2-0)^2 + (1-1)^2 + 0 = 4 and (0.5-1)^2 + (-1-1)^2 + (3-1)^2 = 8.25.
    assert SquaredError()(STUDENT, TEACHER, Logits()).item() == pytest.approx((4 + 8.25) / 2)
    # Probability API: the student's probabilities against the returned probabilities.
    expected = (
        sum(
            sum((p - q) ** 2 for p, q in zip(softmax(f), softmax(g)))
            for f, g in zip(TEACHER.tolist(), STUDENT.tolist())
        )
        / 2
    )
    assert SquaredError()(STUDENT, TEACHER.softmax(-1), Probabilities()).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kl_matches_the_lecture_formula_exactly(tau):
    # f~ = Softmax(f / tau), g~ = Softmax(g), l = sum_j f~_j log(f~_j / g~_j), mean over the batch.
    expected = 0.0
    for f, g in zip(TEACHER.tolist(), STUDENT.tolist()):
        ft, gt = softmax([v / tau for v in f]), softmax(g)
        expected += sum(a * math.log(a / b) for a, b in zip(ft, gt))
    expected /= 2
    loss = LectureKL(temperature=tau)
    assert loss(STUDENT, TEACHER, Logits()).item() == pytest.approx(expected, rel=1e-5)
    # The same from returned probabilities: Softmax(log p / tau) == Softmax(f / tau).
    assert loss(STUDENT, TEACHER.softmax(-1), Probabilities()).item() == pytest.approx(expected, rel=1e-4)


def test_kl_hinton_matches_its_formula():
    tau = 3.0
    expected = 0.0
    for f, g in zip(TEACHER.tolist(), STUDENT.tolist()):
        ft, gt = softmax([v / tau for v in f]), softmax([v / tau for v in g])
        expected += tau**2 * sum(a * math.log(a / b) for a, b in zip(ft, gt))
    assert HintonKL(tau)(STUDENT, TEACHER, Logits()).item() == pytest.approx(expected / 2, rel=1e-5)


def test_soft_ce_and_hard_match_their_formulas():
    expected = (
        -sum(
            sum(p * math.log(q) for p, q in zip(softmax(f), softmax(g)))
            for f, g in zip(TEACHER.tolist(), STUDENT.tolist())
        )
        / 2
    )
    assert SoftCrossEntropy()(STUDENT, TEACHER, Logits()).item() == pytest.approx(expected, rel=1e-5)
    labels = TEACHER.argmax(-1)  # [0, 2]
    expected_hard = -(math.log(softmax(STUDENT[0].tolist())[0]) + math.log(softmax(STUDENT[1].tolist())[2])) / 2
    assert HardLabel()(STUDENT, labels, Label(num_classes=3)).item() == pytest.approx(expected_hard, rel=1e-5)


@pytest.mark.parametrize("mode", [Probabilities(), Logits()])
@pytest.mark.parametrize("name", ["mse", "kl", "kl_hinton"])
def test_loss_is_zero_when_student_outputs_equal_teacher_outputs(name, mode):
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(1)) * 3
    loss = config_losses(temperature=1.0)[name]
    assert loss(logits, mode.answer(logits), mode).item() == pytest.approx(0.0, abs=1e-5)


def test_lecture_kl_is_zero_when_the_student_equals_the_softened_teacher():
    # With tau != 1 the lecture compares Softmax(f / tau) with Softmax(g): zero at g = f / tau.
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(2)) * 3
    assert LectureKL(4.0)(logits / 4.0, logits.softmax(-1), Probabilities()).item() == pytest.approx(0.0, abs=1e-5)
    assert LectureKL(4.0)(logits, logits.softmax(-1), Probabilities()).item() > 0.01


def test_label_losses_vanish_when_the_student_is_certain_of_the_answered_label():
    labels = torch.tensor([3, 7])
    certain = torch.nn.functional.one_hot(labels, 10).float() * 100.0
    losses = config_losses(temperature=1.0)
    for name in ("mse", "soft_ce", "hard", "kl"):
        loss = losses[name]
        assert loss(certain, labels, Label()).item() == pytest.approx(0.0, abs=1e-5), name


def test_soft_ce_is_minimal_with_zero_gradient_at_equality():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(3))
    student = logits.clone().requires_grad_(True)
    loss = SoftCrossEntropy()(student, logits.softmax(-1), Probabilities())
    loss.backward()
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert student.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("tau", [0, -1.0])
def test_non_positive_temperature_is_refused(tau):
    with pytest.raises(ConfigError, match="temperature"):
        LectureKL(tau)
