"""Membership scores and attack-classifier features against the papers' formulas."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.membership.scores import (
    SCORES,
    attack_features,
    logit_confidence,
    modified_entropy_score,
)
from privacy_attacks.errors import ConfigError


def test_score_formulas_match_the_papers():
    logits = torch.tensor([[4.0, 1.0, -2.0], [0.5, 0.2, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    log_probs, p = logits.log_softmax(dim=1), logits.softmax(dim=1)
    py = p[torch.arange(2), labels]
    assert torch.allclose(SCORES["loss"](log_probs, labels), py.log())
    assert torch.allclose(SCORES["confidence"](log_probs, labels), p.max(dim=1).values.log())
    assert torch.allclose(SCORES["entropy"](log_probs, labels), (p * p.log()).sum(dim=1))
    assert torch.allclose(logit_confidence(log_probs, labels), (py / (1 - py)).log())
    assert torch.allclose(SCORES["hinge"](log_probs, labels), torch.tensor([3.0, 0.1 - 0.5], dtype=torch.float64))
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
    log_probs = torch.randn(5, 10).log_softmax(dim=1)
    labels = torch.arange(5)
    assert attack_features(log_probs, labels, ["sorted", "label", "loss"]).shape == (5, 21)
    assert attack_features(log_probs, labels, ["top_k"], top_k=3).shape == (5, 3)
    with pytest.raises(ConfigError, match="sorted"):
        attack_features(log_probs, labels, ["nope"])
