"""The regularisation keys of a classifier recipe: label smoothing and early stopping, and their cache key."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.systems import ImageClassifier
from privacy_attacks.targets import checkpoint_path, checkpoint_spec
from privacy_attacks.training import build_classifier, fit_classifier, recipe_callbacks, validate_recipe


def test_the_neutral_defaults_leave_the_checkpoint_key_unchanged(compose_train, tmp_path):
    cfg = compose_train([])
    assert cfg.model.label_smoothing == 0.0 and cfg.model.early_stopping_patience is None
    spec = checkpoint_spec(cfg.model, cfg.data)["recipe"]
    assert not {"label_smoothing", "early_stopping_patience", "privacy"} & set(spec)
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    without = OmegaConf.create(
        {k: v for k, v in resolved.items() if k not in ("label_smoothing", "early_stopping_patience")}
    )
    assert checkpoint_path(without, cfg.data, tmp_path) == checkpoint_path(cfg.model, cfg.data, tmp_path)
    for override in ("model.label_smoothing=0.1", "model.early_stopping_patience=2"):
        changed = compose_train([override])
        assert checkpoint_path(changed.model, cfg.data, tmp_path) != checkpoint_path(cfg.model, cfg.data, tmp_path)


def test_label_smoothing_is_in_the_training_loss_only():
    torch.manual_seed(0)
    system = ImageClassifier(LeNet5(), torch.optim.Adam, label_smoothing=0.2)
    images, labels = torch.rand(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4])
    logits = system(images)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here to log to
        train, val = system._step((images, labels), "train"), system._step((images, labels), "val")
    torch.testing.assert_close(train, F.cross_entropy(logits, labels, label_smoothing=0.2))
    torch.testing.assert_close(val, F.cross_entropy(logits, labels))


def test_a_recipe_builds_its_regularisers(compose_train):
    recipe = compose_train(["model.label_smoothing=0.1", "model.early_stopping_patience=3"]).model
    assert build_classifier(recipe).hparams.label_smoothing == 0.1
    (stopper,) = recipe_callbacks(recipe)
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/acc", "max", 3)
    assert recipe_callbacks(compose_train([]).model) == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.label_smoothing=1.0", "model.label_smoothing"),
        ("model.label_smoothing=-0.1", "model.label_smoothing"),
        ("model.early_stopping_patience=0", "model.early_stopping_patience"),
    ],
)
def test_a_bad_regulariser_stops_before_any_work(compose_train, override, key):
    with pytest.raises(ConfigError, match=key):
        validate_recipe(compose_train([override]).model)


@pytest.mark.mnist
def test_early_stopping_ends_a_fit_that_stopped_improving(compose_train):
    cfg = compose_train(["model.max_epochs=40", "model.members=300", "model.early_stopping_patience=1"])

    class Epochs(L.Callback):
        def on_train_end(self, trainer, module):
            self.epochs = trainer.current_epoch

    epochs = Epochs()
    fit_classifier(cfg.model, cfg.data, cfg.trainer, 0, callbacks=[epochs], enable_checkpointing=False)
    assert epochs.epochs < 40
