"""Crafted canaries (``canary_kind=crafted``): where they may light, how they are drawn and optimised, and small
audits that train on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privacy_attacks import cache
from privacy_attacks.attacks.audit.canaries import canaries_with_images, nonmember_pool
from privacy_attacks.attacks.audit.crafted import craft_images, least_variance_mask, random_patterns
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import generator

from .test_attack import TINY_COLOUR, spy_on_extra_train


def test_the_mask_takes_the_positions_that_vary_least():
    images = torch.rand(50, 1, 4, 4)
    images[:, 0, 0, :] = 0.0  # a black top row, as MNIST's border
    images[:, 0, 1, 0] = 0.3 + 0.001 * torch.rand(50)  # nearly constant
    mask = least_variance_mask(images, 5 / 16)
    assert mask.shape == (1, 4, 4) and int(mask.sum()) == 5
    assert bool(mask[0, 0].all()) and bool(mask[0, 1, 0])
    assert int(least_variance_mask(images, 1e-6).sum()) == 1  # at least one position


def test_patterns_light_the_mask_only_at_the_density_by_the_seed():
    mask = torch.zeros(1, 28, 28, dtype=torch.bool)
    mask[0, :4] = True  # 112 positions
    patterns = random_patterns(mask, 400, seed=3, density=0.1)
    assert patterns.shape == (400, 1, 28, 28) and set(patterns.unique().tolist()) <= {0.0, 1.0}
    assert float(patterns[:, ~mask].abs().sum()) == 0.0
    assert 0.08 < float(patterns[:, mask].mean()) < 0.12
    assert torch.equal(patterns, random_patterns(mask, 400, seed=3, density=0.1))  # the audit's own draw
    assert not torch.equal(patterns, random_patterns(mask, 400, seed=4, density=0.1))
    assert len({tuple(p.flatten().nonzero().flatten().tolist()) for p in patterns}) == 400  # each its own


def test_crafting_lowers_the_labels_probability_on_the_mask_within_range():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        net[1].weight.mul_(10.0)  # logits that the 8 pixels can move
    before = [parameter.clone() for parameter in net.parameters()]
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    patterns = random_patterns(mask, 30, seed=0, density=0.5)
    labels = torch.randint(0, 3, (30,), generator=generator(0, "labels"))
    crafted = craft_images(net, patterns, labels, mask, steps=50, lr=0.1, batch_size=7)

    @torch.no_grad()
    def log_p(images):
        return net(images).log_softmax(-1).gather(1, labels[:, None]).squeeze(1)

    assert float(log_p(crafted).mean()) < float(log_p(patterns).mean()) - 0.5
    assert float(crafted[:, ~mask].abs().sum()) == 0.0 and 0.0 <= float(crafted.min()) <= float(crafted.max()) <= 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # the reference unchanged
    assert torch.equal(craft_images(net, patterns, labels, mask, steps=0, lr=0.1), patterns)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["craft.pixels=0.0"], "craft.pixels=0.0"),
        (["craft.pixels=1.5"], "craft.pixels=1.5"),
        (["craft.density=0"], "craft.density=0"),
        (["craft.steps=-1"], "craft.steps=-1"),
        (["craft.lr=0"], "craft.lr=0"),
    ],
)
def test_bad_craft_settings_stop_before_any_work(compose_attack, cache_dir, overrides, message):
    cfg = compose_attack(["attack=audit", "canary_kind=crafted", *overrides])
    before = set(cache_dir.iterdir())
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert set(cache_dir.iterdir()) == before


CRAFTED = [*TINY_COLOUR, "canary_kind=crafted", "craft.pixels=0.1"]


def test_the_target_trains_on_the_crafted_canaries_that_came_up_in(compose_attack, cache_dir, monkeypatch):
    """Colour images of 5 classes: crafted canaries light only the positions the auditor's images vary least, carry
    labels among the data's classes, are cached, and the target trains on exactly the IN ones."""
    from privacy_attacks.data.identity import data_source

    cfg = compose_attack(CRAFTED)
    seen = spy_on_extra_train(monkeypatch)
    metrics = run_attack(cfg)
    assert metrics["audit/canaries"] == 40 and metrics["audit/canary_epsilon_lb"] >= 0.0
    canaries, images = canaries_with_images(cfg)  # from the cache now
    assert len(list(cache_dir.glob("canaries-*.pt"))) >= 1
    data = data_source(cfg.data).load()
    mask = least_variance_mask(data.train_images[nonmember_pool(cfg)], 0.1)
    assert images.shape == (40, 3, 32, 32) and float(images[:, ~mask].abs().sum()) == 0.0
    assert int(canaries.labels.max()) < 5 and torch.equal(canaries.indices, torch.arange(40))
    assert torch.equal(seen["extra"][0], images[canaries.included])
    assert torch.equal(seen["extra"][1], canaries.labels[canaries.included])
    assert not list(cache_dir.glob("canary-reference-*.pt"))  # steps=0: no reference model needed


def test_optimised_canaries_are_crafted_against_the_auditors_own_reference(compose_attack, cache_dir):
    """craft.steps > 0: a reference model of the target's recipe with a seed of the audit's own (never the target's)
    is trained and cached, and the canaries move from their drawn patterns within the mask."""
    from privacy_attacks.data.identity import data_source

    cfg = compose_attack([*CRAFTED, "craft.steps=3", "seed=7"])
    metrics = run_attack(cfg)
    assert 0 <= metrics["audit/canary_correct"] <= 10
    references = [cache.read(path)["spec"] for path in cache_dir.glob("canary-reference-*.pt")]
    assert references and all(spec["recipe"]["seed"] != cfg.target.seed for spec in references)
    _, optimised = canaries_with_images(cfg)
    _, drawn = canaries_with_images(compose_attack([*CRAFTED, "seed=7"]))
    mask = least_variance_mask(data_source(cfg.data).load().train_images[nonmember_pool(cfg)], 0.1)
    assert not torch.equal(optimised, drawn) and float(optimised[:, ~mask].abs().sum()) == 0.0


@pytest.mark.mnist
def test_under_dp_sgd_the_crafted_bound_stays_below_the_accountants_epsilon(compose_attack):
    cfg = compose_attack(
        [
            "attack=audit",
            "canary_kind=crafted",
            "target.members=100",
            "target.max_epochs=2",
            "canaries=40",
            "guesses_in=10",
            "guesses_out=10",
            "defense=dpsgd",
            "defense.epsilon=1",
        ]
    )
    metrics = run_attack(cfg)
    assert 0.9 <= metrics["target/privacy/epsilon"] <= 1.0
    assert 0.0 <= metrics["audit/canary_epsilon_lb"] <= metrics["target/privacy/epsilon"]
