"""Progress lines of long fits in the log: throttled, the last epoch always, the time left; in a Lightning fit, in
the shadow models' loop, and step by step in a stolen student's one long epoch (alone and stacked)."""

from __future__ import annotations

import functools
import logging

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy_attacks.callbacks.epoch_log import EpochLog, ProgressLog, StepLog


def test_a_line_every_few_seconds_and_after_the_last_epoch(caplog: pytest.LogCaptureFixture):
    now = [0.0]
    progress = ProgressLog("16 shadow models", 4, every_s=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        for epoch, seconds in enumerate([20.0, 40.0, 60.0, 80.0], start=1):
            now[0] = seconds
            progress.step(epoch, {"train/loss": 0.5 / epoch})
    assert caplog.messages == [
        "16 shadow models: epoch 2/4, train/loss 0.2500; 40s, about 40s left",  # 20 s an epoch, 2 left
        "16 shadow models: epoch 4/4, train/loss 0.1250; 1m20s",  # the last, 20 s after the one before
    ]
    assert ProgressLog("fit", None, clock=lambda: 5.0).line(3) == "fit: epoch 3; 0s"
    resumed = ProgressLog("target", 30, clock=lambda: now[0], already_done=20)  # from a checkpoint at epoch 20
    now[0] = 180.0  # 100 s after it started, 5 epochs later: 20 s an epoch, 5 left
    assert resumed.line(25) == "target: epoch 25/30; 1m40s, about 1m40s left"
    assert ProgressLog("student", 10, clock=lambda: 0.0, unit="step").line(5) == "student: step 5/10; 0s, about 0s left"


def quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **settings
    )


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_lightning_fit_logs_its_epochs_with_their_metrics(caplog: pytest.LogCaptureFixture):
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.tensor([0, 1] * 4)), batch_size=4)
    ticks = iter(range(0, 1000, 40))
    trainer = quiet_trainer(
        max_epochs=3,
        callbacks=[EpochLog("Tiny", every_s=30.0, clock=lambda: float(next(ticks)))],
    )
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        trainer.fit(Tiny(), data)
    lines = [m for m in caplog.messages if m.startswith("Tiny: epoch")]
    assert [line.split(",")[0] for line in lines] == ["Tiny: epoch 1/3", "Tiny: epoch 2/3", "Tiny: epoch 3/3"]
    assert all("train/loss" in line for line in lines)
    assert lines[0].endswith("left") and not lines[-1].endswith("left")  # the clock moves 40 s a reading


def test_shadow_models_log_their_epochs(caplog: pytest.LogCaptureFixture):
    from omegaconf import OmegaConf

    from privacy_attacks.attacks.membership.shadow_models import train_shadow_models

    recipe = OmegaConf.create(
        {
            "net": {"_target_": "privacy_attacks.models.MLP", "image_shape": [1, 2, 2], "num_classes": 2},
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
            "max_epochs": 2,
            "batch_size": 4,
        }
    )
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        train_shadow_models(
            recipe, torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4), torch.tensor([[0, 1, 2, 3]] * 2), [0, 1], False
        )
    assert caplog.messages[-1].startswith("2 shadow models: epoch 2/2, train/loss ")
    recipe.privacy = {"_target_": "privacy_attacks.defenses.DPSGD", "epsilon": 8.0}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        train_shadow_models(
            recipe, torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4), torch.tensor([[0, 1, 2, 3]] * 2), [0, 1], False
        )
    assert caplog.messages[-1].startswith("2 private shadow models: epoch 2/2; ")


class TinySteps(Tiny):
    """Its clock moves 20 s a step."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def training_step(self, batch, batch_idx):
        self.seconds += 20.0
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss


def test_a_fit_of_one_long_epoch_logs_its_steps(caplog: pytest.LogCaptureFixture):
    data = DataLoader(TensorDataset(torch.randn(40, 2), torch.tensor([0, 1] * 20)), batch_size=4)
    module = TinySteps()
    trainer = quiet_trainer(
        max_steps=6,
        max_epochs=1,
        callbacks=[StepLog("student", every_s=30.0, clock=lambda: module.seconds)],
    )
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        trainer.fit(module, data)
    lines = [m for m in caplog.messages if m.startswith("student: step")]
    assert [line.split(",")[0] for line in lines] == ["student: step 2/6", "student: step 4/6", "student: step 6/6"]
    assert all("train/loss" in line for line in lines)


def test_stolen_students_log_their_steps(caplog: pytest.LogCaptureFixture):
    from privacy_attacks.attacks.stealing.distillation import fit_student
    from privacy_attacks.attacks.stealing.losses import LectureKL
    from privacy_attacks.attacks.stealing.stacked import fit_students

    images, answers = torch.rand(16, 1, 4, 4), torch.softmax(torch.randn(16, 3), dim=1)

    def net() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        fit_student(net(), images, answers, "probs", LectureKL(), steps=5, batch_size=4)
        fit_students(
            [net(), net()],
            [(images, answers)] * 2,
            [LectureKL()] * 2,
            ["probs"] * 2,
            5,
            functools.partial(torch.optim.SGD, lr=0.1),
            None,
            4,
            [0, 0],
            [0, 1],
        )
    assert any(m.startswith("student: step 5/5, train/loss ") for m in caplog.messages)
    assert any(m.startswith("2 students: step 5/5, train/loss ") for m in caplog.messages)


def test_a_fit_stopped_early_ends_with_its_last_epoch(caplog: pytest.LogCaptureFixture):
    class StopsAfterTwo(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch >= 1

    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.tensor([0, 1] * 4)), batch_size=4)
    trainer = quiet_trainer(
        max_epochs=10,
        callbacks=[StopsAfterTwo(), EpochLog("Tiny", every_s=1e9, clock=lambda: 0.0)],
    )
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        trainer.fit(Tiny(), data)
    lines = [m for m in caplog.messages if m.startswith("Tiny: epoch")]
    assert [line.split(",")[0] for line in lines] == ["Tiny: epoch 2/10"]
