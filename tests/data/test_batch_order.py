"""Batch orders and Poisson masks: seeded by (seed, epoch) through a hash, the epoch taken from the trainer, so seeds
are independent replicates and a resumed fit (DP-SGD's included) continues the uninterrupted one."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from privacy_attacks.data.mnist import PoissonBatches, TensorBatches, epoch_seed
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError
from privacy_attacks.training import fit_classifier


def epoch_orders(seed: int, epochs: int, batch_order: str, n: int = 50) -> list[list[int]]:
    """The label order of each of ``epochs`` passes over ``n`` items seeded by ``seed``."""
    batches = TensorBatches(torch.zeros(n, 1), torch.arange(n), n, shuffle=True, seed=seed, batch_order=batch_order)
    return [next(iter(batches))[1].tolist() for _ in range(epochs)]


def test_seeds_s_and_s_plus_1_never_share_an_epochs_order():
    for seed in range(5):
        mine = epoch_orders(seed, 4, "hashed")
        neighbours = epoch_orders(seed + 1, 4, "hashed")
        assert all(a != b for a in mine for b in neighbours)  # no epoch of s equals any epoch of s + 1
        assert len({tuple(order) for order in mine}) == 4  # and no two epochs of one seed repeat


def test_the_consecutive_order_is_the_one_measured_before_and_shifts_by_one_seed():
    mine, neighbour = epoch_orders(3, 3, "consecutive"), epoch_orders(4, 3, "consecutive")
    assert mine[1:] == neighbour[:-1]  # why it is no longer the default
    expected = [torch.randperm(50, generator=torch.Generator().manual_seed(3 + e)).tolist() for e in range(3)]
    assert mine == expected  # bit for bit the order of TensorBatches before the hash existed
    assert epoch_seed(3, 2, "consecutive") == 5 and epoch_seed(3, 2, "hashed") != epoch_seed(4, 1, "hashed")


def test_an_unknown_batch_order_is_one_line():
    with pytest.raises(ConfigError, match="data.batch_order='shuffled' is not one of the choices: hashed, consecutive"):
        TensorBatches(torch.zeros(2, 1), torch.arange(2), 1, shuffle=True, batch_order="shuffled")


def test_the_epoch_comes_from_the_trainer_when_given():
    epoch = {"now": 7}
    batches = PoissonBatches(torch.zeros(200, 1), torch.arange(200), 0.1, 3, seed=2, epoch_of=lambda: epoch["now"])
    first = [labels.tolist() for _, labels in batches]
    again = [labels.tolist() for _, labels in batches]  # a new loader or pass at the same epoch: the same masks
    assert first == again
    fresh = PoissonBatches(torch.zeros(200, 1), torch.arange(200), 0.1, 3, seed=2)
    fresh.epoch = 7
    assert [labels.tolist() for _, labels in fresh] == first


class StopAfter(L.Callback):
    """Interrupts a fit at the end of epoch ``epochs - 1``, as a killed run would leave it (after its checkpoint)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class RecordBatches(L.Callback):
    """Records each training batch's labels: the Poisson masks a fit drew, epoch by epoch."""

    def __init__(self):
        self.batches: list[tuple[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch[1].tolist()))


@pytest.mark.mnist
def test_an_interrupted_and_resumed_dpsgd_fit_equals_the_uninterrupted_one(compose_train, tmp_path):
    """Same Poisson masks per epoch, same spent ε, same weights: the resumed fit restores the accountant, the epoch
    (so the masks continue the sequence) and the RNG state (so Opacus's noise does too)."""
    overrides = ["model=lenet5_dp", "defense=dpsgd", "model.members=600", "model.batch_size=200"]
    cfg = compose_train([*overrides, "model.max_epochs=3"])
    recipe = recipe_with_defense(cfg, "model")

    def fit(folder: str, stop: list[L.Callback] = (), ckpt_path: str | None = None):
        record, saver = RecordBatches(), ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)
        system, metrics = fit_classifier(
            recipe, cfg.data, cfg.trainer, recipe.seed, callbacks=[record, saver, *stop], ckpt_path=ckpt_path
        )
        return system, metrics, record.batches

    whole, whole_metrics, whole_batches = fit("whole")
    fit("first", [StopAfter(2)])  # interrupted after two epochs ...
    resumed, resumed_metrics, resumed_batches = fit("resumed", ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    assert [epoch for epoch, _ in resumed_batches] == [2] * 3  # ... and resumed at the third
    assert resumed_batches == whole_batches[-3:]  # the masks of the uninterrupted third epoch
    assert resumed_metrics["privacy/epsilon"] == pytest.approx(whole_metrics["privacy/epsilon"], rel=1e-9)
    for name, value in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[name], value, rtol=0, atol=0)
