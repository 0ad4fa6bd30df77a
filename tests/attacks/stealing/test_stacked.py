"""Students distilled as one vectorised model end where each ends alone; what cannot be stacked is refused with the
reason; a distillation sweep's group trains its students once and each job keeps its own API and queries."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from privacy_attacks.attacks.stealing.distillation import fit_student
from privacy_attacks.attacks.stealing.losses import LectureKL, SquaredError
from privacy_attacks.attacks.stealing.stacked import fit_students, students_refusal
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import seeded
from tests.conftest import run_as_group

ADAM = functools.partial(torch.optim.Adam, lr=5e-3)
COSINE = torch.optim.lr_scheduler.CosineAnnealingLR


def fresh_student(seed: int) -> nn.Module:
    with seeded(seed, "student"):
        return LeNet5()


@pytest.fixture(scope="module")
def answered():
    """Three query sets of 120 images with a random teacher's probabilities."""
    torch.manual_seed(0)
    teacher = LeNet5().eval()
    sets = []
    for _ in range(3):
        images = torch.rand(120, 1, 28, 28)
        with torch.no_grad():
            sets.append((images, teacher(images).softmax(-1)))
    return sets


def test_students_trained_as_one_end_where_each_ends_alone(answered):
    losses, seeds, shifts = (
        [LectureKL(temperature=4.0), SquaredError(), LectureKL(temperature=2.0)],
        [5, 6, 7],
        [1, 0, 1],
    )
    alone = [
        fit_student(
            fresh_student(i),
            *answered[i],
            "probs",
            losses[i],
            20,
            None,
            optimizer=ADAM,
            scheduler=COSINE,
            batch_size=32,
            shift=shifts[i],
            seed=seeds[i],
        )
        for i in range(3)
    ]
    together, history = fit_students(
        [fresh_student(i) for i in range(3)],
        answered,
        losses,
        ["probs"] * 3,
        20,
        ADAM,
        COSINE,
        32,
        shifts,
        seeds,
        log_every=5,
    )
    for single, student in zip(alone, together):
        assert not student.training and next(student.parameters()).device.type == "cpu"
        for (name, a), b in zip(single.state_dict().items(), student.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    assert [sorted(h) for h in history] == [[4, 9, 14, 19]] * 3 and history[1][4]["train/loss"] > 0  # as fitted alone


def test_what_cannot_be_trained_as_one_is_refused_with_the_reason(answered):
    lenets = [LeNet5(), LeNet5()]
    assert students_refusal(lenets, answered[:2], 32) is None
    assert students_refusal(lenets[:1], answered[:1], 32) == "a single student"
    assert (
        students_refusal([LeNet5(), LeNet5(num_classes=7)], answered[:2], 32) == "the students differ in architecture"
    )
    batch_norm = [nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10)) for _ in range(2)]
    assert students_refusal(batch_norm, answered[:2], 32) == "the student has batch norm"
    dropout = [nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(784, 10)) for _ in range(2)]
    assert students_refusal(dropout, answered[:2], 32).startswith("the student has dropout")
    no_dropout = [nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(784, 10)) for _ in range(2)]
    assert students_refusal(no_dropout, answered[:2], 32) is None
    small = [answered[0], (answered[1][0][:20], answered[1][1][:20])]
    assert students_refusal(lenets, small, 32) == "the students' query sets give different batch sizes"
    from tests.nets import Branchy  # trained one by one instead

    assert "Branchy cannot run as a stack of models" in students_refusal([Branchy(), Branchy()], answered[:2], 32)
    with pytest.raises(ValueError, match="cannot be trained as one: a single student"):
        fit_students(lenets[:1], answered[:1], [SquaredError()], ["probs"], 5, ADAM, None, 32, [0], [0])


TINY = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
STEAL = [*TINY, "target.members=200", "target.max_epochs=1", "attack=distillation", "schedule.steps=12"]


def test_a_distillation_group_trains_its_students_once_each_job_with_its_own_queries(
    compose_attack, monkeypatch, caplog
):
    points = [["seed=0", "loss=kl", "query_budget=60"], ["seed=1", "loss=mse", "query_budget=60"]]
    alone = [run_attack(compose_attack([*STEAL, *point])) for point in points]
    configs = {number: compose_attack([*STEAL, *point]) for number, point in enumerate(points)}
    with caplog.at_level("INFO"):
        grouped = run_as_group(configs, monkeypatch)
    assert "jobs 0, 1 fitted as one batch" in caplog.text
    for number, expected in enumerate(alone):
        assert grouped[number]["queries/used"] == expected["queries/used"] == 60
        for key in ("student/agreement", "student/acc"):
            assert grouped[number][key] == pytest.approx(expected[key], abs=0.05), key
    caplog.clear()
    with caplog.at_level("INFO"):
        run_as_group({0: configs[0], 1: compose_attack([*STEAL, "seed=1", "query_budget=80"])}, monkeypatch)
    assert "run one by one (the jobs differ in query_budget)" in caplog.text


def test_ensemble_students_run_one_by_one(compose_attack, monkeypatch, caplog):
    configs = {n: compose_attack([*STEAL, f"seed={n}", "query_budget=60", "student.members=2"]) for n in range(2)}
    with caplog.at_level("INFO"):
        run_as_group(configs, monkeypatch)
    assert "run one by one (each job's student is an ensemble (student.members))" in caplog.text
