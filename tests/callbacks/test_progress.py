"""The sweep progress callback: the job count of a multirun, the line each job logs, the time left."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from privacy_attacks.callbacks.progress import (
    SweepProgress,
    count_jobs,
    format_duration,
    progress_line,
    sweep_grid,
    time_left,
    time_left_grouped,
)
from privacy_attacks.engine.sweep import clear_plan, plan_groups
from tests.conftest import CONF_DIR


def multirun_config(overrides: list[str]) -> DictConfig:
    """``conf/attack.yaml`` composed as ``python attack.py -m <overrides>`` composes it (with its Hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config(
            config_name="attack", overrides=overrides, run_mode=RunMode.MULTIRUN
        )


def test_the_job_count_is_the_grid_of_the_command_line_and_the_sweeper_params():
    cfg = multirun_config(["experiment=inversion_lambda", "seed=0,1", "loss=ce,prob", "steps=3"])
    grid = sweep_grid(cfg)
    # the experiment sweeps tv_lambda over 3 values and seed over 5; the command line's seed wins
    assert grid == {
        "tv_lambda": ["0", "0.001", "0.01"],
        "seed": ["0", "1"],
        "experiment": ["inversion_lambda"],
        "loss": ["ce", "prob"],
        "steps": ["3"],
    }
    assert list(grid) == ["tv_lambda", "seed", "experiment", "loss", "steps"]  # the order of Hydra's grid
    assert count_jobs(grid) == 12
    assert count_jobs(sweep_grid(multirun_config(["attack=inversion", "steps=range(1,4)"]))) == 3  # any discrete sweep


def test_another_sweeper_has_no_count():
    cfg = multirun_config(["attack=inversion", "seed=0,1"])
    cfg.hydra.sweeper._target_ = "some.other.Sweeper"
    assert sweep_grid(cfg) is None


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (0, 44.6, 100, 3599, 3600 + 5 * 60 + 10)] == [
        "0s",
        "45s",
        "1m40s",
        "59m59s",
        "1h05m",
    ]


def test_the_time_left_counts_the_jobs_running_in_parallel():
    assert time_left([50.0, 30.0], total=10, number=3) == 40.0 * 8  # one job at a time: job 3 after 2 done
    assert time_left([50.0, 30.0], total=10, number=6) == 40.0 * 8 / 4  # job 6 starting with 2 done: 4 running
    assert progress_line(3, 10, "seed=1 loss=kl", [50.0, 50.0], 100.0) == (
        "job 3/10 (seed=1 loss=kl); 2 done in 1m40s, about 6m40s left"
    )
    assert progress_line(1, None, "", [], 0.0) == "job 1"


def test_a_vectorised_sweep_estimates_by_its_groups_first_jobs():
    # 2 groups' first jobs done in 100 s and 60 s, 1 other in 2 s: 3 first jobs and 4 others left
    assert time_left_grouped([100.0, 60.0], [2.0], total_firsts=5, total_followers=5) == 80.0 * 3 + 2.0 * 4
    assert time_left_grouped([100.0], [], total_firsts=2, total_followers=3) == 100.0  # the others' time unknown: 0
    assert time_left_grouped([], [], total_firsts=2, total_followers=3) is None
    assert progress_line(2, 4, "", [10.0], 10.0, left=5.0) == "job 2/4; 1 done in 10s, about 5s left"


def finish_job(sweep: Path, number: int, started: float, ended: float) -> None:
    """A job folder of a fake sweep that started and wrote its ``metrics.json`` at the given times."""
    hydra_dir = sweep / str(number) / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "overrides.yaml").write_text("- seed=0\n")
    os.utime(hydra_dir / "overrides.yaml", (started, started))
    (sweep / str(number) / "metrics.json").write_text("{}")
    os.utime(sweep / str(number) / "metrics.json", (ended, ended))


def test_each_job_logs_its_number_values_and_the_time_left(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    sweep = tmp_path / "sweep"
    cfg = multirun_config(["attack=inversion", "tv_lambda=0,1e-2", "seed=0,1,2", "steps=3", f"hydra.sweep.dir={sweep}"])
    finish_job(sweep, 0, 0.0, 1.0)  # from an earlier sweep into the same folder: not counted
    now = [1000.0]
    progress = SweepProgress(clock=lambda: now[0])
    progress.on_multirun_start(cfg)
    assert progress.total == 6 and progress.swept == ["tv_lambda", "seed"]

    job = OmegaConf.merge(cfg, {"hydra": {"job": {"num": 0}, "overrides": {"task": ["tv_lambda=0", "seed=0"]}}})
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.progress"):
        progress.on_job_start(job, task_function=None)
    assert caplog.messages[-1] == "job 1/6 (tv_lambda=0 seed=0)"

    finish_job(sweep, 0, 1000.0, 1030.0)  # job 0 run again
    finish_job(sweep, 1, 1010.0, 1060.0)
    now[0] = 1070.0
    job = OmegaConf.merge(cfg, {"hydra": {"job": {"num": 2}, "overrides": {"task": ["tv_lambda=0", "seed=2"]}}})
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.progress"):
        progress.on_job_start(job, task_function=None)
        progress.on_multirun_end(cfg)
    # 2 done, in 30 s and 50 s: 40 s for each of the 4 left, one at a time
    assert caplog.messages[-2] == "job 3/6 (tv_lambda=0 seed=2); 2 done in 1m10s, about 2m40s left"
    assert caplog.messages[-1] == "2 jobs done in 1m10s"


def test_a_single_run_logs_nothing(caplog: pytest.LogCaptureFixture):
    cfg = multirun_config(["attack=inversion"])
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.progress"):
        SweepProgress().on_job_start(cfg, task_function=None)
        SweepProgress().on_multirun_end(cfg)
    assert not caplog.messages


def test_under_a_vectorised_plan_the_time_left_counts_groups_not_jobs(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Two groups of three jobs (tv_lambda x seed, grouped by seed as the vectorised launcher groups them): the
    first job of the first group took 90 s for all three, the other two 1 s each; the mean over jobs would say
    3 x 30.7 s are left, the groups say one more first job (90 s) and two others (1 s each)."""
    sweep = tmp_path / "sweep"
    cfg = multirun_config(["attack=inversion", "tv_lambda=0,1e-2", "seed=0,1,2", "steps=3", f"hydra.sweep.dir={sweep}"])
    now = [1000.0]
    progress = SweepProgress(clock=lambda: now[0])
    progress.on_multirun_start(cfg)
    plan_groups([dict.fromkeys([0, 1, 2], cfg), dict.fromkeys([3, 4, 5], cfg)])
    try:
        for number in range(4):
            job = OmegaConf.merge(
                cfg,
                {
                    "hydra": {
                        "job": {"num": number},
                        "runtime": {"output_dir": str(sweep / str(number))},
                        "overrides": {"task": []},
                    }
                },
            )
            if number == 3:
                finish_job(sweep, 0, 1000.0, 1090.0)
                finish_job(sweep, 1, 1090.0, 1091.0)
                finish_job(sweep, 2, 1091.0, 1092.0)
                now[0] = 1092.0
            with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.progress"):
                progress.on_job_start(job, task_function=None)
    finally:
        clear_plan()
    assert caplog.messages[-1] == "job 4/6; 3 done in 1m32s, about 1m32s left"
