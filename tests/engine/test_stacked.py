"""Stacked engines (the points of a sweep fitted as one batch) end where each would have ended alone; what cannot be
stacked is refused with the reason; the sweep plan fits a group once and hands each job its own engine."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from privacy_attacks.attacks.feature_inversion.matching import FeatureMatching
from privacy_attacks.attacks.inversion.objectives import (
    ClassInversion,
    CrossEntropySimilarity,
    LogitSimilarity,
    ProbabilitySimilarity,
)
from privacy_attacks.engine import ReconstructionModule, fit_reconstruction, sweep
from privacy_attacks.engine.inits import ConstantInit, NoiseInit
from privacy_attacks.engine.priors import GaussianBlur, Jitter, PixelEnergy, TotalVariation
from privacy_attacks.engine.stacked import StackedReconstruction, fit_stacked, stack_refusal
from privacy_attacks.models import LeNet5
from tests.conftest import RecordingLogger

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
ADAM = partial(torch.optim.Adam, lr=0.05)


@pytest.fixture
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


# Sweep points that differ in what a λ × init × loss × seed grid varies.
POINTS = [
    {"tv": 0.0, "l2": 0.0, "init": NoiseInit, "similarity": CrossEntropySimilarity, "seed": 0},
    {"tv": 1e-2, "l2": 0.0, "init": NoiseInit, "similarity": CrossEntropySimilarity, "seed": 0},
    {"tv": 1e-1, "l2": 1.0, "init": ConstantInit, "similarity": LogitSimilarity, "seed": 0},
    {"tv": 1e-2, "l2": 0.0, "init": NoiseInit, "similarity": ProbabilitySimilarity, "seed": 3},
]


def point_engine(net, point, steps=6, optimizer=ADAM, net_of_objective=None) -> ReconstructionModule:
    objective = ClassInversion(net_of_objective or net, torch.arange(10), point["similarity"]())
    priors = {
        "tv": TotalVariation(point["tv"]),
        "l2": PixelEnergy(point["l2"]),
        "jitter": Jitter(1),
        "blur": GaussianBlur(0.5, 2),
    }
    return ReconstructionModule(
        objective, priors, point["init"](), optimizer, steps, restarts=2, seed=point["seed"], log_prefix="inversion"
    )


def test_a_stacked_fit_ends_where_each_engine_ends_alone(frozen_net):
    alone = [fit_reconstruction(point_engine(frozen_net, p), TRAINER) for p in POINTS]
    together = [point_engine(frozen_net, p) for p in POINTS]
    stacked = fit_stacked(together, TRAINER, log_every=2)
    for single, member in zip(alone, together):
        torch.testing.assert_close(member.best_loss, single.best_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(member.best_images, single.best_images, rtol=1e-4, atol=1e-5)
        images, losses = member.reconstructions()
        assert images.shape == (10, 1, 28, 28) and losses.shape == (10,)
    # Each engine's curve, as it would have logged it alone: every log_every steps and the last, its loss and each
    # prior's part.
    assert [sorted(h) for h in stacked.history] == [[0, 2, 4, 5]] * len(POINTS)
    assert set(stacked.history[0][0]) == {"inversion/loss", "inversion/objective"}  # no penalty at weight 0
    assert set(stacked.history[2][0]) == {"inversion/loss", "inversion/objective", "inversion/l2", "inversion/tv"}
    assert stacked.history[1][0]["inversion/tv"] > 0 and stacked.history[1][0]["inversion/loss"] != pytest.approx(
        stacked.history[0][0]["inversion/loss"]
    )
    assert not frozen_net.training and all(p.grad is None for p in frozen_net.parameters())


def feature_engine(net, layer, features, tv, seed) -> ReconstructionModule:
    objective = FeatureMatching(net, layer, features)
    priors = {"tv": TotalVariation(tv), "jitter": Jitter(1)}
    return ReconstructionModule(objective, priors, NoiseInit(), ADAM, steps=6, restarts=2, seed=seed)


def test_feature_inversions_of_one_layer_stack_and_of_two_layers_do_not(frozen_net):
    torch.manual_seed(1)
    with torch.no_grad():
        features = frozen_net.features(torch.rand(3, 1, 28, 28))["conv2"]
    points = [(0.0, 0), (1e-2, 0), (1e-2, 5)]
    alone = [fit_reconstruction(feature_engine(frozen_net, "conv2", features, *p), TRAINER) for p in points]
    together = [feature_engine(frozen_net, "conv2", features, *p) for p in points]
    fit_stacked(together, TRAINER)
    for single, member in zip(alone, together):
        torch.testing.assert_close(member.best_images, single.best_images, rtol=1e-4, atol=1e-5)
    other_layer = feature_engine(frozen_net, "conv1", frozen_net.features(torch.rand(3, 1, 28, 28))["conv1"], 0, 0)
    assert stack_refusal([together[0], other_layer]) == "the engines invert different networks"


def test_what_cannot_be_stacked_is_refused_with_the_reason(frozen_net):
    other_net = LeNet5().eval().requires_grad_(False)
    point = POINTS[0]
    lbfgs = partial(torch.optim.LBFGS, lr=1.0, max_iter=1)
    cases = {
        "a single engine": [point_engine(frozen_net, point)],
        "different networks": [point_engine(frozen_net, point), point_engine(other_net, point)],
        "differ in steps": [point_engine(frozen_net, point), point_engine(frozen_net, point, steps=3)],
        "different optimisers": [point_engine(frozen_net, point), point_engine(frozen_net, point, optimizer=ADAM.func)],
        "L-BFGS": [point_engine(frozen_net, point, optimizer=lbfgs), point_engine(frozen_net, point, optimizer=lbfgs)],
    }
    for reason, modules in cases.items():
        assert reason in stack_refusal(modules)
        with pytest.raises(ValueError, match="cannot be fitted as one"):
            StackedReconstruction(modules)
    assert stack_refusal([point_engine(frozen_net, p) for p in POINTS]) is None


def test_an_engine_alone_logs_the_curve_a_stacked_fit_records_at_the_steps_it_was_measured(frozen_net):
    logger = RecordingLogger()
    fit_reconstruction(point_engine(frozen_net, POINTS[2], steps=7), TRAINER, logger=logger, log_every_n_steps=3)
    stacked = fit_stacked([point_engine(frozen_net, p, steps=7) for p in POINTS], TRAINER, log_every=3)
    assert [step for step, _ in logger.logged] == [0, 3, 6] == sorted(stacked.history[2])  # the first and the last
    for step, values in logger.logged:
        assert values.keys() == stacked.history[2][step].keys()  # no epoch column, no other name
        for name, value in values.items():
            assert value == pytest.approx(stacked.history[2][step][name], rel=1e-4, abs=1e-6)


def test_a_planned_group_is_fitted_once_and_each_job_gets_its_own_engine(frozen_net, monkeypatch):
    configs = {number: OmegaConf.create({"point": number}) for number in (4, 5, 6)}
    built = []

    def build(cfg):
        built.append(cfg.point)
        return point_engine(frozen_net, POINTS[cfg.point - 4])

    alone = fit_reconstruction(point_engine(frozen_net, POINTS[1]), TRAINER)
    sweep.plan_groups([configs, {7: OmegaConf.create({"point": 7})}])
    try:
        results = {}
        for number in (4, 5, 6):
            monkeypatch.setattr(sweep, "this_job", lambda number=number: number)
            logger = RecordingLogger()
            module, seconds, batched = sweep.fit_engine(configs[number], build, TRAINER, [logger], log_every=3)
            results[number] = (module, logger.logged, batched, seconds)
        assert built == [4, 5, 6]  # the first job built every engine of its group, once
        assert all(batched == 3 and seconds > 0 for _, _, batched, seconds in results.values())
        torch.testing.assert_close(results[5][0].best_loss, alone.best_loss, rtol=1e-4, atol=1e-5)
        assert [step for step, _ in results[6][1]] == [0, 3, 5] and "inversion/loss" in results[6][1][0][1]
        monkeypatch.setattr(sweep, "this_job", lambda: 7)  # a job alone in its group fits alone
        module, _, batched = sweep.fit_engine(
            OmegaConf.create({"point": 7}), lambda cfg: point_engine(frozen_net, POINTS[0]), TRAINER
        )
        assert batched == 1 and module.best_loss.isfinite().all()
    finally:
        sweep.clear_plan()


def test_a_group_that_cannot_be_stacked_fits_job_by_job(frozen_net, monkeypatch, caplog):
    lbfgs = partial(torch.optim.LBFGS, lr=1.0, max_iter=1)
    configs = {0: OmegaConf.create({}), 1: OmegaConf.create({})}
    sweep.plan_groups([configs])
    try:
        for number in configs:
            monkeypatch.setattr(sweep, "this_job", lambda number=number: number)
            with caplog.at_level("INFO"):
                _, _, batched = sweep.fit_engine(
                    configs[number], lambda cfg: point_engine(frozen_net, POINTS[0], optimizer=lbfgs), TRAINER
                )
            assert batched == 1
        assert "run one by one (L-BFGS" in caplog.text
    finally:
        sweep.clear_plan()


def test_a_group_whose_shared_work_fails_runs_job_by_job_and_each_job_keeps_its_own_outcome(monkeypatch, caplog):
    configs = {0: OmegaConf.create({"ok": True}), 1: OmegaConf.create({"ok": False})}

    def alone(cfg):
        if not cfg.ok:
            raise ValueError("job 1's own fault")
        return "done alone"

    def together(group):
        alone(group[1])  # a group-mate's fault
        return dict.fromkeys(group, "done together")

    sweep.plan_groups([configs])
    try:
        monkeypatch.setattr(sweep, "this_job", lambda: 0)
        with caplog.at_level("WARNING"):
            assert sweep.run_grouped(configs[0], alone, together) == ("done alone", 1)
        assert "the shared work failed: ValueError: job 1's own fault" in caplog.text
        monkeypatch.setattr(sweep, "this_job", lambda: 1)
        with pytest.raises(ValueError, match="job 1's own fault"):
            sweep.run_grouped(configs[1], alone, together)
    finally:
        sweep.clear_plan()
