"""DP-SGD (a training defence): one private step against the plain one, the accountant, the config, a tiny fit."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant

from privacy_attacks.defenses import DPSGD, defense_from_config, recipe_with_defense
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import DeskewedLeNet5, LeNet5
from privacy_attacks.pipelines import run_attack, run_train
from privacy_attacks.targets import checkpoint_path, provision_target


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _private_step(net: torch.nn.Module, images, labels, defense: DPSGD) -> list[torch.Tensor]:
    """The gradient one DP-SGD step applies (plain SGD at lr 1: the step is minus the gradient)."""
    before = [p.detach().clone() for p in net.parameters()]
    private = defense.make_private(net, torch.optim.SGD(net.parameters(), lr=1.0), 0.1, len(labels), 1)
    F.cross_entropy(net(images), labels).backward()
    private.optimizer.step()
    private.close()
    return [b - p.detach() for b, p in zip(before, net.parameters())]


@pytest.mark.parametrize("network", [LeNet5, DeskewedLeNet5])
def test_without_noise_or_clipping_a_private_step_is_the_plain_step(network):
    torch.manual_seed(0)
    net, images, labels = network(), *_batch()
    plain = copy.deepcopy(net)
    F.cross_entropy(plain(images), labels).backward()
    unclipped = DPSGD(noise_multiplier=0.0, max_grad_norm=1e9)
    for got, want in zip(_private_step(net, images, labels, unclipped), [p.grad for p in plain.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), [("resnet18", {}), ("mobilenet_v3_small", {"dropout": 0.0})])
def test_a_torchvision_network_with_group_norm_takes_the_plain_step_without_noise_or_clipping(name, kwargs):
    """Its blocks add to a norm's output in place, and its activations were in place: DP-SGD's hooks take it.
    (MobileNet without its dropout, which would draw other masks in the two passes.)"""
    from privacy_attacks.models import torchvision_classifier

    torch.manual_seed(0)
    net = torchvision_classifier(name, (1, 28, 28), 10, norm="group", **kwargs)
    images, labels = _batch(4)
    plain = copy.deepcopy(net)
    F.cross_entropy(plain(images), labels).backward()
    unclipped = DPSGD(noise_multiplier=0.0, max_grad_norm=1e9)
    for got, want in zip(_private_step(net, images, labels, unclipped), [p.grad for p in plain.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("network", [LeNet5, DeskewedLeNet5])  # the deskew layer: part of each example's function
def test_each_examples_gradient_is_clipped_before_the_mean(network):
    torch.manual_seed(0)
    net, images, labels = network(), *_batch()
    bound = 0.05
    clipped_sum = [torch.zeros_like(p) for p in net.parameters()]
    for x, y in zip(images, labels):  # one example at a time, clipped by hand
        grads = torch.autograd.grad(F.cross_entropy(net(x[None]), y[None]), list(net.parameters()))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        assert norm > bound  # the bound binds
        for total, g in zip(clipped_sum, grads):
            total += g * (bound / (norm + 1e-6))
    got = _private_step(net, images, labels, DPSGD(noise_multiplier=0.0, max_grad_norm=bound))
    for step, total in zip(got, clipped_sum):
        torch.testing.assert_close(step, total / len(labels), rtol=1e-4, atol=1e-7)


def test_the_spent_epsilon_is_the_accountants_and_the_derived_noise_reaches_the_target():
    defense = DPSGD(epsilon=3.0, delta=1e-5)
    sample_rate, epochs = 0.25, 2
    net, (images, labels) = LeNet5(), _batch(8)
    private = defense.make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), sample_rate, 2.0, epochs)
    for _ in range(int(epochs / sample_rate)):
        private.optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        private.optimizer.step()
    reference = RDPAccountant()
    reference.history = [(private.noise_multiplier, sample_rate, 8)]
    assert private.metrics()["privacy/epsilon"] == reference.get_epsilon(delta=1e-5)
    assert 2.98 <= private.epsilon() <= 3.0  # the smallest noise that spends at most ε (Opacus's tolerance 0.01)
    assert private.metrics()["privacy/delta"] == 1e-5


@pytest.mark.parametrize(("poisson_sampling", "flag"), [(True, 1.0), (False, 0.0)])
def test_epsilon_without_poisson_sampling_is_flagged_and_warned_about_once(caplog, poisson_sampling, flag):
    net = LeNet5()
    defense = DPSGD(noise_multiplier=1.0, poisson_sampling=poisson_sampling)
    with caplog.at_level(logging.WARNING, logger="privacy_attacks.defenses.training"):
        private = defense.make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), 0.1, 10, 1)
    private.close()
    assert private.metrics()["privacy/poisson_sampling"] == flag
    warnings = [r for r in caplog.records if "assumes Poisson sampling that did not happen" in r.getMessage()]
    assert len(warnings) == (0 if poisson_sampling else 1)


def test_a_network_with_batch_norm_is_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="cannot train Sequential privately"):
        DPSGD().make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), 0.1, 10, 1)


def test_defense_dpsgd_enters_the_recipe_of_train_and_attack(compose_train, compose_attack, tmp_path):
    train = compose_train(["defense=dpsgd", "defense.epsilon=3"])
    recipe = recipe_with_defense(train, "model")
    assert recipe.privacy.epsilon == 3 and recipe.privacy._target_ == "privacy_attacks.defenses.DPSGD"
    plain_cfg = compose_train([])
    assert recipe_with_defense(plain_cfg, "model") is plain_cfg.model  # defense=none leaves the recipe alone
    plain = checkpoint_path(compose_train([]).model, train.data, tmp_path)
    assert checkpoint_path(recipe, train.data, tmp_path) != plain  # a private target is cached apart
    for attack in ("membership", "distillation", "inversion", "feature_inversion"):
        cfg = compose_attack([f"attack={attack}", "defense=dpsgd"])
        assert recipe_with_defense(cfg, "target").privacy.delta == 1e-5
        assert defense_from_config(cfg, "api") is None  # the API answers as without a defence


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["defense.epsilon=0"], "defense.epsilon"),
        (["defense.epsilon=-1"], "defense.epsilon"),
        (["defense.delta=1"], r"defense.delta=1 is not allowed: it must be a number in \(0, 1\)"),
        (["defense.delta=0"], "defense.delta"),
        (["defense.max_grad_norm=0"], "defense.max_grad_norm"),
        (["defense.noise_multiplier=-1"], "defense.noise_multiplier"),
        (["defense.accountant=moments"], "defense.accountant"),
    ],
)
def test_a_bad_dp_setting_stops_train_and_attack_before_any_work(
    compose_train, compose_attack, tmp_path, overrides, message
):
    empty = f"paths.cache_dir={tmp_path}/empty_cache"
    with pytest.raises(ConfigError, match=message):
        run_train(compose_train(["defense=dpsgd", *overrides, empty]))
    with pytest.raises(ConfigError, match=message):
        run_attack(compose_attack(["attack=membership", "defense=dpsgd", *overrides, empty]))
    assert not (tmp_path / "empty_cache").exists()


def test_a_defense_a_run_does_not_meet_stops_it(compose_train, compose_attack, tmp_path):
    with pytest.raises(ConfigError, match="train.py does not meet"):
        run_train(compose_train(["defense=topk"]))
    with pytest.raises(ConfigError, match="attack=gradient_inversion does not meet"):
        run_attack(compose_attack(["attack=gradient_inversion", "defense=dpsgd", f"paths.cache_dir={tmp_path}/x"]))


@pytest.mark.mnist
def test_a_tiny_private_fit_reports_the_epsilon_it_spent(compose_train, compose_attack, tmp_path):
    # The membership target's recipe (batch 32), on 500 members for one epoch: 16 Poisson batches.
    tiny = ["model=lenet5_members", "model.max_epochs=1", "model.members=500", "defense=dpsgd", "defense.epsilon=8"]
    metrics = run_train(compose_train(tiny))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["privacy/epsilon"] == pytest.approx(metrics["privacy/epsilon"])
    reference = RDPAccountant()
    reference.history = [(metrics["privacy/noise_multiplier"], 1 / 16, 16)]
    assert metrics["privacy/epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-5))
    assert 7.9 <= metrics["privacy/epsilon"] <= 8.0 and metrics["privacy/delta"] == 1e-5
    assert written["privacy/poisson_sampling"] == metrics["privacy/poisson_sampling"] == 1.0
    assert 0.0 <= metrics["test/acc"] <= 1.0

    # The attack side finds the same private target in the cache and reports the ε it spent.
    attack = compose_attack(["attack=membership", "method=loss", "defense=dpsgd", "eval_members=100"])
    attack.target.max_epochs, attack.target.members = 1, 500
    target = provision_target(attack)
    assert target.metrics["privacy/epsilon"] == pytest.approx(metrics["privacy/epsilon"])
    attacked = run_attack(attack)
    assert attacked["target/privacy/epsilon"] == pytest.approx(metrics["privacy/epsilon"])
    assert attacked["target/privacy/poisson_sampling"] == 1.0
    # The membership attack's heuristic ε is reported at the target's δ. It is not compared with the accountant's ε:
    # it is no certified bound, and 50 + 50 measured images reach at most about 2.6 < 8 (its behaviour on simulated
    # ε-DP trials is tested in tests/attacks/membership/test_audit.py).
    assert attacked["mia/epsilon_heuristic_delta"] == attacked["target/privacy/delta"] == attack.defense.delta
