import threading
import time

import pytest
import torch
from omegaconf import OmegaConf

import privacy_attacks.targets as targets
from privacy_attacks.errors import CheckpointError
from privacy_attacks.models import LeNet5


@pytest.fixture
def recipe(compose_attack):
    return compose_attack([]).target


@pytest.fixture
def data_cfg(compose_attack):
    return compose_attack([]).data


def _saved(tmp_path, recipe, data_cfg):
    path = targets.checkpoint_path(recipe, data_cfg, tmp_path)
    net = LeNet5()
    targets.save_checkpoint(path, net, targets.checkpoint_spec(recipe, data_cfg), {"test/acc": 0.5})
    return path, net


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_checkpoint_key_follows_the_recipe(recipe, data_cfg, tmp_path):
    same = targets.checkpoint_path(recipe, data_cfg, tmp_path)
    assert same == targets.checkpoint_path(recipe.copy(), data_cfg, tmp_path)
    subset = OmegaConf.merge(recipe, {"members": 1000})
    assert targets.checkpoint_path(subset, data_cfg, tmp_path) != same
    assert targets.checkpoint_path(recipe, data_cfg, tmp_path, "evaluator") != same


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_a_torchvision_nets_norm_key_at_batch_norm_keeps_the_key_it_had_before_the_key_existed(
    compose_attack, tmp_path
):
    cfg = compose_attack(["net@target.net=torchvision"])
    assert cfg.target.net.norm == "batch"
    before = OmegaConf.create(OmegaConf.to_container(cfg.target, resolve=True))
    del before.net["norm"]  # the node as it was before it had the key
    key = targets.checkpoint_path(cfg.target, cfg.data, tmp_path)
    assert key == targets.checkpoint_path(before, cfg.data, tmp_path)
    group = compose_attack(["net@target.net=torchvision", "target.net.norm=group"]).target
    assert targets.checkpoint_path(group, cfg.data, tmp_path) != key


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_a_researchers_own_network_is_keyed_by_its_source_file(recipe, data_cfg, tmp_path, monkeypatch):
    """Editing one's own model's file gives it another key (never the old weights in the new code); the framework's
    own networks are keyed by their settings only."""
    import importlib
    import sys

    module = tmp_path / "own_models.py"
    source = (
        "import torch\n\nclass OwnNet(torch.nn.Sequential):\n    def __init__(self):\n        super().__init__({})\n"
    )
    module.write_text(source.format("torch.nn.Flatten(), torch.nn.Linear(784, 10)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    own = OmegaConf.merge(recipe, {"net": {"_target_": "own_models.OwnNet"}})
    OmegaConf.set_struct(own, False)
    for key in [k for k in own.net if k != "_target_"]:
        del own.net[key]
    first = targets.checkpoint_path(own, data_cfg, tmp_path)
    assert targets.checkpoint_path(own, data_cfg, tmp_path) == first  # the same file, the same key
    module.write_text(source.format("torch.nn.Flatten(), torch.nn.Tanh(), torch.nn.Linear(784, 10)"))
    importlib.reload(sys.modules["own_models"])
    assert targets.checkpoint_path(own, data_cfg, tmp_path) != first
    assert "code" not in targets.checkpoint_spec(recipe, data_cfg)["recipe"]["net"]  # LeNet5: the framework's own
    in_package = {"net": {"_target_": "privacy_attacks.attacks.inversion.gan.ConditionalGenerator"}}
    assert "code" in targets.without_neutral_net_keys(in_package)["net"]  # not a listed network module: keyed by code
    monkeypatch.delitem(sys.modules, "own_models")


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_round_trip_gives_a_frozen_copy(recipe, data_cfg, tmp_path):
    path, net = _saved(tmp_path, recipe, data_cfg)
    target = targets.load_checkpoint(path, recipe, targets.checkpoint_spec(recipe, data_cfg))
    assert not target.net.training
    assert not any(p.requires_grad for p in target.net.parameters())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(target.net(x), net.eval()(x))
    assert target.metrics == {"test/acc": 0.5}


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_corrupt_checkpoint_names_the_file(recipe, data_cfg, tmp_path):
    path, _ = _saved(tmp_path, recipe, data_cfg)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(path)):
        targets.load_checkpoint(path, recipe, targets.checkpoint_spec(recipe, data_cfg))


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_mismatched_checkpoint_names_the_file(recipe, data_cfg, tmp_path):
    path, _ = _saved(tmp_path, recipe, data_cfg)
    other = OmegaConf.merge(recipe, {"max_epochs": 99})
    with pytest.raises(CheckpointError, match=f"{path}.*different config"):
        targets.load_checkpoint(path, other, targets.checkpoint_spec(other, data_cfg))


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_checkpoint_of_another_network_names_the_file(recipe, data_cfg, tmp_path):
    path = targets.checkpoint_path(recipe, data_cfg, tmp_path)
    spec = targets.checkpoint_spec(recipe, data_cfg)
    targets.save_checkpoint(path, torch.nn.Linear(2, 2), spec, {})
    with pytest.raises(CheckpointError, match=f"{path}.*does not fit"):
        targets.load_checkpoint(path, recipe, spec)


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_concurrent_requests_train_once(recipe, data_cfg, tmp_path, monkeypatch):
    calls = []

    def fake_fit(recipe, data, trainer, seed, **kwargs):
        calls.append(seed)
        time.sleep(0.5)
        system = torch.nn.Module()
        system.net = LeNet5()
        return system, {"test/acc": 0.9}

    monkeypatch.setattr(targets, "fit_classifier", fake_fit)
    results = []
    cfg = OmegaConf.create({"_target_": "lightning.pytorch.Trainer"})
    threads = [
        threading.Thread(target=lambda: results.append(targets.provision_classifier(recipe, data_cfg, cfg, tmp_path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4
    assert len({r.checkpoint for r in results}) == 1
    assert all(r.metrics == {"test/acc": 0.9} for r in results)


@pytest.mark.mnist  # the key reads the MNIST files' identity
def test_a_gpu_trained_classifier_is_cached_apart_from_the_cpu_one(recipe, data_cfg, tmp_path):
    cpu = targets.checkpoint_path(recipe, data_cfg, tmp_path)
    assert targets.checkpoint_path(recipe, data_cfg, tmp_path, device="cpu") == cpu
    assert targets.checkpoint_path(recipe, data_cfg, tmp_path, device="cuda") != cpu
    assert "device" not in targets.checkpoint_spec(recipe, data_cfg)  # CPU checkpoints keep their keys


class Killed(Exception):
    """A run killed in the middle of its fit."""


@pytest.mark.parametrize("regularised", [False, True])
def test_an_interrupted_training_of_a_cached_classifier_goes_on_to_the_same_weights(
    compose_train, tmp_path, monkeypatch, caplog, regularised
):
    """Killed in its third of four epochs, a classifier being trained for the cache goes on, when asked for again,
    from the state saved after its second, to the weights and metrics of the uninterrupted training; with early
    stopping (its state saved after it has seen the epoch) and a moving average of the weights too. The saved state
    is gone once the classifier is cached, and one left beside a cached classifier goes when it is read."""
    import lightning as L

    small = ["data=synthetic", "data.source.train_size=300", "data.val_size=50", "model.members=200"]
    regularisers = ["model.early_stopping_patience=1", "model.ema_decay=0.9"] if regularised else []
    cfg = compose_train([*small, "model.max_epochs=4", *regularisers])
    monkeypatch.setattr(targets, "PARTIAL_FIT_EVERY_S", 0.0)  # save after every epoch
    whole = targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "whole")

    class KillAfterSecondEpoch(L.Callback):
        def __init__(self):
            self.val_acc = []  # each epoch's

        def on_validation_end(self, trainer, pl_module):
            self.val_acc.append(float(trainer.callback_metrics["val/acc"]))

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise Killed

    fit, killer = targets.fit_classifier, KillAfterSecondEpoch()
    with monkeypatch.context() as killing:
        killing.setattr(
            targets, "fit_classifier", lambda *a, callbacks, **k: fit(*a, callbacks=[*callbacks, killer], **k)
        )
        with pytest.raises(Killed):
            targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "cut")
    (partial,) = (tmp_path / "cut").glob("target-*.pt.partial")
    assert not list((tmp_path / "cut").glob("target-*.pt"))
    if regularised:  # early stopping's state saved after it had seen the second epoch's val/acc, not before
        states = torch.load(partial, map_location="cpu", weights_only=False)["callbacks"]
        (stopping,) = [state for key, state in states.items() if key.startswith("EarlyStopping")]
        assert float(stopping["best_score"]) == max(killer.val_acc[:2]) and killer.val_acc[1] > killer.val_acc[0]
    with caplog.at_level("INFO"):
        resumed = targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "cut")
    assert "Going on from epoch 2 of an interrupted fit" in caplog.text
    assert not partial.exists() and resumed.checkpoint.name == whole.checkpoint.name
    for name, value in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[name], value, rtol=0, atol=0)
    assert resumed.metrics["test/acc"] == whole.metrics["test/acc"]
    assert resumed.metrics["val/acc"] == whole.metrics["val/acc"]
    left = [partial, partial.with_name(f"{partial.name}.tmp")]  # as a job killed after caching it would leave them
    for path in left:
        path.write_bytes(b"left behind")
    targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "cut")
    assert not any(path.exists() for path in left)


def test_an_interrupted_fits_state_of_other_settings_or_unreadable_is_not_resumed(tmp_path, caplog):
    from privacy_attacks.cache import library_versions
    from privacy_attacks.callbacks.partial_fit import resumable_partial_fit
    from privacy_attacks.training import STAMP_KEY

    partial, spec = tmp_path / "target-0.pt.partial", {"recipe": {"seed": 0}}
    assert resumable_partial_fit(partial, spec) is None  # none there
    stamp = {"spec": spec, "fit_seconds": 1.0, "versions": library_versions()}
    torch.save({STAMP_KEY: stamp, "epoch": 0}, partial)
    assert resumable_partial_fit(partial, spec) == str(partial) and partial.exists()
    torch.save({STAMP_KEY: {**stamp, "spec": {"recipe": {"seed": 1}}}, "epoch": 0}, partial)
    with caplog.at_level("WARNING"):
        assert resumable_partial_fit(partial, spec) is None
    assert "left by a fit of other settings" in caplog.text and not partial.exists()
    torch.save({STAMP_KEY: {**stamp, "versions": {"torch": "0.1"}}, "epoch": 0}, partial)
    assert resumable_partial_fit(partial, spec) is None and not partial.exists()
    partial.write_bytes(b"half a file")
    with caplog.at_level("WARNING"):
        assert resumable_partial_fit(partial, spec) is None
    assert "Could not read the interrupted fit's state" in caplog.text and not partial.exists()


def test_a_saved_state_that_cannot_be_resumed_after_all_is_trained_again_from_the_start(
    compose_train, tmp_path, monkeypatch, caplog
):
    """A state of this very fit (its stamp matches) whose weights Lightning could not load: the fit starts again,
    to the classifier an uninterrupted fit gives."""
    from privacy_attacks import cache
    from privacy_attacks.cache import library_versions
    from privacy_attacks.training import STAMP_KEY

    small = ["data=synthetic", "data.source.train_size=300", "data.val_size=50", "model.members=200"]
    cfg = compose_train([*small, "model.max_epochs=2"])
    whole = targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "whole")
    spec = targets.checkpoint_spec(cfg.model, cfg.data, "cpu", cfg.trainer)
    partial = cache.partial_path(cache.cache_path(tmp_path / "cut", "target", spec))
    partial.parent.mkdir()
    stamp = {"spec": spec, "fit_seconds": 1.0, "versions": library_versions()}
    torch.save({STAMP_KEY: stamp, "epoch": 0, "state_dict": {"net.other.weight": torch.zeros(2)}}, partial)
    with caplog.at_level("WARNING"):
        again = targets.provision_classifier(cfg.model, cfg.data, cfg.trainer, tmp_path / "cut")
    assert "holds another network than this run's recipe" in caplog.text and "from the start" in caplog.text
    assert not partial.exists()
    for name, value in whole.net.state_dict().items():
        torch.testing.assert_close(again.net.state_dict()[name], value, rtol=0, atol=0)
