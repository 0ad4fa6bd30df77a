"""Model stealing by distillation: losses against the lecture's formulas, query pools, the reusable
``distil`` (exact query cost), bad input, and real runs (in-process and a multirun subprocess)."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from privacy_attacks.attacks.stealing import LOSSES, MNISTPool, NoisePool, distil, fit_student, steps_for_budget
from privacy_attacks.attacks.stealing.distillation import ResampledBatches, random_shift
from privacy_attacks.attacks.stealing.losses import HintonKL, LectureKL, SoftCrossEntropy, SquaredError
from privacy_attacks.attacks.stealing.pools import EVALUATION_SIZE, FashionMNISTPool, evaluation_split
from privacy_attacks.blackbox import BlackBoxAPI, Label, Logits, Probabilities, QueryBudgetExceeded
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError, DataUnavailableError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import seeded
from privacy_attacks.targets import provision_target
from tests.conftest import run_script

TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.5, -1.0, 3.0]])
STUDENT = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------- losses


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
    assert LOSSES["hard"]()(STUDENT, labels, Label(num_classes=3)).item() == pytest.approx(expected_hard, rel=1e-5)


@pytest.mark.parametrize("mode", [Probabilities(), Logits()])
@pytest.mark.parametrize("name", ["mse", "kl", "kl_hinton"])
def test_loss_is_zero_when_student_outputs_equal_teacher_outputs(name, mode):
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(1)) * 3
    loss = LOSSES[name](temperature=1.0) if name != "mse" else LOSSES[name]()
    assert loss(logits, mode.answer(logits), mode).item() == pytest.approx(0.0, abs=1e-5)


def test_lecture_kl_is_zero_when_the_student_equals_the_softened_teacher():
    # With tau != 1 the lecture compares Softmax(f / tau) with Softmax(g): zero at g = f / tau.
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(2)) * 3
    assert LectureKL(4.0)(logits / 4.0, logits.softmax(-1), Probabilities()).item() == pytest.approx(0.0, abs=1e-5)
    assert LectureKL(4.0)(logits, logits.softmax(-1), Probabilities()).item() > 0.01


def test_label_losses_vanish_when_the_student_is_certain_of_the_answered_label():
    labels = torch.tensor([3, 7])
    certain = torch.nn.functional.one_hot(labels, 10).float() * 100.0
    for name in ("mse", "soft_ce", "hard", "kl"):
        loss = LOSSES[name]() if name != "kl" else LOSSES[name](temperature=1.0)
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


# ---------------------------------------------------------------- pools, schedule, augmentation


def test_mnist_pool_and_both_evaluation_sets_are_disjoint_by_construction():
    pool = MNISTPool(val_size=5000, split_seed=0)
    sources = pool.sources()
    validation = set(split_training_indices(5000, 0)["val"].tolist())
    assert not set(range(EVALUATION_SIZE)) & set(sources["test"].tolist())  # the report set: test images 0-4,999
    assert not validation & set(sources["train"].tolist())  # the tune set: the validation split
    assert len(sources["train"]) + len(sources["test"]) == pool.size == 60_000


@pytest.mark.mnist
def test_mnist_pool_holds_no_evaluation_image():
    from tests.conftest import mnist_root

    pool = MNISTPool(mnist_root()).load()
    pool_keys = {bytes(img.mul(255).round().to(torch.uint8).numpy()) for img in pool}
    assert len(pool) == 60_000
    for which in ("report", "tune"):
        eval_images, _ = evaluation_split(mnist_root(), which=which)
        assert len(eval_images) == EVALUATION_SIZE
        eval_keys = [bytes(img.mul(255).round().to(torch.uint8).numpy()) for img in eval_images]
        # MNIST has a few exact duplicate digits across files; none of the evaluation images is queried by index.
        assert sum(k in pool_keys for k in eval_keys) <= 5


def test_pool_take_is_seeded_prefix_and_budget_is_checked():
    pool = NoisePool(size=1000)
    assert torch.equal(pool.take(10, seed=3), pool.take(10, seed=3))
    assert not torch.equal(pool.take(10, seed=3), pool.take(10, seed=4))
    for bad in (0, -5, 1001):
        with pytest.raises(ConfigError, match="query_budget"):
            pool.take(bad)


def test_missing_fashion_mnist_says_what_to_set(tmp_path):
    pool = FashionMNISTPool(root=str(tmp_path))
    with pytest.raises(
        DataUnavailableError, match="dataset-fashion-mnist.*pools.fashion_mnist.root=.*FASHION_MNIST_ROOT="
    ):
        pool.load()


@pytest.mark.skipif(
    not FashionMNISTPool().available(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_pool_reads_the_debian_package():
    images = FashionMNISTPool().take(20, seed=0)
    assert images.shape == (20, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


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


# ---------------------------------------------------------------- distil: exact query cost


@pytest.fixture
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def test_distil_costs_exactly_one_query_per_image_and_trains_the_student(teacher):
    api = BlackBoxAPI(teacher, "probs", budget=64)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    student = LeNet5()
    before = [p.detach().clone() for p in student.parameters()]
    out = distil(api, images, student, "kl", steps=3, temperature=2.0, batch_size=16)
    assert out is student and not out.training
    assert api.queries_used == 64 and api.num_calls == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))
    with pytest.raises(QueryBudgetExceeded):
        distil(api, images[:1], LeNet5(), "kl", steps=1)
    assert api.queries_used == 64


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_lowers_itself_on_cached_answers(name):
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    mode = Probabilities()
    answers = mode.answer(torch.randn(32, 10, generator=torch.Generator().manual_seed(2)) * 3)  # confident answers
    loss = LOSSES[name](temperature=2.0) if name in ("kl", "kl_hinton") else LOSSES[name]()
    torch.manual_seed(0)
    student = LeNet5()
    with torch.no_grad():
        before = loss(student(images), answers, mode).item()
    fit_student(student, images, answers, mode, loss, steps=30, batch_size=32, shift=0)
    with torch.no_grad():
        after = loss(student(images), answers, mode).item()
    assert after < before


# ---------------------------------------------------------------- the attack config


@pytest.mark.parametrize(
    "override, message",
    [
        ("query_budget=0", "query_budget=0 is not allowed"),
        ("query_budget=-5", "query_budget=-5 is not allowed"),
        ("query_budget=70000", "mnist query pool holds 60000 images"),
        ("evaluation=test", "evaluation='test' is not one of the choices: report, tune"),
        ("queries=noise query_budget=100001", "noise query pool holds 100000"),
        ("loss=l1", "loss='l1' is not one of the choices: mse, kl, kl_hinton, soft_ce, hard"),
        ("api.output=top5", "api.output='top5' is not one of the choices: probs, logits, label, rounded"),
        ("queries=cifar", "queries='cifar' is not one of the choices: mnist, fashion_mnist, noise"),
        ("temperature=0", "temperature=0"),
        ("temperature=-2", "temperature=-2"),
    ],
)
def test_bad_input_fails_before_any_work(compose_attack, tmp_path, override, message):
    cfg = compose_attack(["attack=distillation", *override.split(), f"paths.cache_dir={tmp_path}/empty_cache"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists() or not any((tmp_path / "empty_cache").iterdir())


def test_local_shifts_only_below_the_shift_budget(compose_attack):
    from privacy_attacks.attacks.stealing.attack import student_shift

    assert student_shift(compose_attack(["attack=distillation", "query_budget=1000"])) == 1
    assert student_shift(compose_attack(["attack=distillation", "query_budget=10000"])) == 0
    assert (
        student_shift(compose_attack(["attack=distillation", "query_budget=10000", "student.shift_max_budget=null"]))
        == 1
    )


def test_headline_overrides_compose(compose_attack):
    cfg = compose_attack(
        ["attack=distillation", "loss=mse", "query_budget=10000", "api.output=rounded", "api.decimals=3"]
    )
    assert cfg.loss == "mse" and cfg.query_budget == 10000 and cfg.queries == "mnist"
    assert cfg.losses.kl.temperature == cfg.temperature
    assert cfg.api.outputs.rounded.decimals == 3
    assert OmegaConf.select(cfg, "summary.figure._target_").endswith("accuracy_vs_queries")


def test_a_fit_neither_reads_nor_moves_the_global_rng(teacher):
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    answers = Probabilities().answer(teacher(images))
    fitted = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)
        with seeded(5, "student"):
            student = LeNet5()
        fit_student(student, images, answers, "probs", "kl", steps=4, batch_size=8, shift=2, seed=7)
        fitted.append(student.state_dict())
        state = torch.get_rng_state()
        torch.manual_seed(global_seed)
        assert torch.equal(state, torch.get_rng_state())  # the fit left the caller's RNG where it was
    assert all(torch.equal(fitted[0][k], fitted[1][k]) for k in fitted[0])


@pytest.mark.mnist
def test_distillation_run_writes_metrics_and_student(compose_attack, monkeypatch):
    from privacy_attacks.attacks.stealing import attack

    started, real_distil = [], attack.distil

    def spy_distil(api, images, net, *args, **kwargs):
        started.append({k: v.clone() for k, v in net.state_dict().items()})
        return real_distil(api, images, net, *args, **kwargs)

    monkeypatch.setattr(attack, "distil", spy_distil)
    cfg = compose_attack(["attack=distillation", "query_budget=200", "schedule.steps=20", "api.output=rounded"])
    assert cfg.seed == cfg.target.seed == 0  # the defaults that once gave the student the target's initial weights
    metrics = run_attack(cfg)
    out = cfg.paths.output_dir
    assert metrics["queries/used"] == 200 and metrics["steps"] == 20
    torch.manual_seed(cfg.target.seed)  # the target's training seeds the global RNG, then builds its network
    target_init = instantiate(cfg.target.net).state_dict()
    assert not any(torch.equal(started[0][k], target_init[k]) for k in target_init if k.endswith("weight"))
    assert metrics == run_attack(cfg) | {"fit_time_s": metrics["fit_time_s"]}  # same seed, same numbers
    saved = torch.load(Path(out) / "student.pt", weights_only=True)
    LeNet5().load_state_dict(saved["state_dict"])
    assert json.loads((Path(out) / "metrics.json").read_text())["queries/used"] == 200


@pytest.mark.mnist
def test_tune_evaluation_scores_on_the_validation_split(compose_attack):
    cfg = compose_attack(["attack=distillation", "query_budget=100", "schedule.steps=5", "evaluation=tune"])
    report = compose_attack(["attack=distillation", "query_budget=100", "schedule.steps=5"])
    tuned, reported = run_attack(cfg), run_attack(report)
    target = provision_target(cfg)
    assert tuned["target/acc"] == pytest.approx(target.metrics["val/acc"], abs=1e-6)  # the validation split itself
    assert reported["target/acc"] != tuned["target/acc"]


@pytest.mark.slow
@pytest.mark.mnist
def test_multirun_subprocess_writes_summary_and_figure(tmp_path, cache_dir):
    args = [
        "-m",
        "attack=distillation",
        "loss=mse,kl",
        "query_budget=30,60",
        "schedule.steps=5",
        *[f"target.{o}" for o in ("max_epochs=2", "members=5000")],
        "logger=none",
        "+trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    result = run_script("attack.py", args, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    lines = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4
    assert "student/agreement" in lines[0] and "loss" in lines[0]
    assert (sweep / "accuracy_vs_queries.png").stat().st_size > 0
    assert "Sweep summary" in result.stdout
    for job in range(4):
        assert (sweep / str(job) / "student.pt").exists()
