"""The reusable distillation: the schedule, batches, shifts, exact query cost, every loss, the global RNG, ensembles."""

import pytest
import torch
from torch import nn

from privacy_attacks.attacks.stealing import StudentEnsemble, distil, fit_student, steps_for_budget
from privacy_attacks.attacks.stealing.distillation import ResampledBatches, random_shift
from privacy_attacks.attacks.stealing.losses import LectureKL
from privacy_attacks.blackbox import BlackBoxAPI, Probabilities, QueryBudgetExceeded
from privacy_attacks.models import LeNet5
from privacy_attacks.seeding import seeded
from tests.conftest import LOSS_NAMES, config_losses


def test_schedule_gives_small_budgets_enough_steps_and_caps_large_ones():
    assert steps_for_budget(100, 30, 400, 3000) == 400
    assert steps_for_budget(1000, 30, 400, 3000) == 949
    assert steps_for_budget(5000, 30, 400, 3000) == 2121
    assert steps_for_budget(60000, 30, 400, 3000) == 3000


def test_resampled_batches_yield_exactly_the_steps_and_every_image():
    x, a = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = list(ResampledBatches(x, a, batch_size=4, steps=7, seed=0))
    assert len(batches) == 7 and all(len(b[0]) == 4 for b in batches)
    assert all(torch.equal(bx.flatten().long(), ba) for bx, ba in batches)


def test_random_shift_moves_pixels_without_changing_shape():
    x = torch.zeros(3, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and torch.equal(shifted.sum((1, 2, 3)), torch.ones(3))
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2


@pytest.fixture
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def test_distil_costs_exactly_one_query_per_image_and_trains_the_student(teacher):
    api = BlackBoxAPI(teacher, "probs", budget=64)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    student = LeNet5()
    before = [p.detach().clone() for p in student.parameters()]
    out = distil(api, images, student, LectureKL(temperature=2.0), steps=3, batch_size=16)
    assert out is student and not out.training
    assert api.queries_used == 64 and api.num_calls == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))
    with pytest.raises(QueryBudgetExceeded):
        distil(api, images[:1], LeNet5(), LectureKL(), steps=1)
    assert api.queries_used == 64


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_lowers_itself_on_cached_answers(name):
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    mode = Probabilities()
    answers = mode.answer(torch.randn(32, 10, generator=torch.Generator().manual_seed(2)) * 3)  # confident answers
    loss = config_losses(temperature=2.0)[name]
    torch.manual_seed(0)
    student = LeNet5()
    with torch.no_grad():
        before = loss(student(images), answers, mode).item()
    fit_student(student, images, answers, mode, loss, steps=30, batch_size=32, shift=0)
    with torch.no_grad():
        after = loss(student(images), answers, mode).item()
    assert after < before


def test_a_fit_neither_reads_nor_moves_the_global_rng(teacher):
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    answers = Probabilities().answer(teacher(images))
    fitted = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)
        with seeded(5, "student"):
            student = LeNet5()
        fit_student(student, images, answers, "probs", LectureKL(), steps=4, batch_size=8, shift=2, seed=7)
        fitted.append(student.state_dict())
        state = torch.get_rng_state()
        torch.manual_seed(global_seed)
        assert torch.equal(state, torch.get_rng_state())  # the fit left the caller's RNG where it was
    assert all(torch.equal(fitted[0][k], fitted[1][k]) for k in fitted[0])


def test_an_ensemble_answers_its_members_mean_probabilities():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(12, 4)) for _ in range(3)]
    x = torch.rand(5, 3, 2, 2)
    ensemble = StudentEnsemble(members)
    mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
    assert torch.allclose(ensemble(x).softmax(-1), mean, atol=1e-6)
    assert torch.allclose(ensemble(x).exp().sum(-1), torch.ones(5), atol=1e-6)  # log probabilities already
    assert torch.equal(StudentEnsemble(members[:1])(x).argmax(-1), members[0](x).argmax(-1))
    with pytest.raises(ValueError, match="at least one member"):
        StudentEnsemble([])


class PerExample(LectureKL):
    """A loss that forgot to reduce over the batch."""

    def forward(self, student_logits, answers, mode):
        return (mode.student_view(student_logits) - mode.target_view(answers)).pow(2).sum(dim=-1)


def test_a_loss_that_is_not_one_number_is_named_in_one_line():
    from privacy_attacks.attacks.stealing.stacked import fit_students
    from privacy_attacks.errors import UserError

    images, mode = torch.rand(16, 1, 28, 28), Probabilities()
    answers = mode.answer(torch.randn(16, 10))
    pattern = r"^the distillation loss PerExample gave a value of shape \(8,\): forward\(\) returns the batch's loss"
    with pytest.raises(UserError, match=pattern):
        fit_student(LeNet5(), images, answers, mode, PerExample(), steps=2, batch_size=8, shift=0)
    adam = lambda params: torch.optim.Adam(params, lr=1e-3)  # noqa: E731
    with pytest.raises(UserError, match=pattern):  # students trained together would have summed it
        fit_students(
            [LeNet5(), LeNet5()],
            [(images, answers)] * 2,
            [PerExample()] * 2,
            ["probs"] * 2,
            2,
            adam,
            None,
            8,
            [0, 0],
            [0, 1],
        )
