"""Feature inversion under hydra/launcher=vectorised: the jobs of a group, run in order, get the metrics they get
alone."""

from __future__ import annotations

import pytest

from privacy_attacks.engine import sweep
from privacy_attacks.pipelines import run_attack

TINY = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
FEATURE = [
    "attack=feature_inversion",
    "layer=conv2",
    "steps=6",
    "num_images=2",
    "private_pool=4",
    "init=noise",
    "inversion_network.train_images=100",
]
POINTS = [["tv_lambda=0", "seed=0"], ["tv_lambda=0.01", "seed=0"], ["tv_lambda=0.01", "seed=3"]]


def test_a_group_of_feature_inversions_gets_the_metrics_of_each_job_alone(compose_attack, monkeypatch, caplog):
    base = [*TINY, "target.members=200", "target.max_epochs=1", *FEATURE]
    alone = [run_attack(compose_attack([*base, *point])) for point in POINTS]
    configs = {number: compose_attack([*base, *point]) for number, point in enumerate(POINTS)}
    sweep.plan_groups([configs])
    try:
        for number, expected in enumerate(alone):
            monkeypatch.setattr(sweep, "this_job", lambda number=number: number)
            with caplog.at_level("INFO"):
                metrics = run_attack(configs[number])
            for key in ("recon/psnr", "recon/ssim", "recon/mse"):
                assert metrics[key] == pytest.approx(expected[key], rel=1e-4), key
        assert "jobs 0, 1, 2 fitted as one batch" in caplog.text
    finally:
        sweep.clear_plan()
