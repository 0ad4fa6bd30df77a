"""The one-run canary audit: config errors before any work, the canaries and their coins, and small real runs."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.audit import canaries as canary_module
from privacy_attacks.attacks.audit import validate
from privacy_attacks.attacks.audit.attack import guess
from privacy_attacks.attacks.audit.canaries import draw_canaries, nonmember_pool
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import generator

# A target that trains in seconds: 100 members + about 20 of 40 canaries, 10 epochs.
TINY = [
    "attack=audit",
    "target.members=100",
    "target.max_epochs=10",
    "canaries=40",
    "guesses_in=5",
    "guesses_out=5",
]
LABELS = torch.arange(60_000) % 10  # the training set's labels, for draws that need no image


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["canaries=0"], "canaries=0"),
        (["canaries=-5"], "canaries=-5"),
        (["guesses_in=600", "guesses_out=600"], "guesses_in \\+ guesses_out = 1200"),
        (["guesses_in=0", "guesses_out=0"], "guesses_in \\+ guesses_out = 0"),
        (["guesses_in=-1"], "guesses_in=-1"),
        (["canary_kind=poisoned"], "mislabelled, clean, crafted, dirac"),
        (["canary_kind=dirac"], "set defense=dpsgd"),  # white-box canaries join DP-SGD's clipped sums
        (["canary_kind=dirac", "defense=grid/dpsgd_eps8", "canaries=70000"], "has 61706 trainable parameters"),
        (["observation=every_step"], "all_iterates, last_iterate"),
        (["dirac_score=max"], "likelihood_ratio, sum"),
        (["score=nope"], "loss"),
        (["confidence=1.5"], "confidence=1.5"),
        (["audit_delta=1.0"], "audit_delta=1.0"),
        (["canaries=60000", "guesses_in=10"], "more than the 50000 images"),
        (["target.members=null"], "set target.members"),
        (["target.members=60000"], "target.members=60000 is not allowed"),  # the key a user types
        (["defense=noise"], "does not meet"),  # an API defence: the audit meets the target's training only
    ],
)
def test_bad_input_stops_before_any_work(compose_attack, cache_dir, overrides, message):
    cfg = compose_attack(["attack=audit", *overrides])
    before = set(cache_dir.iterdir())
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert set(cache_dir.iterdir()) == before  # nothing trained, nothing cached


def test_the_default_config_is_valid_and_composes_with_dp_sgd(compose_attack):
    validate(compose_attack(["attack=audit"]))
    cfg = compose_attack(["attack=audit", "defense=grid/dpsgd_eps1"])
    validate(cfg)
    from privacy_attacks.defenses import recipe_with_defense

    assert recipe_with_defense(cfg, "target").privacy.epsilon == 1.0


def test_canaries_are_non_members_and_each_is_in_by_its_own_coin(compose_attack):
    cfg = compose_attack(["attack=audit", "canaries=500"])
    canaries = draw_canaries(cfg, LABELS)
    coins = torch.rand(500, generator=generator(cfg.seed, "canary_inclusion")) < 0.5
    assert torch.equal(canaries.included, coins)  # the audit's coins, drawn from its seed
    assert 200 < int(canaries.included.sum()) < 300
    assert len(canaries.indices.unique()) == 500
    assert set(canaries.indices.tolist()) <= set(nonmember_pool(cfg).tolist())
    members = split_training_indices(cfg.data.val_size, cfg.data.split_seed, cfg.target.members)["train"]
    assert not set(canaries.indices.tolist()) & set(members.tolist())
    assert bool((canaries.labels != LABELS[canaries.indices]).all())  # mislabelled: every label wrong
    clean = draw_canaries(compose_attack(["attack=audit", "canaries=500", "canary_kind=clean"]), LABELS)
    assert torch.equal(clean.labels, LABELS[clean.indices]) and torch.equal(clean.included, coins)
    other = draw_canaries(compose_attack(["attack=audit", "canaries=500", "seed=1"]), LABELS)
    assert not torch.equal(other.included, coins) and not torch.equal(other.indices, canaries.indices)


def test_a_kind_of_canary_is_a_node_of_canary_kinds(compose_attack):
    node = "{_target_:privacy_attacks.attacks.audit.canaries.DatasetCanaries,wrong_labels:false}"
    cfg = compose_attack(["attack=audit", "canaries=500", "canary_kind=mine", f"+canary_kinds.mine={node}"])
    validate(cfg)
    mine = draw_canaries(cfg, LABELS)
    assert torch.equal(mine.labels, LABELS[mine.indices])  # its own labels, as its node says
    not_a_kind = "{_target_:collections.OrderedDict}"
    cfg = compose_attack(["attack=audit", "canary_kind=mine", f"+canary_kinds.mine={not_a_kind}"])
    with pytest.raises(ConfigError, match="canary_kinds.mine builds an object of class OrderedDict, not a kind of"):
        validate(cfg)


def test_guesses_take_the_highest_in_and_the_lowest_out():
    scores = torch.tensor([0.5, 3.0, -1.0, 2.0, 0.0, -2.0])
    assert guess(scores, 2, 1).tolist() == [0, 1, 0, 1, 0, -1]
    assert guess(scores, 0, 3).tolist() == [0, 0, -1, 0, -1, -1]


@pytest.mark.mnist
def test_the_target_trains_on_its_members_and_exactly_the_canaries_in(compose_attack, monkeypatch):
    from privacy_attacks import targets
    from privacy_attacks.data.mnist import load_mnist
    from privacy_attacks.training import build_datamodule

    cfg = compose_attack(TINY)
    seen = {}

    def fit(recipe, data, trainer, seed, *, extra_train=None, **kwargs):
        module = build_datamodule(data, recipe, extra_train)
        module.setup("fit")
        seen["train"] = module.tensors["train"]
        raise RuntimeError("stop: the training set is all this test needs")

    monkeypatch.setattr(targets, "fit_classifier", fit)  # the canary target trains through provision_classifier
    with pytest.raises(RuntimeError, match="stop"):
        canary_module.provision_canary_target(cfg)
    images, labels = load_mnist(cfg.data.root, train=True)
    canaries = draw_canaries(cfg, labels)
    index = split_training_indices(cfg.data.val_size, cfg.data.split_seed, 100)["train"]
    inside = canaries.indices[canaries.included]
    train_images, train_labels = seen["train"]
    assert len(train_labels) == 100 + len(inside)
    assert torch.equal(train_images, torch.cat([images[index], images[inside]]))
    assert torch.equal(train_labels, torch.cat([labels[index], canaries.labels[canaries.included]]))


# The tiny target trained until it memorises its mislabelled IN canaries (within seconds: larger step, one validation
# batch per epoch), with 20 guesses: all right give 1.82 at 95%, so a bound of 0 and one above ε = 1 are reachable.
MEMORISED = [
    *TINY,
    "target.max_epochs=20",
    "target.optimizer.lr=0.005",
    "+trainer.limit_val_batches=1",
    "guesses_in=10",
    "guesses_out=10",
]


@pytest.mark.mnist
@pytest.mark.parametrize("defense", ["none", "dpsgd"])
def test_a_small_audit_runs_and_reports_beside_the_accountant(compose_attack, cache_dir, defense):
    overrides = ["defense.epsilon=1", "target.max_epochs=2"] if defense == "dpsgd" else []
    cfg = compose_attack([*MEMORISED, f"defense={defense}", *overrides])
    metrics = run_attack(cfg)
    assert metrics["audit/canaries"] == 40 and metrics["audit/canary_guesses"] == 20
    assert 0 <= metrics["audit/canary_correct"] <= 20 and 0.0 <= metrics["target/test_acc"] <= 1.0
    assert len(list(cache_dir.glob("canary-target-*.pt"))) >= 1
    if defense == "dpsgd":
        assert 0.9 <= metrics["target/privacy/epsilon"] <= 1.0  # the canary target's own accountant
        assert metrics["audit/canary_epsilon_lb"] <= metrics["target/privacy/epsilon"]  # 1.82 was reachable
    else:
        # Without DP the IN canaries are memorised and the OUT ones are not, so most guesses are right and the bound
        # is positive: it needs 15 of 20 right (0 with guesses swapped, scores negated or the coins ignored).
        assert "target/privacy/epsilon" not in metrics
        assert metrics["audit/canary_fit_in"] > 0.5 > metrics["audit/canary_fit_out"]
        assert metrics["audit/canary_correct"] >= 15 and metrics["audit/canary_epsilon_lb"] > 0.0
    assert run_attack(cfg)["audit/canary_epsilon_lb"] == metrics["audit/canary_epsilon_lb"]  # from the cache


# Synthetic colour images of 5 classes, small enough for seconds: 800 training images (60 for validation), a small
# VGG-style target of 100 members, 40 canaries from the other 640.
TINY_COLOUR = [
    *TINY,
    "data=synthetic",
    "data.image_shape=[3,32,32]",
    "data.num_classes=5",
    "data.source.train_size=800",
    "data.source.test_size=60",
    "data.val_size=60",
    "model@target=cnn",
    "target.net.width=8",
    "target.max_epochs=2",
]


def spy_on_extra_train(monkeypatch) -> dict:
    """``seen["extra"]``: the (images, labels) the next target fit trains on beside its members (the fit runs)."""
    from privacy_attacks import targets

    seen, real_fit = {}, targets.fit_classifier

    def spy_fit(recipe, data_cfg, trainer, seed, *, extra_train=None, **kwargs):
        seen["extra"] = extra_train
        return real_fit(recipe, data_cfg, trainer, seed, extra_train=extra_train, **kwargs)

    monkeypatch.setattr(targets, "fit_classifier", spy_fit)
    return seen


def test_the_audit_runs_on_colour_images_with_canaries_from_the_data(compose_attack, cache_dir, monkeypatch):
    """3x32x32 images of 5 classes: canaries are the data's own non-member images, each with a wrong label among
    its 5 classes, and the canary target (the data's recipe) trains on its members plus the IN canaries."""
    from privacy_attacks.data.identity import data_source
    from privacy_attacks.data.tensors import split_indices

    cfg = compose_attack(TINY_COLOUR)
    data = data_source(cfg.data).load()
    canaries = draw_canaries(cfg, data.train_labels)
    members = split_indices(60, cfg.data.split_seed, 100, 800)["train"]
    assert set(canaries.indices.tolist()) <= set(nonmember_pool(cfg).tolist()) and int(canaries.indices.max()) < 800
    assert not set(canaries.indices.tolist()) & set(members.tolist()) and len(nonmember_pool(cfg)) == 640
    assert bool((canaries.labels != data.train_labels[canaries.indices]).all()) and int(canaries.labels.max()) < 5
    seen = spy_on_extra_train(monkeypatch)
    metrics = run_attack(cfg)
    assert metrics["audit/canaries"] == 40 and metrics["audit/canary_guesses"] == 10
    assert 0 <= metrics["audit/canary_correct"] <= 10 and 0.0 <= metrics["target/test_acc"] <= 1.0
    inside = canaries.included
    assert torch.equal(seen["extra"][0], data.train_images[canaries.indices[inside]])
    assert torch.equal(seen["extra"][1], canaries.labels[inside]) and seen["extra"][0].shape[1:] == (3, 32, 32)
    from privacy_attacks import cache

    specs = [cache.read(path)["spec"] for path in cache_dir.glob("canary-target-*.pt")]
    assert any(spec.get("data", {}).get("name") == "synthetic" for spec in specs)


def test_the_canary_count_is_checked_against_the_datas_size_before_any_work(compose_attack, cache_dir):
    cfg = compose_attack([*TINY_COLOUR, "canaries=700", "guesses_in=5"])
    before = set(cache_dir.iterdir())
    with pytest.raises(ConfigError, match="canaries=700 is more than the 640 images"):
        run_attack(cfg)
    assert set(cache_dir.iterdir()) == before


@pytest.mark.fashion_mnist
def test_the_audit_runs_on_fashion_mnist(compose_attack):
    cfg = compose_attack([*TINY, "data=fashion_mnist", "data.val_size=1000", "target.max_epochs=2"])
    assert cfg.target.net._target_.endswith("LeNet5")
    metrics = run_attack(cfg)
    assert metrics["audit/canaries"] == 40 and 0.0 <= metrics["target/test_acc"] <= 1.0
    from privacy_attacks.data.identity import data_source

    labels = data_source(cfg.data).load().train_labels
    canaries = draw_canaries(cfg, labels)
    assert bool((canaries.labels != labels[canaries.indices]).all())
