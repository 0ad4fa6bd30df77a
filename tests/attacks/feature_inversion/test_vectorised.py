"""Feature inversion under hydra/launcher=vectorised: the jobs of a group, run in order, get the metrics they get
alone."""

from __future__ import annotations

import pytest

from privacy_attacks.pipelines import run_attack
from tests.conftest import run_as_group

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
    with caplog.at_level("INFO"):
        grouped = run_as_group(configs, monkeypatch)
    assert "jobs 0, 1, 2 fitted as one batch" in caplog.text
    for number, expected in enumerate(alone):
        for key in ("recon/psnr", "recon/ssim", "recon/mse"):
            assert grouped[number][key] == pytest.approx(expected[key], rel=1e-4), key


def test_a_group_of_jobs_of_which_only_some_use_the_inversion_network_gets_each_jobs_metrics_alone(
    compose_attack, monkeypatch
):
    base = [*TINY, "target.members=200", "target.max_epochs=1", *FEATURE, "inversion_network.epochs=1"]
    # The first job needs no guess (conv2's defaults are init=network, anchor_lambda=0.03), the others do.
    points = [["init=noise", "anchor_lambda=0"], ["init=network", "anchor_lambda=0"], ["anchor_lambda=0.03"]]
    alone = [run_attack(compose_attack([*base, *point])) for point in points]
    grouped = run_as_group({n: compose_attack([*base, *point]) for n, point in enumerate(points)}, monkeypatch)
    for number, expected in enumerate(alone):
        assert grouped[number]["recon/psnr"] == pytest.approx(expected["recon/psnr"], rel=1e-4)
