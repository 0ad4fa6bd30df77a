"""Membership inference end to end: config errors before any work, and a real small run of each method, on MNIST,
synthetic colour images and Fashion-MNIST."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import privacy_attacks.pipelines as pipelines
from privacy_attacks.attacks.membership import validate
from privacy_attacks.attacks.membership.attack import build_attack, build_split, shadow_defense
from privacy_attacks.defenses import GaussianNoise, Rounding
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack
from privacy_attacks.targets import provision_target
from tests.conftest import attack_config, run_script

METHODS = list(attack_config("membership").methods)  # every method the config offers
# A deliberately leaky tiny target: 100 members fitted to 100% (60 epochs), 50 + 50 evaluation images,
# 4 shadow (and RMIA reference) models, 100 RMIA population points: seconds per method, and every method must
# beat chance on it.
TINY = [
    "target.members=100",
    "target.max_epochs=60",
    "eval_members=50",
    "attacker_size=600",
    "num_shadows=4",
    "num_population=100",
    "methods.shadow.num_shadows=4",
    "methods.shadow.epochs=20",
    "methods.proxy.epochs=20",
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=nope"], "proxy, shadow, loss"),
        (["target.members=100000"], "members=100000"),
        (["attacker_offset=0"], "overlap"),
        (["eval_members=6000"], "eval_members"),
        (["api.output=nope"], "probs, logits"),
        (["method=lira", "num_shadows=5"], "even"),
        (["target.members=null"], "target.members"),
        (["query_budget=0"], "query_budget=0"),
        (
            ["target.members=1000", "query_budget=2999"],
            "at least 3000",
        ),  # proxy: 1,000 + 1,000 (reference) + 1,000 evaluation images
        (
            ["target.members=1000", "method=loss", "query_budget=1999"],
            "at least 2000",
        ),  # 1,000 evaluation + 1,000 calibration images
        (["target.members=1000", "method=lira", "query_budget=999"], "at least 1000"),
        (
            ["target.members=1000", "eval_members=501"],
            "eval_members <= 500",
        ),  # two disjoint evaluation sets of 1,000 members
        (["eval_set=all"], "report, tune"),
        (["method=lira", "shadow_privacy=true"], "add defense=dpsgd"),
        (["method=lira", "defense=dpsgd", "shadow_defense=true"], "use shadow_privacy=true"),
        (["method=proxy", "defense=rounding", "shadow_defense=true"], "method=proxy has none"),
        (["method=loss", "defense=topk", "shadow_defense=true"], "method=loss has none"),
        (["method=lira", "defense=rounding", "shadow_defense=maybe"], "true or false"),
        (["target.members=1000", "method=lira", "eval_nonmembers=501"], "make eval_members \\+ eval_nonmembers even"),
        (["eval_nonmembers=-1"], "eval_nonmembers=-1"),
        (["audit_delta=1"], "audit_delta=1 is not allowed"),
        # The attacker's own network is checked as the target's is: batch norm under the target's DP-SGD, the data.
        (
            ["method=lira", "net@attacker_net=cnn", "defense=dpsgd", "shadow_privacy=true"],
            r"cannot train SmallVGG privately .*\(attacker_net.norm=group\)",
        ),
        (["method=lira", "net@attacker_net=mlp", "attacker_net.num_classes=7"], "set attacker_net.num_classes=10"),
    ],
)
def test_bad_input_is_a_config_error(compose_attack, overrides, message):
    cfg = compose_attack(["attack=membership", *overrides])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_shadow_privacy_gives_the_shadow_models_the_targets_dp_sgd(compose_attack):
    from privacy_attacks.attacks.membership.attack import shadow_recipe

    cfg = compose_attack(["attack=membership", "method=lira", "defense=dpsgd", "defense.epsilon=3"])
    assert shadow_recipe(cfg).get("privacy") is None  # by default the attacker trains shadows without DP
    cfg = compose_attack(
        ["attack=membership", "method=lira", "defense=dpsgd", "defense.epsilon=3", "shadow_privacy=true"]
    )
    validate(cfg)
    assert shadow_recipe(cfg).privacy.epsilon == 3.0
    assert shadow_recipe(cfg).privacy._target_ == "privacy_attacks.defenses.DPSGD"


def test_shadow_defense_gives_the_attacker_the_apis_defense_with_its_own_randomness(compose_attack):
    cfg = compose_attack(["attack=membership", "method=lira", "defense=rounding"])
    assert shadow_defense(cfg, build_attack(cfg)) is None  # by default the shadow models answer undefended
    cfg = compose_attack(["attack=membership", "method=lira", "shadow_defense=true"])
    validate(cfg)
    assert shadow_defense(cfg, build_attack(cfg)) is None  # defense=none: nothing to apply
    cfg = compose_attack(["attack=membership", "method=rmia", "defense=rounding", "shadow_defense=true"])
    validate(cfg)
    assert isinstance(shadow_defense(cfg, build_attack(cfg)), Rounding)
    overrides = ["attack=membership", "method=shadow", "defense=noise", "shadow_defense=true", "seed=2"]
    cfg = compose_attack(overrides)
    noise = shadow_defense(cfg, build_attack(cfg))
    assert isinstance(noise, GaussianNoise) and noise.std == cfg.defense.std and noise.seed != cfg.defense.seed


def test_default_config_is_the_proxy_attack_on_a_1000_member_target(compose_attack):
    cfg = compose_attack(["attack=membership"])
    assert cfg.method == "proxy" and cfg.attack.name == "membership"
    cfg = compose_attack(["attack=membership", "target.members=1000"])
    validate(cfg)
    validate(
        compose_attack(["attack=membership", "target.members=1000", "query_budget=3000"])
    )  # exactly what the proxy attack asks


@pytest.mark.parametrize(
    ("method", "nonmembers"),
    [("loss", 20000), ("lira_offline", 20000), ("rmia_offline", 20000), ("proxy", 5000), ("shadow", 5000),
     ("lira", 1500), ("rmia", 1300), ("lira", 5000), ("rmia", 5000)],
)  # fmt: skip
def test_every_method_takes_more_nonmembers_than_members_where_they_fit(compose_attack, method, nonmembers):
    # Online LiRA: 500 + 1,500 evaluation images, what online shadow models of 1,000 images hold; online RMIA
    # keeps 200 of them for its population. 500 + 5,000: each online model trains on 1,000 of them.
    overrides = [f"method={method}", "target.members=1000", f"eval_nonmembers={nonmembers}", "num_population=200"]
    cfg = compose_attack(["attack=membership", *overrides])
    validate(cfg)
    split = build_split(cfg)
    assert int(split.eval_membership.sum()) == 500 and int((split.eval_membership == 0).sum()) == nonmembers


@pytest.mark.parametrize("members", [1000, 10000])
@pytest.mark.parametrize("method", ["proxy", "shadow", "loss", "lira"])
def test_the_sweep_over_target_sizes_is_valid(compose_attack, method, members):
    validate(compose_attack(["attack=membership", f"method={method}", f"target.members={members}"]))


@pytest.mark.slow
def test_bad_input_exits_before_any_work(tmp_path, cache_dir):
    result = run_script("attack.py", ["attack=membership", "attacker_offset=0", "logger=none"], tmp_path, cache_dir)
    assert result.returncode == 2
    assert "overlap" in result.stderr and "Traceback" not in result.stderr
    assert not list(cache_dir.glob("shadows-*.pt"))


@pytest.mark.mnist
@pytest.mark.slow
def test_every_method_beats_chance_on_a_leaky_target_in_a_real_multirun(tmp_path, cache_dir, compose_attack):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "attack=membership",
        f"method={','.join(METHODS)}",
        *TINY,
        "logger=none",
        "+trainer.enable_progress_bar=false",
        "data.download=false",
        f"hydra.sweep.dir={sweep}",
    ]
    # 13 jobs in one process: the limit only stops a hung run (a busy machine takes over 10 minutes), never a slow one.
    result = run_script("attack.py", args, tmp_path, cache_dir, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["method"] for row in rows) == sorted(METHODS)
    for job in range(len(METHODS)):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert metrics["target/train_acc"] == 1.0 and metrics["target/gap"] > 0.05  # the leaky target
        assert metrics["mia/members"] == metrics["mia/nonmembers"] == 50
        assert metrics["mia/auc_ci_low"] > 0.5, (METHODS[job], metrics["mia/auc"])  # beats chance, the whole interval
        assert (sweep / str(job) / "roc.png").stat().st_size > 0
        # The budget check before the run counts exactly the queries the run makes.
        cfg = compose_attack(["attack=membership", f"method={METHODS[job]}", *TINY])
        split = build_split(cfg)
        sizes = (cfg.shadow_train_size, len(split.eval_indices), len(split.attacker))
        assert metrics["queries/used"] == build_attack(cfg).queries_needed(*sizes) >= 100
    assert (sweep / "roc_sweep.png").stat().st_size > 0
    assert "Best job by mia/auc" in result.stdout


# Synthetic colour images with statistics per channel (as CIFAR's), small enough for seconds per method: 800 training
# images (60 for validation), a 200-member target, 50 + 50 evaluation images, 2 shadow (and reference) models of 100.
TINY_COLOUR = [
    "data=synthetic",
    "data.image_shape=[3,32,32]",
    "data.mean=[0.5,0.4,0.3]",
    "data.std=[0.25,0.25,0.25]",
    "data.num_classes=5",
    "data.source.train_size=800",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=200",
    "target.max_epochs=2",
    "eval_members=50",
    "shadow_train_size=100",
    "num_shadows=2",
    "num_ref_models=2",
    "num_population=40",
    "methods.shadow.num_shadows=2",
    "methods.shadow.epochs=3",
    "methods.proxy.epochs=3",
]


def spy_shadow_models(monkeypatch) -> list[dict]:
    """Record the recipe and the images every shadow (or reference) model trains on."""
    from privacy_attacks.attacks.membership import lira, shokri

    calls, real = [], shokri.provision_shadow_models

    def spy(recipe, images, labels, *args, **kwargs):
        calls.append({"recipe": recipe, "images": images, "labels": labels})
        return real(recipe, images, labels, *args, **kwargs)

    monkeypatch.setattr(shokri, "provision_shadow_models", spy)
    monkeypatch.setattr(lira, "provision_shadow_models", spy)
    return calls


CNN = ["model@target=cnn", "target.net.width=8"]
RESNET = ["model@target=resnet", "target.net.depth=8", "target.net.width=8"]


@pytest.mark.parametrize(
    ("method", "model"),
    [*((method, CNN) for method in METHODS), ("lira", RESNET), ("proxy", RESNET)],
    ids=[*(f"{method}-cnn" for method in METHODS), "lira-resnet", "proxy-resnet"],
)
def test_every_method_runs_on_colour_images_with_shadows_of_the_targets_recipe(
    compose_attack, monkeypatch, method, model
):
    """3x32x32 images of 5 classes: the split, the evaluation and attacker images come from the configured data;
    shadow and reference models are the target's network, trained on the data's images."""
    from privacy_attacks.data.identity import data_source

    calls = spy_shadow_models(monkeypatch)
    cfg = compose_attack(["attack=membership", f"method={method}", *TINY_COLOUR, *model])
    metrics = run_attack(cfg)
    assert metrics["mia/members"] == metrics["mia/nonmembers"] == 50
    assert 0 <= metrics["mia/auc"] <= 1 and 0 <= metrics["target/train_acc"] <= 1
    data = data_source(cfg.data).load()
    assert metrics["target/test_acc"] == pytest.approx(
        (provision_target(cfg).net(data.test_images).argmax(1) == data.test_labels).float().mean().item()
    )
    split = build_split(cfg)
    assert len(split.members) == 200 and max(split.members.max(), split.attacker.max()) < 800
    for call in calls:
        assert call["recipe"].net == cfg.target.net and call["images"].shape[1:] == (3, 32, 32)
        assert int(call["labels"].max()) < 5
    assert bool(calls) == build_attack(cfg).shadow_answers


@pytest.mark.parametrize("method", ["lira", "proxy"])
def test_shadow_models_and_proxy_of_another_network_than_the_targets(compose_attack, monkeypatch, method):
    """``net@attacker_net=cnn`` against an MLP target: the attacker's models are the CNN, with the target's recipe."""
    from privacy_attacks.attacks.membership import proxy
    from privacy_attacks.models import MLP, SmallVGG

    calls, proxies, real_distil = spy_shadow_models(monkeypatch), [], proxy.distil
    monkeypatch.setattr(
        proxy, "distil", lambda api, images, net, *a, **k: proxies.append(net) or real_distil(api, images, net, *a, **k)
    )
    overrides = [*TINY_COLOUR, "net@target.net=mlp", "target.net.width=16", "net@attacker_net=cnn"]
    cfg = compose_attack(["attack=membership", f"method={method}", *overrides, "attacker_net.width=8"])
    metrics = run_attack(cfg)
    assert 0 <= metrics["mia/auc"] <= 1 and isinstance(provision_target(cfg).net, MLP)
    assert all(call["recipe"].net._target_.endswith("SmallVGG") and call["recipe"].net.width == 8 for call in calls)
    assert all(call["recipe"].max_epochs == cfg.target.max_epochs for call in calls)
    assert all(isinstance(net, SmallVGG) for net in proxies) and bool(calls or proxies)


@pytest.mark.fashion_mnist
def test_membership_on_fashion_mnist_with_lenet5(compose_attack, monkeypatch):
    calls = spy_shadow_models(monkeypatch)
    overrides = ["data=fashion_mnist", "method=lira", "target.members=500", "target.max_epochs=2", "eval_members=100"]
    cfg = compose_attack(["attack=membership", *overrides, "num_shadows=2", "shadow_train_size=300"])
    assert cfg.target.net._target_.endswith("LeNet5")
    metrics = run_attack(cfg)
    assert metrics["mia/members"] == 100 and 0 <= metrics["mia/auc"] <= 1
    assert provision_target(cfg).spec["data"]["name"] == "fashion_mnist"
    assert len(calls) == 1 and calls[0]["recipe"].net == cfg.target.net


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=proxy", "features=[top_k]", "top_k=6"], r"top_k=6 is not allowed: .*data=synthetic has 5 classes"),
        (
            ["method=loss", "target.members=1000"],
            r"target.members=1000 is not allowed: it must be an integer between 1 and 740 \(800",
        ),
        (["method=loss", "eval_members=150"], r"eval_members=150 is not allowed"),
    ],
)
def test_sizes_and_class_counts_are_checked_against_the_data_before_any_work(
    compose_attack, monkeypatch, overrides, message
):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    cfg = compose_attack(["attack=membership", *TINY_COLOUR, "model@target=cnn", *overrides])
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    validate(compose_attack(["attack=membership", *TINY_COLOUR, "model@target=cnn", "features=[top_k]", "top_k=5"]))


@pytest.mark.parametrize(
    ("scores", "predictions", "problem"),
    [
        (torch.zeros(4, 2), torch.zeros(4), r"scores of shape \(4, 2\), not \(4,\)"),
        (torch.zeros(4, 1), torch.zeros(4), r"scores of shape \(4, 1\), not \(4,\)"),
        (torch.tensor([0.1, float("nan"), 0.2, float("nan")]), torch.zeros(4), "2 scores that are NaN"),
        (torch.zeros(4), torch.full((4,), 0.5), "predictions other than 0 and 1"),
        ([0.1, 0.2, 0.3, 0.4], torch.zeros(4), "scores of shape list"),
    ],
)
def test_a_methods_output_of_the_wrong_shape_or_values_is_named_in_one_line(scores, predictions, problem):
    from privacy_attacks.attacks.membership.attack import check_output
    from privacy_attacks.attacks.membership.base import AttackOutput
    from privacy_attacks.errors import UserError

    with pytest.raises(UserError, match=f"method=mine gave {problem}") as error:
        check_output(AttackOutput(scores, predictions), 4, "mine")
    assert "\n" not in str(error.value)
    check_output(AttackOutput(torch.tensor([0.1, float("inf"), -float("inf"), 0.0]), torch.ones(4)), 4, "mine")
