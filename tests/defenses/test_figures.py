"""The privacy–utility figure and table of a defence sweep, and the grid points the experiments sweep."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from privacy_attacks.defenses import defense_from_config
from privacy_attacks.defenses.figures import (
    defense_family,
    defense_level,
    privacy_utility_figure,
    privacy_utility_points,
)
from tests.conftest import CONF_DIR

ROWS = [
    {"defense": d, "method": m, "seed": s, "target/test_acc": acc + 0.001 * s, "mia/auc": auc + 0.01 * s}
    for d, acc, auc in (("none", 0.95, 0.60), ("grid/dpsgd_eps8", 0.93, 0.55), ("grid/dpsgd_eps1", 0.90, 0.51))
    for m in ("loss", "lira")
    for s in (0, 1, 2)
]


def test_grid_names_give_the_family_and_the_strength():
    assert (defense_family("grid/topk_3"), defense_level("grid/topk_3")) == ("topk", "3")
    assert (defense_family("grid/dpsgd_eps1"), defense_level("grid/dpsgd_eps1")) == ("dpsgd", "eps1")
    assert (defense_family("grid/reverse_sigmoid_low"), defense_level("grid/reverse_sigmoid_low")) == (
        "reverse_sigmoid",
        "low",
    )
    assert (defense_family("label_only"), defense_level("label_only")) == ("label_only", "")
    assert defense_family("none") == "none"


def test_points_are_seed_means_with_intervals_per_panel_and_defence():
    points = privacy_utility_points(ROWS, "target/test_acc", ["mia/auc"], panel="method")
    assert len(points) == 6 and {p["n_seeds"] for p in points} == {3}
    none_loss = next(p for p in points if p["defense"] == "none" and p["panel"] == "loss")
    assert none_loss["target/test_acc"] == pytest.approx(0.951)
    assert none_loss["mia/auc"] == pytest.approx(0.61)
    assert none_loss["mia/auc/ci95"] == pytest.approx(4.303 * 0.01 / 3**0.5, rel=1e-3)


def test_n_seeds_counts_distinct_seeds_and_n_jobs_counts_the_jobs_of_a_point(tmp_path):
    # The sweep also varies the evaluation set: two jobs per seed, method merged into one panel-less point.
    rows = [{**row, "eval_seed": e} for row in ROWS for e in (0, 1)]
    points = privacy_utility_points(rows, "target/test_acc", ["mia/auc"])
    assert len(points) == 3 and {(p["n_seeds"], p["n_jobs"]) for p in points} == {(3, 12)}
    assert all("n_jobs" not in p for p in privacy_utility_points(ROWS, "target/test_acc", ["mia/auc"], "method"))
    privacy_utility_figure(tmp_path, rows, success=["mia/auc"])
    table = (tmp_path / "privacy_utility.md").read_text()
    assert "| defense | n_seeds | n_jobs | target/test_acc | mia/auc |" in table
    assert "| none | 3 | 12 | " in table


def test_the_figure_and_its_table_are_written(tmp_path):
    path = privacy_utility_figure(tmp_path, ROWS, success=["mia/auc"], panel="method", title="DP")
    assert path == tmp_path / "privacy_utility.png" and path.stat().st_size > 0
    table = (tmp_path / "privacy_utility.md").read_text()
    assert "| method | defense | n_seeds | target/test_acc | mia/auc |" in table
    assert "| lira | grid/dpsgd_eps1 | 3 | 0.9010 ± 0.0025 | 0.5200 ± 0.0248 |" in table


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("privacy_utility_*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_grid_point_of_a_privacy_utility_experiment_builds_a_defence_its_attack_meets(name):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        swept = compose(config_name="attack", overrides=[f"experiment={name}"], return_hydra_config=True)
        points = str(OmegaConf.to_container(swept.hydra.sweeper.params)["defense"]).split(",")
        assert "none" in points and len(points) >= 4
        for point in points:
            cfg = compose(config_name="attack", overrides=[f"experiment={name}", f"defense={point}"])
            defense = defense_from_config(cfg)  # a ConfigError if the attack does not meet it
            assert (defense is None) == (point == "none")
    assert "privacy_utility" in swept.summary.figures
