"""What a run writes to TensorBoard: one event file, hparams that tell runs apart, each scalar once per step."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from privacy_attacks.harness import (
    command_line_hparams,
    finish_loggers,
    hparam_items,
    lookalike_additions,
    run_hparams,
    task_overrides,
)
from privacy_attacks.pipelines import run_attack
from tests.conftest import CONF_DIR, run_script
from tests.test_harness import FakeLogger

# Synthetic 1x28x28 images of 10 classes and a target trained for one epoch on 200 of them: seconds on a CPU.
TINY = [
    "data=synthetic",
    "data.source.train_size=800",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=200",
    "target.max_epochs=1",
    "logger=tensorboard",
]
TINY_STEALING = ["attack=distillation", "query_budget=100", "schedule.steps=5", "trainer.log_every_n_steps=1"]
TINY_MEMBERSHIP = ["attack=membership", "method=confidence", "eval_members=50", "shadow_train_size=100"]
CNN = ["model@target=cnn", "target.net.width=8"]


def event_files(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).rglob("events.out.tfevents.*"))


def read_events(run_dir: Path) -> EventAccumulator:
    """The run's one event file, read by TensorBoard's own reader."""
    (events,) = event_files(run_dir)
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return accumulator


def logged_hparams(accumulator: EventAccumulator) -> dict:
    """The hparams of TensorBoard's hparams table, as Python values."""
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {key: json_format.MessageToDict(value) for key, value in start.hparams.items()}


def assert_table_has_the_metrics(events: EventAccumulator, metrics: dict) -> None:
    """The run's hparams come without an experiment summary, so that TensorBoard builds its table from every run
    under ``--logdir`` (the union of their hparams, a column per scalar tag): each metric of ``metrics.json`` is a
    scalar, whose last value is the column's."""
    assert set(events.PluginTagToContent("hparams")) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    for name, value in metrics.items():
        assert events.Scalars(name)[-1].value == pytest.approx(value, rel=1e-6), name


def test_hparam_items_flatten_with_dots_and_turn_other_values_into_strings():
    node = OmegaConf.create({"net": {"_target_": "Net", "shape": [1, 28, 28]}, "members": None, "lr": 0.1, "ok": True})
    assert hparam_items(node, "target") == {
        "target.net._target_": "Net",
        "target.net.shape": "[1, 28, 28]",
        "target.members": "None",
        "target.lr": 0.1,
        "target.ok": True,
    }


def test_run_hparams_name_the_data_the_target_the_defence_the_attack_and_the_overrides(compose_attack, monkeypatch):
    cfg = compose_attack(["attack=distillation", *CNN, "defense=noise", "seed=3"])
    params = run_hparams(cfg)
    assert params["data.name"] == "mnist" and params["attack.name"] == "distillation" and params["seed"] == 3
    assert params["target.net._target_"] == "privacy_attacks.models.SmallVGG" and params["target.net.width"] == 8
    assert params["target.max_epochs"] == 2 and params["target.members"] == 5000 and params["target.seed"] == 0
    assert params["defense._target_"] == "privacy_attacks.defenses.GaussianNoise" and params["defense.std"] == 0.1
    assert "model@target" not in params  # outside a Hydra job there are no command-line overrides
    overrides = ["attack=distillation", "model@target=cnn", "query_budget=300", "+extra=[1,2]", "hydra.verbose=true"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        job = compose(config_name="attack", overrides=overrides, return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    HydraConfig.instance().set_config(job)
    assert command_line_hparams() == {
        "attack": "distillation",
        "model@target": "cnn",
        "query_budget": 300,
        "extra": "[1, 2]",
    }
    assert run_hparams(cfg)["model@target"] == "cnn"


def test_an_override_that_interpolates_a_node_is_logged_as_typed(monkeypatch):
    """``'methods.proxy.loss=${losses.kl}'`` (the docs' way to choose the proxy's loss): reading Hydra's list of
    overrides resolved the interpolation into a mapping whose text could not be parsed: the run failed at its end."""
    overrides = ["attack=membership", "methods.proxy.loss=${losses.kl}", "temperature=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        job = compose(config_name="attack", overrides=overrides, return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    HydraConfig.instance().set_config(job)
    assert task_overrides() == overrides
    assert command_line_hparams()["methods.proxy.loss"] == "${losses.kl}"
    assert lookalike_additions(job, task_overrides()) == []


def test_finish_loggers_adds_the_run_hparams_and_writes_each_metric_once(compose_attack):
    cfg = compose_attack(["attack=distillation"])
    logger = FakeLogger()
    finish_loggers([logger], {"loss": "kl"}, {"acc": 0.5}, step=9, cfg=cfg)
    assert logger.calls[0] == ("metrics", {"acc": 0.5}, 9)
    _, params, metrics = logger.calls[1]
    assert params == {**run_hparams(cfg), "loss": "kl"} and metrics is None  # no second point at step 0


def test_runs_against_targets_of_two_architectures_log_different_hparams(compose_attack, tmp_path):
    logged = {}
    for name, model in (("lenet5", []), ("cnn", CNN)):
        cfg = compose_attack([*TINY, *TINY_STEALING, *model])
        cfg.paths.output_dir = str(tmp_path / name)  # a run folder each
        run_attack(cfg)
        logged[name] = logged_hparams(read_events(cfg.paths.output_dir))
    lenet5, cnn = logged["lenet5"], logged["cnn"]
    assert lenet5["target.net._target_"] == "privacy_attacks.models.LeNet5"
    assert cnn["target.net._target_"] == "privacy_attacks.models.SmallVGG"
    for params in (lenet5, cnn):  # the identity beside the attack's own hparams
        assert params["data.name"] == "synthetic" and params["attack.name"] == "distillation"
        assert params["target.members"] == 200 and params["target.max_epochs"] == 1 and params["target.seed"] == 0
        assert params["defense._target_"] == "privacy_attacks.defenses.NoDefense"
        assert params["loss"] == "kl" and params["query_budget"] == 100 and params["seed"] == 0


def test_a_stealing_run_writes_one_event_file_with_its_curve_and_hparams(compose_attack):
    cfg = compose_attack([*TINY, *TINY_STEALING])
    metrics = run_attack(cfg)
    assert len(event_files(cfg.paths.output_dir)) == 1
    events = read_events(cfg.paths.output_dir)
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "student/agreement" in scalars  # the fit's curve and the final scores
    assert [event.step for event in events.Scalars("train/loss")] == [0, 1, 2, 3, 4]  # every step, where measured
    (agreement,) = events.Scalars("student/agreement")  # once, at the last step: no copy at step 0
    assert agreement.step == 5 and agreement.value == pytest.approx(metrics["student/agreement"])
    assert not any(tag.startswith("final/") for tag in scalars)
    params = logged_hparams(events)
    assert params["loss"] == "kl"
    # Named as the config names them, so that a column means one key across attacks (membership logs api.output).
    assert params["api.output"] == "probs" and params["student.batch_size"] == cfg.student.batch_size
    assert "api_output" not in params and "batch_size" not in params  # gradient inversion's batch_size: the client's
    assert_table_has_the_metrics(events, metrics)


def test_a_membership_run_logs_each_scalar_once_per_step(compose_attack):
    cfg = compose_attack([*TINY, *TINY_MEMBERSHIP])
    metrics = run_attack(cfg)
    events = read_events(cfg.paths.output_dir)
    assert "mia/auc" in events.Tags()["scalars"]
    for tag in events.Tags()["scalars"]:
        steps = [event.step for event in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), tag
    assert events.Scalars("mia/auc")[0].value == pytest.approx(metrics["mia/auc"])
    params = logged_hparams(events)
    assert params["method"] == "confidence" and params["api.output"] == "probs"
    assert "score: confidence" in params["method_config"] and "scores" not in params["method_config"]
    assert_table_has_the_metrics(events, metrics)


@pytest.mark.slow
def test_a_multirun_over_targets_logs_and_summarises_the_swept_key(tmp_path, cache_dir):
    """A real sweep: each job's hparams hold its command-line choice; summary.md has a column for it."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, *TINY_STEALING, "model@target=lenet5,cnn", f"hydra.sweep.dir={sweep}"]
    result = run_script("attack.py", [*args, "+trainer.enable_progress_bar=false"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, model in enumerate(("lenet5", "cnn")):
        params = logged_hparams(read_events(sweep / str(job)))
        assert params["model@target"] == model and params["query_budget"] == 100
    assert "| job | model@target |" in (sweep / "summary.md").read_text().splitlines()[0]


def test_a_training_run_logs_its_whole_config_with_dotted_keys_as_the_attacks_do(compose_train):
    """train.py's hparams: the resolved config flattened with dots (``model.net._target_``), as an attack's are, so
    TensorBoard's hparams table lines the two up; one event file."""
    from privacy_attacks.pipelines import run_train

    cfg = compose_train([*TINY[:4], "model.members=200", "model.max_epochs=1", "logger=tensorboard"])
    metrics = run_train(cfg)
    events = read_events(cfg.paths.output_dir)
    params = logged_hparams(events)
    assert params["model.net._target_"] == "privacy_attacks.models.LeNet5" and params["data.name"] == "synthetic"
    assert params["model.max_epochs"] == 1 and not any("/" in key for key in params)
    assert_table_has_the_metrics(events, metrics)
    (test_acc,) = events.Scalars("test/acc")  # each metric once: the table adds no point at step 0
    assert test_acc.value == pytest.approx(metrics["test/acc"]) and test_acc.step > 0
    (fit_time,) = events.Scalars("fit_time_s")  # every column of the table has its value
    assert fit_time.value == pytest.approx(metrics["fit_time_s"]) and fit_time.step == test_acc.step
