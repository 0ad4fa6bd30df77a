"""Launchers: hydra/launcher=joblib (parallel local jobs), hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml) and
hydra/launcher=vectorised (a sweep's batchable jobs fitted as one)."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.privacy_attacks_launchers.vectorised_launcher import VectorisedLauncher, group_jobs
from privacy_attacks.cli import KEPT
from tests.conftest import CONF_DIR, ROOT, TINY_INVERSION, run_script


def hydra_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="attack", overrides=["attack=inversion", *overrides], return_hydra_config=True).hydra


def test_basic_launcher_by_default_with_the_sweep_callbacks():
    hydra = hydra_config([])
    assert hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert [c._target_ for c in hydra.callbacks.values()] == [
        "privacy_attacks.callbacks.SweepCheck",
        "privacy_attacks.callbacks.SweepSummary",
        "privacy_attacks.callbacks.SweepProgress",
        "privacy_attacks.callbacks.sigterm.StopSweepOnSigterm",
    ]


def test_run_and_sweep_folders_are_named_to_the_microsecond():
    """Runs started in the same second from a shell get folders of their own (to the second, they shared one)."""
    hydra = hydra_config([])
    for key in ("run.dir", "sweep.dir"):
        name = Path(OmegaConf.select(hydra, key)).name
        assert datetime.datetime.strptime(name, "%Y-%m-%d_%H-%M-%S.%f").microsecond == int(name[-6:])


def test_joblib_runs_one_job_per_core_in_processes_and_keeps_the_callbacks():
    hydra = hydra_config(["hydra/launcher=joblib"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert hydra.launcher.n_jobs == -1 and hydra.launcher.prefer == "processes"
    assert list(hydra.callbacks) == ["check", "sweep_summary", "progress", "sigterm"]
    assert hydra_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]).launcher.n_jobs == 3


def test_gpu_pool_is_joblib_with_a_few_workers_sharing_the_card():
    hydra = hydra_config(["hydra/launcher=gpu_pool"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert hydra.launcher.n_jobs == 4 and hydra.launcher.prefer == "processes"
    assert list(hydra.callbacks) == ["check", "sweep_summary", "progress", "sigterm"]


def test_slurm_config_extends_submitit_slurm_with_our_defaults():
    hydra = hydra_config(["hydra/launcher=slurm"])
    assert hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert hydra.launcher.timeout_min == 120 and hydra.launcher.cpus_per_task == 4 and hydra.launcher.mem_gb == 16
    assert hydra.launcher.partition is None and hydra.launcher.gpus_per_node is None
    assert hydra.launcher.submitit_folder == f"{hydra.sweep.dir}/.submitit/%j"  # the plugin's keys are kept
    assert list(hydra.callbacks) == ["check", "sweep_summary", "progress", "sigterm"]


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


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_ends_it_and_its_workers_with_one_line(tmp_path, cache_dir):
    """The signal reaches the sweep's process only: it ends the sweep, and joblib ends the workers, whose jobs would
    otherwise go on writing into the sweep folder."""
    sweep = tmp_path / "sweep"
    tiny = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
    job = ["attack=gradient_inversion", *tiny, "private_pool=20", "steps=1000000", "seed=0,1", "threads=1"]  # no target
    args = [*job, "logger=none", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PRIVACY_ATTACKS_CACHE": str(cache_dir)}
    command = [sys.executable, str(ROOT / "attack.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a timing
        while time.monotonic() < deadline and len(list(sweep.glob("*/.hydra/overrides.yaml"))) < 2:
            time.sleep(0.5)
        time.sleep(3)  # the workers are in their jobs
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)  # the workers hold its pipes open while they live
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the sweep, should the test fail
    assert process.returncode == 143, stderr[-3000:]
    assert stderr.strip().endswith("error: stopped by SIGTERM; " + KEPT + ".")
    time.sleep(3)
    assert not list(sweep.glob("*/metrics.json"))  # no worker finished its job after the sweep ended


def test_a_job_takes_over_the_sweeps_sigterm_handler_and_gives_it_back(capsys):
    from omegaconf import OmegaConf

    from privacy_attacks.callbacks.sigterm import StopSweepOnSigterm, stop_sweep
    from privacy_attacks.cli import run_reporting_errors

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler of the test runner's")
    callback, config = StopSweepOnSigterm(), OmegaConf.create({})
    callback.on_multirun_start(config)
    try:
        assert signal.getsignal(signal.SIGTERM) is stop_sweep
        during = run_reporting_errors(lambda cfg: signal.getsignal(signal.SIGTERM), config)
        assert during not in (stop_sweep, signal.SIG_DFL)  # the job's own: a fit stops at a batch's end
        assert signal.getsignal(signal.SIGTERM) is stop_sweep
    finally:
        callback.on_multirun_end(config)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_vectorised_launcher_is_selected_by_one_key_and_keeps_the_callbacks():
    hydra = hydra_config(["hydra/launcher=vectorised"])
    assert hydra.launcher._target_ == "hydra_plugins.privacy_attacks_launchers.vectorised_launcher.VectorisedLauncher"
    assert hydra.launcher.group_size == 16 and list(hydra.callbacks) == [
        "check",
        "sweep_summary",
        "progress",
        "sigterm",
    ]
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        VectorisedLauncher(group_size=0)


def test_jobs_are_grouped_when_they_differ_only_in_vectorised_keys():
    keys = ["tv_lambda", "init", "seed"]
    jobs = [
        ["attack=inversion", "tv_lambda=0", "init=zeros", "steps=5"],
        ["attack=inversion", "tv_lambda=0.1", "init=zeros", "steps=5"],
        ["attack=inversion", "tv_lambda=0", "init=zeros", "steps=9"],  # steps is not batchable: its own group
        ["attack=inversion", "tv_lambda=0.1", "init=noise", "steps=5", "seed=2"],
        ["attack=inversion", "tv_lambda=0.1", "init=noise", "steps=9"],
    ]
    assert group_jobs(jobs, [keys] * 5, group_size=16) == [[0, 1, 3], [2, 4]]
    assert group_jobs(jobs, [keys] * 5, group_size=2) == [[0, 1], [2, 4], [3]]
    assert group_jobs(jobs, [[]] * 5, group_size=16) == [[0], [1], [2], [3], [4]]  # an attack without the keys


@pytest.mark.slow
def test_a_vectorised_sweep_writes_the_same_jobs_and_metrics_as_the_basic_launcher(tmp_path, cache_dir):
    """A 2 x 2 grid of tv_lambda x init: under hydra/launcher=vectorised the four jobs are fitted as one batch, and
    every job's metrics and loss curve are those of the job run alone."""
    grid = [
        *TINY_INVERSION,
        "tv_lambda=0,1e-2",
        "init=zeros,noise",
        "steps=8",
        "logger=tensorboard",
        "threads=1",
        "+trainer.enable_progress_bar=false",
    ]
    runs = {}
    for launcher in ("basic", "vectorised"):
        sweep = tmp_path / launcher
        args = ["-m", f"hydra/launcher={launcher}", *grid, f"hydra.sweep.dir={sweep}"]
        done = run_script("attack.py", args, tmp_path, cache_dir, timeout=300)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        runs[launcher] = (sweep, output)
    assert "jobs 0, 1, 2, 3 fitted as one batch" in runs["vectorised"][1]
    assert runs["vectorised"][1].count("fitted in one batch with 3 other jobs") == 4
    for job in range(4):
        alone, batched = (json.loads((runs[k][0] / str(job) / "metrics.json").read_text()) for k in runs)
        assert set(alone) == set(batched)
        for key in alone:
            if not key.endswith("_s"):
                assert batched[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key
        curves = [scalars(runs[k][0] / str(job) / "tensorboard", "inversion/loss") for k in runs]
        assert curves[0] == pytest.approx(curves[1], rel=1e-4, abs=1e-6) and len(curves[0]) == 8
    with open(runs["vectorised"][0] / "summary.csv", newline="") as handle:
        assert [(r["tv_lambda"], r["init"]) for r in csv.DictReader(handle)] == [
            ("0", "zeros"),
            ("0", "noise"),
            ("0.01", "zeros"),
            ("0.01", "noise"),
        ]


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` in the one event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_every_swept_value_is_checked_once_before_any_job():
    from privacy_attacks.callbacks.sweep_check import value_overrides

    grid = {"attack": ["inversion"], "tv_lambda": ["0", "0.1", "-1"], "init": ["zeros", "noise"]}
    assert value_overrides(grid) == [
        ["attack=inversion", "tv_lambda=0", "init=zeros"],
        ["attack=inversion", "tv_lambda=0.1", "init=zeros"],
        ["attack=inversion", "tv_lambda=-1", "init=zeros"],
        ["attack=inversion", "tv_lambda=0", "init=noise"],
    ]


@pytest.mark.parametrize("launcher", ["basic", "joblib", "vectorised"])
def test_a_bad_swept_value_stops_the_sweep_before_its_first_job(tmp_path, cache_dir, launcher):
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra/launcher={launcher}", *TINY_INVERSION, "tv_lambda=0,0.1,-1", f"hydra.sweep.dir={sweep}"]
    done = run_script("attack.py", args, tmp_path, cache_dir, timeout=300)
    assert done.returncode == 2 and "error: tv_lambda=-1 is not allowed" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(sweep.glob("*/metrics.json")) and not (cache_dir / "target").exists()  # no job, no training
    train = run_script(
        "train.py", ["-m", "model.max_epochs=1,0", f"hydra.sweep.dir={tmp_path / 't'}"], tmp_path, cache_dir
    )
    assert train.returncode == 2 and "error: model.max_epochs=0 is not allowed" in train.stderr
