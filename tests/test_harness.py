"""The run harness: loggers from cfg.logger, final hparams with metrics, quiet Trainers from cfg.trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from privacy_attacks.errors import ConfigError
from privacy_attacks.harness import (
    build_loggers,
    build_trainer,
    finish_loggers,
    lightning_writes,
    limit_gpu_memory,
    log_image_grid,
    logs_step,
    run_device,
    set_threads,
    writes_this_step,
)
from tests.conftest import RecordingLogger


class FakeExperiment:
    def __init__(self):
        self.images = []

    def add_image(self, tag, grid, global_step):
        self.images.append((tag, tuple(grid.shape), global_step))


class FakeLogger:
    def __init__(self):
        self.calls, self.experiment = [], FakeExperiment()

    def log_metrics(self, metrics, step):
        self.calls.append(("metrics", metrics, step))

    def log_hyperparams(self, params, metrics=None):
        self.calls.append(("hparams", params, metrics))

    def finalize(self, status):
        self.calls.append(("finalize", status))


def test_build_loggers_instantiates_every_target_node(tmp_path: Path):
    cfg = OmegaConf.create(
        {
            "logger": {
                "tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger", "save_dir": str(tmp_path)},
                "off": None,
            }
        }
    )
    loggers = build_loggers(cfg)
    assert len(loggers) == 1 and isinstance(loggers[0], TensorBoardLogger)
    assert build_loggers(OmegaConf.create({"logger": None})) == []
    assert build_loggers(OmegaConf.create({})) == []


def test_a_run_into_the_folder_of_an_earlier_one_sets_its_events_aside_and_writes_its_own(tmp_path: Path):
    cfg = OmegaConf.create(
        {
            "logger": {
                "tensorboard": {
                    "_target_": "lightning.pytorch.loggers.TensorBoardLogger",
                    "save_dir": str(tmp_path),
                    "name": "tensorboard",
                    "version": "",
                }
            }
        }
    )
    for run in range(3):  # the same job folder, three times
        (logger,) = build_loggers(cfg)
        finish_loggers([logger], {"run": run}, {"acc": run / 10})
    events = sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.rglob("events.out.tfevents.*"))
    assert events == ["tensorboard", "tensorboard/earlier/1", "tensorboard/earlier/2"]  # one file each
    latest = EventAccumulator(str(tmp_path / "tensorboard"))
    latest.Reload()
    assert [event.value for event in latest.Scalars("acc")] == [pytest.approx(0.2)]  # the last run's alone
    first = EventAccumulator(str(tmp_path / "tensorboard" / "earlier" / "1"))
    first.Reload()
    assert [event.value for event in first.Scalars("acc")] == [pytest.approx(0.0)]


def test_finish_loggers_writes_the_final_metrics_once_at_the_last_step_then_the_hparams_then_finalizes():
    first, second = FakeLogger(), FakeLogger()
    finish_loggers([first, second], {"loss": "kl"}, {"acc": 0.5, "fit_time_s": 3}, step=7)
    for logger in (first, second):
        assert logger.calls == [
            ("metrics", {"acc": 0.5, "fit_time_s": 3.0}, 7),
            ("hparams", {"loss": "kl"}, None),  # a logger other than TensorBoard's: its hparams alone
            ("finalize", "success"),
        ]
    only = FakeLogger()
    finish_loggers([only], {"loss": "kl"}, {"acc": 0.5})
    assert only.calls[0] == ("metrics", {"acc": 0.5}, 0)  # an attack without curves: at step 0


class EveryStepValue(L.LightningModule):
    """Logs its step's own index where :func:`writes_this_step` says Lightning writes it, as the students do."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        if writes_this_step(self.trainer):
            self.log("step_index", float(self.trainer.global_step), on_step=True, on_epoch=False)
        return (self.weight**2).sum() + 0 * batch.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_value_logged_where_lightning_writes_is_written_at_the_step_it_was_measured():
    logger = RecordingLogger()
    trainer = build_trainer(
        {"accelerator": "cpu", "devices": 1}, max_steps=12, max_epochs=5, logger=logger, log_every_n_steps=5
    )
    trainer.fit(EveryStepValue(), torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1))  # epochs of 4 steps
    written = [(step, values["step_index"]) for step, values in logger.logged if "step_index" in values]
    assert written == [(4, 4.0), (9, 9.0)]
    alone = build_trainer({"accelerator": "cpu", "devices": 1}, max_steps=12, max_epochs=5, log_every_n_steps=5)
    alone.fit(EveryStepValue(), torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1))
    assert float(alone.callback_metrics["step_index"]) == 9.0  # without a logger too: progress lines read it


def test_a_fit_that_writes_its_loggers_itself_writes_the_first_step_every_nth_and_the_last():
    assert [step for step in range(12) if logs_step(step, 5, 12)] == [0, 5, 10, 11]
    assert [step for step in range(3) if logs_step(step, 50, 3)] == [0, 2]  # a short fit still has its curve
    assert [step for step in range(1) if logs_step(step, 50, 1)] == [0]
    assert not any(logs_step(step, 0, 5) or lightning_writes(step, 0) for step in range(5))  # 0: never, as Lightning
    assert [step for step in range(12) if lightning_writes(step, 5)] == [4, 9]  # a loop of one's own, as Lightning


def test_log_image_grid_puts_each_row_on_its_own_row():
    logger = FakeLogger()
    log_image_grid(
        [logger, object()], "recon/reconstructions", (torch.zeros(3, 1, 28, 28), torch.ones(3, 1, 28, 28)), 5
    )
    assert logger.experiment.images == [("recon/reconstructions", (3, 2 + 2 * 30, 2 + 3 * 30), 5)]


def test_build_trainer_is_quiet_unless_the_config_or_the_caller_says_otherwise(tmp_path: Path):
    config = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(tmp_path),
            "enable_model_summary": True,
        }
    )
    trainer = build_trainer(config, max_epochs=3)
    assert trainer.max_epochs == 3 and trainer.loggers == [] and trainer.checkpoint_callback is None
    assert trainer.num_sanity_val_steps == 0
    assert any("ModelSummary" in type(c).__name__ for c in trainer.callbacks)  # the config's choice
    quiet = build_trainer(config, enable_model_summary=False)  # the caller's choice
    assert not any("ModelSummary" in type(c).__name__ for c in quiet.callbacks)
    loud = build_trainer(config, quiet=False)
    assert loud.checkpoint_callback is not None and loud.loggers
    assert build_trainer(config, enable_checkpointing=True).checkpoint_callback is not None


def test_build_trainer_without_a_config_is_one_deterministic_cpu_device():
    trainer = build_trainer(max_steps=2)
    assert trainer.max_steps == 2 and trainer.loggers == [] and trainer.checkpoint_callback is None
    assert type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices == 1
    assert not trainer.progress_bar_callback
    plain = build_trainer({"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}, max_epochs=1)
    assert plain.max_epochs == 1 and plain.loggers == []


def test_run_device_follows_the_trainer_config(monkeypatch):
    assert run_device(None) == torch.device("cpu")
    assert run_device({"accelerator": "cpu"}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device({"accelerator": "auto"}) == torch.device("cpu")
    with pytest.raises(ConfigError, match="trainer=gpu"):
        run_device(OmegaConf.create({"accelerator": "gpu"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_device({"accelerator": "gpu"}) == torch.device("cuda")
    assert run_device({"accelerator": "auto"}) == torch.device("cuda")


def test_set_threads_sets_torch_threads_and_none_keeps_them():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads=0 is not allowed"):
        set_threads(0)


def test_gpu_memory_fraction_is_checked_and_leaves_the_cpu_alone():
    limit_gpu_memory(None, torch.device("cpu"))
    limit_gpu_memory(0.25, torch.device("cpu"))  # no CUDA call on the CPU
    for bad in (0, 1.5, -0.1, "half", True):
        with pytest.raises(ConfigError, match="gpu_memory_fraction"):
            limit_gpu_memory(bad, torch.device("cpu"))


def test_an_added_key_beside_a_declared_one_of_nearly_its_name_is_named(compose_train):
    from privacy_attacks.harness import lookalike_additions

    cfg = compose_train([])
    overrides = [
        "+model.max_epoch=1",  # Hydra's suggestion for a misspelt model.max_epochs
        "+stepz=3",  # no top-level key like it in train.yaml
        "+trainer.enable_progress_bar=false",  # a key of its own, as the docs add it
        "++model.max_epoch=1",  # set-or-add: the user knows
        "+logger/tensorboard@loggers=tensorboard",  # a config group added, not a key
        "model.max_epochs=2",
    ]
    assert lookalike_additions(cfg, overrides) == [
        "+model.max_epoch adds a new key beside model.max_epochs: if it is a misspelling of it, nothing reads it."
    ]
    assert lookalike_additions(OmegaConf.create({"steps": 5}), ["+stepz=3"]) == [
        "+stepz adds a new key beside steps: if it is a misspelling of it, nothing reads it."
    ]
