"""Defences of the black-box API on hand-made probability vectors, through the API, and their config."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.defenses import GaussianNoise, LabelOnly, NoDefense, ReverseSigmoid, Rounding, TopK, api_utility
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import derive_seed

PROBS = torch.tensor([[0.70, 0.20, 0.06, 0.04], [0.004, 0.006, 0.49, 0.50]])
DEFENSES = {
    "topk": lambda: TopK(2),
    "rounding": lambda: Rounding(1),
    "reverse_sigmoid": lambda: ReverseSigmoid(1.0, 0.1),
    "label_only": lambda: LabelOnly(),
    "noise": lambda: GaussianNoise(0.3, seed=0),
}


def test_top_k_keeps_the_k_largest_renormalised_and_zeroes_the_rest():
    expected = torch.tensor([[0.70 / 0.90, 0.20 / 0.90, 0.0, 0.0], [0.0, 0.0, 0.49 / 0.99, 0.50 / 0.99]])
    torch.testing.assert_close(TopK(2)(PROBS), expected)


def test_rounding_label_only_and_no_defense_on_hand_made_vectors():
    torch.testing.assert_close(Rounding(1)(PROBS), torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.5, 0.5]]))
    torch.testing.assert_close(LabelOnly()(PROBS), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
    assert NoDefense()(PROBS) is PROBS


def test_reverse_sigmoid_follows_its_formula_and_renormalises():
    beta, gamma = 0.8, 0.2
    clipped = PROBS.clamp(1e-6, 1 - 1e-6)
    expected = (PROBS - beta * (torch.sigmoid(gamma * torch.log(clipped / (1 - clipped))) - 0.5)).clamp_min(0)
    expected = expected / expected.sum(dim=1, keepdim=True)
    assert torch.equal(expected.argmax(dim=1), PROBS.argmax(dim=1))  # no swap needed on these
    defended = ReverseSigmoid(beta, gamma)(PROBS)
    torch.testing.assert_close(defended, expected)
    assert torch.allclose(defended.sum(dim=1), torch.ones(2))
    assert defended[0, 0] < PROBS[0, 0]  # the confident answer is flattened


def test_reverse_sigmoid_keeps_a_low_top1_that_the_perturbation_would_lose():
    probs = torch.tensor([[0.12] * 8 + [0.04 - 1e-7, 1e-7]])  # a flat answer with one tiny probability
    clipped = probs.clamp(1e-6, 1 - 1e-6)
    raw = (probs - (torch.sigmoid(0.1 * torch.logit(clipped)) - 0.5)).clamp_min(0)
    assert raw.argmax() == 9  # the formula alone lifts the tiny class to the top
    defended = ReverseSigmoid(1.0, 0.1)(probs)
    assert defended.argmax() == probs.argmax() and torch.allclose(defended.sum(), torch.tensor(1.0))


def test_noise_is_the_defenders_own_draw_and_stays_a_distribution():
    a, b = GaussianNoise(0.2, seed=3)(PROBS), GaussianNoise(0.2, seed=3)(PROBS)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, GaussianNoise(0.2, seed=4)(PROBS))
    assert (a >= 0).all() and torch.allclose(a.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_the_attackers_copy_is_the_same_mechanism_with_the_attackers_own_randomness(name):
    defense = DEFENSES[name]()
    copy = defense.for_attacker(seed=5)
    if name != "noise":
        assert copy is defense  # deterministic: nothing of its own to draw
        return
    assert copy.std == defense.std and copy.seed == derive_seed(5, "shadow_defense") != defense.seed
    expected = GaussianNoise(0.3, seed=0)(PROBS)  # the defender's first draw
    copy(PROBS), copy(PROBS)  # the attacker's draws do not advance the defender's generator
    torch.testing.assert_close(defense(PROBS), expected)


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_defense_but_noise_keeps_the_top1(name):
    logits = torch.randn(2000, 10, generator=torch.Generator().manual_seed(7))  # not the noise seed
    probs = torch.softmax(logits * torch.linspace(0.5, 8, 2000)[:, None], dim=1)  # from flat to confident answers
    defense = DEFENSES[name]()
    defended = defense(probs)
    top1 = probs.argmax(dim=1)
    kept = defended.gather(1, top1[:, None]).squeeze(1) >= defended.max(dim=1).values  # the top-1 is still a maximum
    assert bool(kept.all()) == defense.keeps_top1
    assert defense.keeps_top1 == (name != "noise")


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_the_api_counts_queries_and_serves_the_defended_answers(name):
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = BlackBoxAPI(net, "probs").query(images)
    defended_api = BlackBoxAPI(net, "probs", budget=16, defense=DEFENSES[name]())
    answers = defended_api.query(images)
    assert defended_api.queries_used == 16
    torch.testing.assert_close(answers, DEFENSES[name]()(plain), atol=1e-6, rtol=0)
    labels = BlackBoxAPI(net, "label", defense=DEFENSES[name]()).query(images)
    if DEFENSES[name]().keeps_top1 and name != "rounding":
        assert torch.equal(labels, plain.argmax(dim=1))


def test_no_defense_leaves_the_answers_bit_identical():
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.equal(BlackBoxAPI(net, "logits").query(images), BlackBoxAPI(net, "logits", defense=None).query(images))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attack=inversion", "defense=topk"], "does not meet"),
        (["attack=gradient_inversion", "defense=label_only"], "does not meet"),
        (["attack=distillation", "defense=topk", "defense.k=0"], "defense.k"),
        (["attack=distillation", "defense=noise", "defense.std=-1"], "defense.std"),
        (["attack=membership", "defense=reverse_sigmoid", "defense.gamma=0"], "defense.gamma"),
        (["attack=distillation", "defense=topk", "defense.k=11"], "defense.k=11 is not allowed: data=mnist has 10"),
        (["attack=membership", "defense=topk", "defense.k=11"], "at most 10"),
    ],
)
def test_a_defense_that_does_not_apply_or_a_bad_strength_stops_before_any_work(
    compose_attack, tmp_path, overrides, message
):
    cfg = compose_attack([*overrides, f"paths.cache_dir={tmp_path}/empty_cache"])
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()


@pytest.mark.mnist
def test_stealing_through_a_label_only_api(compose_attack):
    cfg = compose_attack(["attack=distillation", "defense=label_only", "query_budget=100", "schedule.steps=5"])
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 100
    # The honest user's view beside the attack's: the top-1 is kept, the distribution is not.
    assert metrics["api/top1_acc"] == pytest.approx(metrics["target/acc"])
    assert metrics["api/kl_from_undefended"] > 0.0
    assert "target/test_acc" in metrics


def test_api_utility_is_the_defended_answers_accuracy_and_kl_from_the_undefended():
    torch.manual_seed(0)
    net = LeNet5().eval()
    images, labels = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    probs = net(images).softmax(dim=-1)
    accuracy = (probs.argmax(-1) == labels).float().mean().item()
    undefended = api_utility(net, None, images, labels, batch_size=10)
    assert undefended == pytest.approx({"api/top1_acc": accuracy, "api/kl_from_undefended": 0.0}, abs=1e-6)
    assert api_utility(net, NoDefense(), images, labels) == pytest.approx(undefended, abs=1e-6)
    label_only = api_utility(net, LabelOnly(), images, labels)
    assert label_only["api/top1_acc"] == pytest.approx(accuracy)
    one_hot = torch.nn.functional.one_hot(probs.argmax(-1), 10).float().clamp_min(1e-12)
    expected_kl = (probs * (probs.log() - one_hot.log())).sum(-1)
    assert label_only["api/kl_from_undefended"] == pytest.approx(expected_kl.mean().item(), rel=1e-4)
