"""The lab command: its stages' command lines, resuming, and the report it writes."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from privacy_attacks import lab
from privacy_attacks.errors import ConfigError
from privacy_attacks.report import Stage, job_pictures, stage_setting, stage_table, write_report
from tests.conftest import CONF_DIR, mnist_root


def lab_config(overrides: list[str] = (), hydra_record: bool = False) -> DictConfig:
    """``conf/lab.yaml`` with ``overrides``; ``hydra_record``: with Hydra's node, whose ``runtime.choices`` the lab
    reads its ``data=`` and ``model=`` from (as ``python -m privacy_attacks.lab`` does from Hydra's record)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="lab", overrides=list(overrides), return_hydra_config=hydra_record)


def test_every_stage_is_a_train_run_or_an_experiment_multirun_with_the_seeds_and_trainer(tmp_path: Path):
    cfg = lab_config(["seeds=3"])
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "gpu", tmp_path / name)
        assert "trainer=gpu" in command
        if stage.script == "train.py":
            assert command[0] == "train.py" and f"hydra.run.dir={tmp_path / name}" in command
        else:
            assert command[:2] == ["attack.py", "-m"] and "seed=0,1,2" in command
            assert any(arg.startswith("experiment=") for arg in command)
            assert f"hydra.sweep.dir={tmp_path / name}" in command


def test_every_stage_composes_as_an_attack_config():
    cfg = lab_config()
    for stage in cfg.stages.values():
        if stage.script == "attack.py":
            # Sweep values (a,b) are passed to Hydra's sweeper; composing takes each key's first value.
            overrides = [o.split(",")[0] if "," in o else o for o in stage.overrides]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                compose(config_name="attack", overrides=overrides)


def test_only_names_known_stages():
    assert lab.selected_stages(lab_config(["only=[stealing,target]"])) == ["target", "stealing"]
    with pytest.raises(ConfigError, match="no stage"):
        lab.selected_stages(lab_config(["only=[stealng]"]))


def test_stage_table_shows_seed_means_with_intervals(tmp_path: Path):
    (tmp_path / "summary_seeds.csv").write_text("loss,n_seeds,acc/mean,acc/ci95\nkl,3,0.98765,0.0021\n")
    (tmp_path / "summary.csv").write_text("job,loss,seed,acc\n0,kl,0,0.98\n")
    header, rows, source = stage_table(tmp_path)
    assert source == "summary_seeds.csv"
    assert header == ["loss", "n_seeds", "acc"] and rows == [["kl", "3", "0.9877 ± 0.0021"]]
    (tmp_path / "summary_seeds.csv").unlink()
    header, rows, source = stage_table(tmp_path)
    assert source == "summary.csv" and header == ["seed", "acc"] and rows == [["0", "0.98"]]


def test_stage_table_shows_one_seed_missing_intervals_and_infinities(tmp_path: Path):
    """A setting with one seed (its ci95 NaN), one scenario (ci95_scenario NaN) and ε = inf: cells, not a crash."""
    (tmp_path / "summary_seeds.csv").write_text(
        "loss,n_seeds,acc/mean,acc/ci95,acc/ci95_scenario,eps/mean,eps/ci95\nkl,1,0.98765,nan,nan,inf,nan\n"
    )
    header, rows, _ = stage_table(tmp_path)
    assert header == ["loss", "n_seeds", "acc", "eps"] and rows == [["kl", "1", "0.9877", "inf"]]


@pytest.mark.mnist
@pytest.mark.slow
def test_the_lab_writes_one_report_and_resumes_without_rerunning(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PRIVACY_ATTACKS_CACHE", str(cache_dir))
    monkeypatch.setenv("MNIST_ROOT", mnist_root())
    cfg = lab_config([f"lab_dir={tmp_path}"])
    tiny_target = ["target.max_epochs=1", "target.members=2000"]
    with open_dict(cfg):
        cfg.stages = OmegaConf.create(
            {
                "target": {
                    "title": "A tiny target",
                    "script": "train.py",
                    "overrides": ["model.max_epochs=1", "model.members=1000", "+trainer.enable_progress_bar=false"],
                },
                "stealing": {
                    "title": "Distillation",
                    "script": "attack.py",
                    "overrides": ["attack=distillation", *tiny_target, "query_budget=50,100", "schedule.steps=10"],
                },
            }
        )
    lab.run_lab(cfg)
    report = (tmp_path / "report.md").read_text()
    assert "## A tiny target" in report and "## Distillation" in report
    assert "python attack.py -m attack=distillation" in report and "seed=0" in report
    assert "student/agreement" in report and "test/acc" in report
    assert "torch:" in report and "device: CPU" in report
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    state = json.loads((tmp_path / "state.json").read_text())
    assert {entry["status"] for entry in state.values()} == {"done"}

    def not_again(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(lab, "run_stage", not_again)
    lab.run_lab(cfg)
    assert capsys.readouterr().out.count("not run again") == 2


def test_saving_the_state_leaves_another_writers_temporary_file_alone(tmp_path: Path):
    squatter = tmp_path / "state.tmp"  # another lab process's write in progress, at what was a fixed name
    squatter.write_text("another writer's half-written state")
    state = {"target": {"status": "done", "seconds": 1.5, "command": "python train.py"}}
    lab.save_state(tmp_path, state)
    assert lab.load_state(tmp_path) == state
    assert squatter.read_text() == "another writer's half-written state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.tmp"]  # no temporary file left


def test_a_failed_stage_is_reported_and_retried(tmp_path, monkeypatch):
    cfg = lab_config([f"lab_dir={tmp_path}", "only=[target]"])
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: 1)
    with pytest.raises(SystemExit, match="target failed"):
        lab.run_lab(cfg)
    assert json.loads((tmp_path / "state.json").read_text())["target"]["status"] == "failed (1)"
    assert "failed (1)" in (tmp_path / "report.md").read_text()
    stale = tmp_path / "target" / "3" / "metrics.json"  # a job of the failed attempt
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    calls = []
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: calls.append(command) or 0)
    lab.run_lab(cfg)
    assert len(calls) == 1
    assert not stale.exists()  # a stage runs afresh: no job of an earlier attempt mixes with its own


def test_the_lab_fixes_the_scenario_draw_of_the_experiments_that_sweep_one():
    """Headline experiments sweep the victim's draw (summary.scenario); the lab runs one draw of each, so its
    stages stay at minutes."""
    lab = OmegaConf.load(CONF_DIR / "lab.yaml")
    for name, stage in lab.stages.items():
        experiments = [str(o).split("=", 1)[1] for o in stage.overrides if str(o).startswith("experiment=")]
        for experiment in experiments:
            node = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml")
            for key in OmegaConf.select(node, "summary.scenario") or []:
                assert any(str(o).startswith(f"{key}=") and "," not in str(o) for o in stage.overrides), (name, key)


def composed_stage(command: list[str]) -> DictConfig:
    """The config one stage's command composes (a sweep's first value of each key), with Hydra's record."""
    script = command[0]
    kept = [a for a in command[1:] if a != "-m" and (a.startswith("hydra.searchpath=") or not a.startswith("hydra."))]
    overrides = [a.split(",")[0] if "," in a and "[" not in a else a for a in kept]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=script.removesuffix(".py"), overrides=overrides, return_hydra_config=True)


def test_data_and_model_reach_every_stage_as_its_script_names_them(tmp_path: Path):
    cfg = lab_config(["data=fashion_mnist", "model=cnn"], hydra_record=True)
    choices = lab.lab_choices(cfg)
    assert choices == {"data": "fashion_mnist", "model": "cnn"}
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "cpu", tmp_path / name, choices)
        assert "data=fashion_mnist" in command, name
        model = "model=cnn" if stage.script == "train.py" else "model@target=cnn"
        assert model in command, name
        composed = composed_stage(command)  # the experiment configs do not pin the data or the target
        assert composed.data.name == "fashion_mnist", name
        assert composed.hydra.runtime.choices["model" if stage.script == "train.py" else "model@target"] == "cnn"


def test_a_net_reaches_every_stages_target_recipe_keeping_its_training_settings(tmp_path: Path):
    cfg = lab_config(["net=cnn"], hydra_record=True)
    choices = lab.lab_choices(cfg)
    assert choices == {"net": "cnn"}
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "cpu", tmp_path / name, choices)
        group = "net@model.net" if stage.script == "train.py" else "net@target.net"
        assert f"{group}=cnn" in command, name
        composed = composed_stage(command)
        recipe = composed.model if stage.script == "train.py" else composed.target
        assert recipe.net._target_ == "privacy_attacks.models.SmallVGG", name
    membership = composed_stage(lab.stage_command(cfg.stages.membership, 1, "cpu", tmp_path, choices))
    assert membership.hydra.runtime.choices["model@target"] == "lenet5_members"  # its own recipe, on the CNN
    assert (membership.target.max_epochs, membership.target.batch_size) == (30, 32)


def test_the_labs_settings_of_data_model_and_net_keys_and_its_own_configs_reach_every_stage(tmp_path: Path):
    """A researcher's own network config, found on the lab's search path, and settings of the data, the target
    recipe and its network: every stage composes with them, under its script's keys."""
    own = tmp_path / "own_conf" / "net"
    own.mkdir(parents=True)
    (own / "own_mlp.yaml").write_text((CONF_DIR / "net" / "mlp.yaml").read_text())
    settings = ["data.num_classes=4", "data.image_shape=[3,20,20]", "model.members=500", "net.width=64"]
    chosen = ["data=synthetic", "model=mlp", "net=own_mlp", f"hydra.searchpath=[file://{own.parent}]"]
    cfg = lab_config([*chosen, *settings], hydra_record=True)
    forwarded = lab.lab_forwarded(cfg)
    assert forwarded == lab.Forwarded(tuple(settings), (f"file://{own.parent}",))
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "cpu", tmp_path / name, lab.lab_choices(cfg), forwarded)
        composed = composed_stage(command)
        recipe = composed.model if stage.script == "train.py" else composed.target
        assert list(composed.data.image_shape) == [3, 20, 20] and composed.data.num_classes == 4, name
        assert recipe.members == 500 and recipe.net.width == 64, name
    assert lab.lab_forwarded(lab_config(["data=synthetic", "data.num_classes=4"])) == lab.Forwarded()  # no record
    added = lab.Forwarded(("+model.label_smoothing=0.1", "~data.mean", "++net.width=8"))  # may be keys of a stage
    assert added.arguments("attack.py") == ["++target.label_smoothing=0.1", "~data.mean", "++target.net.width=8"]


def test_without_data_or_model_each_stage_keeps_its_own(tmp_path: Path):
    cfg = lab_config(hydra_record=True)
    assert lab.lab_choices(cfg) == {}
    assert lab.lab_choices(lab_config()) == {}  # composed without Hydra's record
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "cpu", tmp_path / name, {})
        assert not any(a.startswith(("data=", "model=", "model@target=", "net@")) for a in command), name
    membership = lab.stage_command(cfg.stages.membership, 1, "cpu", tmp_path, {})
    assert composed_stage(membership).hydra.runtime.choices["model@target"] == "lenet5_members"


def test_the_lab_runs_every_stage_with_its_data_and_model_and_names_them(tmp_path, monkeypatch):
    cfg = lab_config([f"lab_dir={tmp_path}", "data=synthetic", "model=mlp", "net=cnn"], hydra_record=True)
    commands = {}
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: commands.update({log_file.stem: command}) or 0)
    lab.run_lab(cfg)
    assert list(commands) == list(cfg.stages)
    for name, command in commands.items():
        assert "data=synthetic" in command and ("model=mlp" in command or "model@target=mlp" in command), name
    report = (tmp_path / "report.md").read_text()
    assert "- data: synthetic" in report and "- model: mlp" in report and "- net: cnn" in report
    assert "net@target.net=cnn" in commands["membership"] and "net@model.net=cnn" in commands["target"]
    assert "data=synthetic" in json.loads((tmp_path / "state.json").read_text())["membership"]["command"]
    assert "<li>data: synthetic</li>" in (tmp_path / "report.html").read_text()


def write_job(sweep: Path, job: int, overrides: list[str], picture: str | None = "reconstructions.png") -> None:
    (sweep / str(job) / ".hydra").mkdir(parents=True)
    (sweep / str(job) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if picture:
        (sweep / str(job) / picture).write_bytes(b"\x89PNG picture of job %d" % job)


def test_stages_with_pictures_show_every_jobs_reconstructions(tmp_path: Path):
    sweep = tmp_path / "feature_inversion"
    for job, layer in enumerate(["conv1", "conv2", "fc1"]):
        write_job(sweep, job, ["experiment=feature_layers", f"layer={layer}", "seed=0"])
    write_job(sweep, 3, ["experiment=feature_layers", "layer=fc2", "seed=0"], picture=None)  # unfinished
    (sweep / "quality.png").write_bytes(b"\x89PNG line plot")
    assert [caption for caption, _ in job_pictures(sweep, "reconstructions.png")] == [
        "layer=conv1",
        "layer=conv2",
        "layer=fc1",
    ]
    stages = [Stage("feature_inversion", "Feature inversion", "python attack.py -m", sweep, "reconstructions.png")]
    write_report(tmp_path, stages, {}, {"accelerator": "cpu"}, {"data": "fashion_mnist"})
    report = (tmp_path / "report.md").read_text()
    assert "- data: fashion_mnist" in report and "- model: each stage's own" in report
    assert "(feature_inversion/quality.png)" in report
    for job, layer in enumerate(["conv1", "conv2", "fc1"]):
        assert f"![feature_inversion: layer={layer}](feature_inversion/{job}/reconstructions.png)" in report
    page = (tmp_path / "report.html").read_text()
    assert page.count("<figure>") == 3 and "<figcaption>layer=conv2</figcaption>" in page
    assert page.count("data:image/png;base64,") == 4  # the sweep's figure and three jobs' reconstructions


def test_each_stage_names_the_data_and_model_it_ran_on(tmp_path: Path):
    run = tmp_path / "target" / ".hydra"
    run.mkdir(parents=True)
    (run / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      data: cifar10\n      model: cnn\n")
    (run / "config.yaml").write_text("seed: 0\n")
    assert stage_setting(tmp_path / "target") == [("data", "cifar10"), ("model", "cnn")]
    sweep = tmp_path / "gradient_inversion"
    sweep.mkdir()
    choices = "hydra:\n  runtime:\n    choices:\n      data: cifar10\n      model@target: cnn\n"
    (sweep / "multirun.yaml").write_text(choices + "shared_model: lenet5_sigmoid\n")
    assert stage_setting(sweep) == [("data", "cifar10"), ("model", "lenet5_sigmoid (the clients' shared model)")]
    (sweep / "multirun.yaml").write_text(choices + "shared_model: target\n")
    assert stage_setting(sweep) == [("data", "cifar10"), ("model", "cnn")]
    assert stage_setting(tmp_path / "not_run") == []
    stages = [Stage("target", "The target", "python train.py", tmp_path / "target")]
    write_report(tmp_path, stages, {}, {"accelerator": "cpu"}, {"data": "cifar10", "model": "cnn"})
    assert "On data cifar10, model cnn." in (tmp_path / "report.md").read_text()


def test_tables_fit_the_page(tmp_path: Path):
    sweep = tmp_path / "membership"
    for job, method in enumerate(["lira", "loss"]):
        write_job(sweep, job, [f"method={method}", "seed=0"], picture=None)
    long_value = "a-setting-with-a-very-long-value-" * 3
    (sweep / "summary.csv").write_text(
        "job,method,note,seed,mia/auc,mia/tpr@0.1%fpr,mia/epsilon_heuristic\n"
        f"0,lira,{long_value},0,0.61,0.02,1.5\n1,loss,short,0,0.54,0.001,0.4\n"
    )
    (sweep / "multirun.yaml").write_text("summary:\n  columns: [method, seed, note, mia/auc, mia/tpr@0.1%fpr]\n")
    header, rows, _ = stage_table(sweep)
    assert header == ["method", "note", "seed", "mia/auc", "mia/tpr@0.1%fpr"]  # the attack's own summary columns
    write_report(tmp_path, [Stage("membership", "Membership", "python attack.py -m", sweep)], {}, {})
    report = (tmp_path / "report.md").read_text()
    assert long_value not in report and long_value[:20] in report and "…" in report
    page = (tmp_path / "report.html").read_text()
    assert "<th>mia/<wbr>tpr@<wbr>0.<wbr>1%fpr</th>" in page  # long names wrap at their separators
    assert f"title='{long_value}'" in page  # the whole value stays, as a tooltip


@pytest.mark.slow
def test_a_tiny_lab_on_synthetic_data_with_an_mlp_target_writes_its_pictures(tmp_path, cache_dir, monkeypatch):
    """The real stage processes on a dataset and a model that are not the defaults: the data and the model reach
    them, and the gradient-inversion stage's reconstructions reach the report."""
    monkeypatch.setenv("PRIVACY_ATTACKS_CACHE", str(cache_dir))
    tiny_data = ["data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]  # the lab's, passed on
    cfg = lab_config([f"lab_dir={tmp_path}", "data=synthetic", "model=mlp", *tiny_data], hydra_record=True)
    with open_dict(cfg):
        cfg.stages = OmegaConf.create(
            {
                "target": {
                    "title": "A tiny target",
                    "script": "train.py",
                    "overrides": ["model.max_epochs=1", "+trainer.enable_progress_bar=false"],
                },
                "gradient_inversion": {
                    "title": "Gradient inversion",
                    "script": "attack.py",
                    "overrides": [
                        "attack=gradient_inversion",
                        "method=idlg,dlg",
                        "steps=6",
                        "private_pool=4",
                    ],
                    "pictures": "reconstructions.png",
                },
            }
        )
    lab.run_lab(cfg)
    report = (tmp_path / "report.md").read_text()
    assert "- data: synthetic" in report and "- model: mlp" in report
    assert "On data synthetic, model mlp." in report
    assert "On data synthetic, model lenet5_sigmoid (the clients' shared model)." in report
    assert "(gradient_inversion/0/reconstructions.png)" in report and "*method=dlg*" in report
    assert (tmp_path / "report.html").read_text().count("<figure>") == 2
    trained = OmegaConf.load(tmp_path / "target" / ".hydra" / "config.yaml")
    assert trained.data.source.train_size == 300 and trained.data.val_size == 60


@pytest.mark.parametrize(
    ("stop", "status", "how"), [(KeyboardInterrupt, 130, "interrupted"), (lab.Terminated, 143, "stopped by SIGTERM")]
)
def test_an_interrupted_lab_says_how_to_go_on(tmp_path, monkeypatch, capsys, stop, status, how):
    cfg = lab_config([f"lab_dir={tmp_path}", "only=[target]"])

    def interrupted(command, log_file):
        raise stop

    monkeypatch.setattr(lab, "run_stage", interrupted)
    with pytest.raises(SystemExit) as exit:
        lab.run_lab(cfg)
    assert exit.value.code == status
    err = capsys.readouterr().err
    assert f"error: {how} during stage target (the stage is stopped too)" in err
    assert f"rerun with lab_dir={tmp_path} to go on" in err


def test_a_lab_stopped_by_sigterm_between_stages_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    cfg = lab_config([f"lab_dir={tmp_path}", "only=[target,inversion]"])
    ran = []
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: ran.append(log_file.stem) or 0)

    def report_then_stop(*args, **kwargs):  # the signal arrives after the first stage, while the lab writes
        raise SIGTERMException

    monkeypatch.setattr(lab, "write_report", report_then_stop)
    with pytest.raises(SystemExit) as exit:
        lab.run_lab(cfg)
    assert exit.value.code == 143 and ran == ["target"]
    err = capsys.readouterr().err
    assert "error: stopped by SIGTERM between stages: the stages finished before are kept" in err
    assert f"rerun with lab_dir={tmp_path} to go on" in err
    assert json.loads((tmp_path / "state.json").read_text())["target"]["status"] == "done"


CHILD = """
import signal, sys, time
def stop(signum, frame):
    print(f"stage stopped by {signal.Signals(signum).name}", flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("[HYDRA] \\t#0 : started", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(("stop", "raised"), [(signal.SIGTERM, lab.Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_lab_stopped_during_a_stage_stops_the_stage_too(tmp_path, stop, raised):
    log_file = tmp_path / "stage.log"
    before = signal.getsignal(signal.SIGTERM)
    # Python's own Ctrl-C handler: a process started in the background (as CI may start the tests) ignores SIGINT.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), stop))  # the lab's own process gets the signal
    timer.start()
    try:
        with pytest.raises(raised):
            lab.run_stage(["-c", CHILD], log_file, grace_s=20, settle_s=0.5)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous_int)
    assert f"stage stopped by {stop.name}" in log_file.read_text()  # it ended before the lab went on up
    assert signal.getsignal(signal.SIGTERM) == before  # the lab's handler is gone with the stage


STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stage that does not stop when told
print(f"[HYDRA] \\t#0 : pid {os.getpid()}", flush=True)
time.sleep(120)
"""


def test_a_stage_that_does_not_stop_is_killed_and_a_second_signal_does_not_leave_it_running(tmp_path):
    log_file = tmp_path / "stage.log"
    timers = [threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)) for delay in (1.5, 2.5)]
    for timer in timers:
        timer.start()
    try:
        with pytest.raises(lab.Terminated):
            lab.run_stage(["-c", STUBBORN], log_file, grace_s=2)
    finally:
        for timer in timers:
            timer.cancel()
    pid = int(log_file.read_text().rsplit("pid ", 1)[1].split()[0])  # its line, after the command's
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed after the grace period, the second SIGTERM ignored meanwhile
