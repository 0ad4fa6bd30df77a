"""Launchers: hydra/launcher=joblib (parallel local jobs) and hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml)."""

from __future__ import annotations

import csv
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from tests.conftest import CONF_DIR, run_script


def hydra_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="attack", overrides=["attack=inversion", *overrides], return_hydra_config=True).hydra


def test_basic_launcher_by_default_with_the_sweep_callbacks():
    hydra = hydra_config([])
    assert hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert [c._target_ for c in hydra.callbacks.values()] == [
        "privacy_attacks.callbacks.SweepSummary",
        "privacy_attacks.callbacks.SweepProgress",
    ]


def test_joblib_runs_one_job_per_core_in_processes_and_keeps_the_callbacks():
    hydra = hydra_config(["hydra/launcher=joblib"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert hydra.launcher.n_jobs == -1 and hydra.launcher.prefer == "processes"
    assert list(hydra.callbacks) == ["sweep_summary", "progress"]
    assert hydra_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]).launcher.n_jobs == 3


def test_gpu_pool_is_joblib_with_a_few_workers_sharing_the_card():
    hydra = hydra_config(["hydra/launcher=gpu_pool"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert hydra.launcher.n_jobs == 4 and hydra.launcher.prefer == "processes"
    assert list(hydra.callbacks) == ["sweep_summary", "progress"]


def test_slurm_config_extends_submitit_slurm_with_our_defaults():
    hydra = hydra_config(["hydra/launcher=slurm"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert hydra.launcher.timeout_min == 120 and hydra.launcher.cpus_per_task == 4 and hydra.launcher.mem_gb == 16
    assert hydra.launcher.partition is None and hydra.launcher.gpus_per_node is None
    assert hydra.launcher.submitit_folder == f"{hydra.sweep.dir}/.submitit/%j"  # the plugin's keys are kept
    assert list(hydra.callbacks) == ["sweep_summary", "progress"]


def test_slurm_jobs_get_one_torch_thread_per_cpu_of_their_task():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="attack",
            overrides=["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=8", "hydra.launcher.gpus_per_node=1"],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)  # builds nothing on a cluster until it launches
    assert launcher.params["setup"] == ["export OMP_NUM_THREADS=8"]
    assert launcher.params["gpus_per_node"] == 1


@pytest.mark.mnist
@pytest.mark.slow
def test_a_joblib_multirun_runs_two_jobs_in_parallel_and_writes_the_summary(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1",
        "threads=1",
        "model.max_epochs=1",
        "model.members=1000",
        "callbacks=none",
        "logger=none",
        "data.download=false",
        "+trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    ]
    done = run_script("train.py", args, tmp_path, cache_dir, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["seed"]) for r in rows] == [("0", "0"), ("1", "1")]
    assert "Joblib.Parallel(n_jobs=2" in output
    assert output.count("Sweep summary") == 1  # the summary callback runs once, in the sweeping process
    assert output.count("torch threads: 1") == 2  # threads= applies inside the worker processes
    assert sorted(re.findall(r"job (\d)/2 \(seed=(\d)\)", output)) == [("1", "0"), ("2", "1")]
