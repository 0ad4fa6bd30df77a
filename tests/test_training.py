"""The regularisation keys of a classifier recipe: label smoothing, early stopping and the weights' moving average,
and their cache key."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import OmegaConf

from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.systems import ImageClassifier
from privacy_attacks.targets import checkpoint_path, checkpoint_spec
from privacy_attacks.training import build_classifier, fit_classifier, recipe_callbacks, validate_recipe


def test_the_neutral_defaults_leave_the_checkpoint_key_unchanged(compose_train, tmp_path):
    cfg = compose_train([])
    assert cfg.model.label_smoothing == 0.0 and cfg.model.early_stopping_patience is None
    assert cfg.model.ema_decay is None
    spec = checkpoint_spec(cfg.model, cfg.data)["recipe"]
    assert not {"label_smoothing", "early_stopping_patience", "ema_decay", "privacy"} & set(spec)
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    without = OmegaConf.create(
        {k: v for k, v in resolved.items() if k not in ("label_smoothing", "early_stopping_patience", "ema_decay")}
    )
    assert checkpoint_path(without, cfg.data, tmp_path) == checkpoint_path(cfg.model, cfg.data, tmp_path)
    for override in ("model.label_smoothing=0.1", "model.early_stopping_patience=2", "model.ema_decay=0.99"):
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
    (average,) = recipe_callbacks(compose_train(["model.ema_decay=0.9"]).model)
    assert isinstance(average, EMAWeightAveraging)


def test_the_moving_average_of_the_weights_is_what_the_fit_keeps(compose_train):
    """With ``ema_decay`` d the fitted network holds a_T, where a_1 = w_1 and a_t = d a_(t-1) + (1 - d) w_t over the
    iterates w_t after each optimiser step, not the last iterate."""
    recipe = compose_train(["model.ema_decay=0.5"]).model

    class Iterates(L.Callback):
        def __init__(self):
            self.weights = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.weights.append({k: v.detach().clone() for k, v in module.net.state_dict().items()})

    torch.manual_seed(0)
    system = build_classifier(recipe)
    data = torch.utils.data.TensorDataset(torch.rand(48, 1, 28, 28), torch.randint(0, 10, (48,)))
    iterates = Iterates()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[iterates, *recipe_callbacks(recipe)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(system, torch.utils.data.DataLoader(data, batch_size=16))
    average = iterates.weights[0]
    for weights in iterates.weights[1:]:
        average = {k: 0.5 * average[k] + 0.5 * weights[k] for k in average}
    assert len(iterates.weights) == 3
    kept = system.net.state_dict()
    assert any(not torch.equal(kept[name], last) for name, last in iterates.weights[-1].items())
    for name, value in kept.items():
        torch.testing.assert_close(value, average[name])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.label_smoothing=1.0", "model.label_smoothing"),
        ("model.label_smoothing=-0.1", "model.label_smoothing"),
        ("model.early_stopping_patience=0", "model.early_stopping_patience"),
        ("model.ema_decay=1", "model.ema_decay"),
        ("model.ema_decay=0", "model.ema_decay"),
        ("model.ema_decay=-0.5", "model.ema_decay"),
        ("model.max_epochs=1.5", "model.max_epochs=1.5 is not allowed: it must be an integer > 0"),
        ("model.batch_size=32.5", "model.batch_size=32.5 is not allowed: it must be an integer > 0"),
        ("model.members=100.0", "model.members=100.0 is not allowed: it must be an integer > 0"),
        ("+model.member_offset=-1", "model.member_offset=-1 is not allowed: it must be an integer >= 0"),
        ("model.seed=abc", "model.seed='abc' is not allowed: it must be an integer"),
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


def test_an_interrupted_training_run_says_how_to_go_on(compose_train, monkeypatch, caplog):
    """Ctrl-C during a fit (Lightning exits after its graceful shutdown): the log names the checkpoint to go on from."""
    from pathlib import Path

    from privacy_attacks import pipelines

    cfg = compose_train(["data=synthetic", "model.max_epochs=1"])

    def interrupted(*args, **kwargs):
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"")
        raise SystemExit(1)

    monkeypatch.setattr(pipelines, "fit_classifier", interrupted)
    with pytest.raises(SystemExit), caplog.at_level("WARNING"):
        pipelines.run_train(cfg)
    assert f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}" in caplog.text


def test_resuming_names_ckpt_path_in_one_line_when_the_file_cannot_be_resumed(compose_train, tmp_path):
    from privacy_attacks.errors import CheckpointError
    from privacy_attacks.models import MLP
    from privacy_attacks.pipelines import check_train
    from privacy_attacks.training import check_resumable

    for missing in (tmp_path / "nowhere.ckpt", tmp_path):  # no file, a folder
        with pytest.raises(ConfigError, match=r"ckpt_path=.* is not a checkpoint file"):
            check_train(compose_train([f"ckpt_path={missing}"]))
    system = build_classifier(compose_train([]).model)
    own = tmp_path / "own.ckpt"
    torch.save({"state_dict": system.state_dict()}, own)
    check_resumable(str(own), system)  # the recipe's own network: resumable
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": ImageClassifier(MLP((1, 28, 28), 10), torch.optim.Adam).state_dict()}, other)
    with pytest.raises(CheckpointError, match=r"holds another network than this run's recipe"):
        check_resumable(str(other), system)
    cfg = compose_train(["data=synthetic", "data.source.train_size=200", "data.val_size=50", "model.max_epochs=1"])
    with pytest.raises(CheckpointError, match="holds another network") as error:  # the fit checks before it starts
        fit_classifier(cfg.model, cfg.data, cfg.trainer, 0, ckpt_path=str(other), test=False)
    assert "\n" not in str(error.value)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        check_resumable(str(garbage), system)
    torch.save({"epoch": 3}, garbage)
    with pytest.raises(CheckpointError, match="no state_dict"):
        check_resumable(str(garbage), system)


def test_a_run_whose_schedule_ended_is_not_resumed_to_more_epochs(compose_train, tmp_path):
    """A finished cosine schedule leaves the learning rate at 0 (Lightning saves it so): resumed with a larger
    max_epochs, the run would train its new epochs at 0 and change no weight, so it is refused; resumed as it was
    (nothing left to train), or at a learning rate above 0, it goes on."""
    from privacy_attacks.errors import CheckpointError
    from privacy_attacks.training import check_resumable

    system = build_classifier(compose_train([]).model)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.0, "params": [0]}]}
    finished = tmp_path / "finished.ckpt"
    torch.save({"state_dict": system.state_dict(), "epoch": 0, "optimizer_states": [optimizer]}, finished)
    check_resumable(str(finished), system, max_epochs=1)
    with pytest.raises(CheckpointError, match=r"learning rate 0 after 1 epoch\(s\)\): going on to max_epochs=2 would"):
        check_resumable(str(finished), system, max_epochs=2)
    optimizer["param_groups"][0]["lr"] = 1e-3  # a schedule that had not ended
    running = tmp_path / "running.ckpt"
    torch.save({"state_dict": system.state_dict(), "epoch": 0, "optimizer_states": [optimizer]}, running)
    check_resumable(str(running), system, max_epochs=2)


def test_a_resume_counts_the_whole_fit_and_one_from_other_settings_is_not_cached(compose_train, tmp_path, caplog):
    """Every checkpoint of train.py carries its run's spec and fit seconds: a resume with the same settings reports
    the whole fit's time; one with other settings (another seed) goes on from those weights but is not cached under
    this recipe, where attacks would take it for the recipe's own target."""
    from pathlib import Path

    from omegaconf import open_dict

    from privacy_attacks import cache
    from privacy_attacks.pipelines import run_train
    from privacy_attacks.targets import checkpoint_spec
    from privacy_attacks.training import STAMP_KEY

    small = ["callbacks=default", "data=synthetic", "data.source.train_size=300", "data.val_size=50"]
    small += ["model.members=200", "model.max_epochs=1", f"paths.cache_dir={tmp_path / 'cache'}"]

    def config(overrides, folder):
        cfg = compose_train([*small, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / folder)
            cfg.paths.cache_dir = str(tmp_path / "cache")
        return cfg

    first = config([], "first")
    run_train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    stamp = torch.load(last, map_location="cpu", weights_only=False)[STAMP_KEY]
    assert stamp["spec"] == checkpoint_spec(first.model, first.data, "cpu", first.trainer) and stamp["fit_seconds"] > 0

    same = run_train(config([f"ckpt_path={last}"], "same"))  # the fit was complete: nothing more to train
    assert same["fit_time_s"] >= stamp["fit_seconds"]

    other = config([f"ckpt_path={last}", "model.seed=1"], "other")
    with caplog.at_level("WARNING"):
        run_train(other)
    assert "recipe.seed: 0 in the checkpoint, 1 here" in caplog.text and "is not cached" in caplog.text
    spec = checkpoint_spec(other.model, other.data, "cpu", other.trainer)
    assert not cache.cache_path(other.paths.cache_dir, "target", spec).exists()
