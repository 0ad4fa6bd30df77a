"""Membership scores and attack-classifier features against the papers' formulas."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from privacy_attacks.attacks.membership.scores import (
    attack_features,
    chosen_features,
    logit_confidence,
    modified_entropy_score,
)
from privacy_attacks.errors import ConfigError
from tests.conftest import attack_config


def test_score_formulas_match_the_papers():
    scores = instantiate(attack_config("membership").scores)  # the config's score nodes, built
    logits = torch.tensor([[4.0, 1.0, -2.0], [0.5, 0.2, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    log_probs, p = logits.log_softmax(dim=1), logits.softmax(dim=1)
    py = p[torch.arange(2), labels]
    assert torch.allclose(scores["loss"](log_probs, labels), py.log())
    assert torch.allclose(scores["confidence"](log_probs, labels), p.max(dim=1).values.log())
    assert torch.allclose(scores["entropy"](log_probs, labels), (p * p.log()).sum(dim=1))
    assert torch.allclose(logit_confidence(log_probs, labels), (py / (1 - py)).log())
    assert torch.allclose(scores["hinge"](log_probs, labels), torch.tensor([3.0, 0.1 - 0.5], dtype=torch.float64))
    # Song & Mittal 2021: Mentr = -(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c)
    mentr = []
    for i, y in enumerate(labels.tolist()):
        others = sum(-p[i, c] * torch.log(1 - p[i, c]) for c in range(3) if c != y)
        mentr.append(-(1 - p[i, y]) * torch.log(p[i, y]) + others)
    assert torch.allclose(modified_entropy_score(log_probs, labels), -torch.stack(mentr))


def test_logit_confidence_stays_finite_near_certainty():
    log_probs = torch.tensor([[0.0, -40.0, -45.0]], dtype=torch.float64)  # p_y rounds to 1.0 in float32
    phi = logit_confidence(log_probs, torch.tensor([0]))
    assert torch.isfinite(phi).all() and phi.item() == pytest.approx(40.0, abs=0.01)


def test_attack_features_shapes():
    available = instantiate(attack_config("membership", ["top_k=4"]).attack_features)
    log_probs = torch.randn(5, 10).log_softmax(dim=1)
    labels = torch.arange(5)
    chosen = chosen_features(available, ["sorted", "label", "loss"], "features")
    assert attack_features(log_probs, labels, chosen).shape == (5, 21)
    assert attack_features(log_probs, labels, chosen_features(available, ["top_k"], "features")).shape == (5, 4)
    with pytest.raises(ConfigError, match="features='nope' is not one of the choices: sorted, top_k"):
        chosen_features(available, ["nope"], "features")
    with pytest.raises(ConfigError, match="attack_features.sorted builds a dict, not a function"):
        chosen_features({"sorted": {}}, ["sorted"], "features")


def test_a_score_node_that_calls_its_function_is_named_in_one_line_when_chosen_and_never_built_otherwise(
    compose_attack,
):
    from privacy_attacks.attacks.membership.attack import build_attack

    node = "privacy_attacks.attacks.membership.scores.hinge_score"
    broken = f"+scores.hinge_again._target_={node}"  # no _partial_: building it would call the function
    assert build_attack(compose_attack(["attack=membership", "method=loss", broken])).score == "loss"
    cfg = compose_attack(["attack=membership", "method=loss", broken, "methods.loss.score=hinge_again"])
    with pytest.raises(ConfigError, match="scores.hinge_again needs _partial_: true"):
        build_attack(cfg)
    cfg = compose_attack(["attack=membership", "method=quantile", "methods.quantile.score=margin"])
    with pytest.raises(ConfigError, match="methods.quantile.score='margin' is not one of the choices"):
        build_attack(cfg)
    cfg = compose_attack(["attack=membership", "method=loss", "methods.loss.score=margin"])
    with pytest.raises(ConfigError, match="methods.loss.score='margin' is not one of the choices"):
        build_attack(cfg)
