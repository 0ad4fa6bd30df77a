"""Membership inference: metrics on synthetic scores, score formulas, the member/non-member/attacker split."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.membership.data import membership_split
from privacy_attacks.attacks.membership.metrics import membership_metrics, roc_curve
from privacy_attacks.attacks.membership.scores import (
    SCORES,
    attack_features,
    logit_confidence,
    modified_entropy_score,
)
from privacy_attacks.errors import ConfigError

MEMBERSHIP = torch.cat([torch.ones(1000), torch.zeros(1000)]).long()


def test_perfectly_separated_scores_give_auc_1_and_tpr_1_at_every_fpr():
    scores = torch.cat([torch.linspace(101, 200, 1000), torch.linspace(-200, 100, 1000)])  # outside [0, 1] on purpose
    metrics = membership_metrics(scores, MEMBERSHIP, (scores > 100.5).long())
    assert metrics["mia/auc"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["mia/tpr@1%fpr"] == 1.0 and metrics["mia/tpr@0.1%fpr"] == 1.0
    assert metrics["mia/advantage"] == 1.0 and metrics["mia/balanced_acc"] == 1.0
    fpr, tpr = roc_curve(scores, MEMBERSHIP)
    assert float(tpr[fpr == 0].max()) == 1.0


def test_identical_distributions_give_chance():
    generator = torch.Generator().manual_seed(0)
    membership = torch.cat([torch.ones(20000), torch.zeros(20000)]).long()
    scores = torch.randn(40000, generator=generator)
    metrics = membership_metrics(scores, membership, (scores > 0).long())
    assert metrics["mia/auc"] == pytest.approx(0.5, abs=0.01)
    assert metrics["mia/tpr@1%fpr"] == pytest.approx(0.01, abs=0.005)
    assert metrics["mia/balanced_acc"] == pytest.approx(0.5, abs=0.01)


def test_large_scores_are_not_merged_into_ties():
    # A sigmoid would map all of these to 1.0; ranks keep them apart.
    scores = torch.cat([torch.arange(1000.0) + 2000.5, torch.arange(1000.0) + 50.0])
    assert membership_metrics(scores, MEMBERSHIP, torch.zeros(2000))["mia/auc"] == pytest.approx(1.0, abs=1e-6)


def test_reversed_scores_give_auc_0():
    scores = torch.cat([torch.zeros(1000), torch.ones(1000)])
    assert membership_metrics(scores, MEMBERSHIP, torch.zeros(2000))["mia/auc"] == pytest.approx(0.0, abs=1e-6)


def test_score_formulas_match_the_papers():
    logits = torch.tensor([[4.0, 1.0, -2.0], [0.5, 0.2, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    log_probs, p = logits.log_softmax(dim=1), logits.softmax(dim=1)
    py = p[torch.arange(2), labels]
    assert torch.allclose(SCORES["loss"](log_probs, labels), py.log())
    assert torch.allclose(SCORES["confidence"](log_probs, labels), p.max(dim=1).values.log())
    assert torch.allclose(SCORES["entropy"](log_probs, labels), (p * p.log()).sum(dim=1))
    assert torch.allclose(logit_confidence(log_probs, labels), (py / (1 - py)).log())
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


def _split(**overrides):
    args = dict(val_size=500, split_seed=0, members=1000, eval_members=300, attacker_size=2000,
                attacker_offset=300, eval_seed=0, total=6000)
    return membership_split(**{**args, **overrides})


def test_member_nonmember_attacker_sets_are_disjoint():
    split = _split()
    members = set(split.members.tolist())
    eval_members = set(split.eval_indices[split.eval_membership == 1].tolist())
    eval_nonmembers = set(split.eval_indices[split.eval_membership == 0].tolist())
    attacker = set(split.attacker.tolist())
    assert len(members) == 1000 and len(eval_members) == len(eval_nonmembers) == 300 and len(attacker) == 2000
    assert eval_members <= members
    assert not eval_nonmembers & members and not attacker & members
    assert not attacker & eval_nonmembers and not attacker & eval_members
    assert split.eval_membership.tolist() == [1] * 300 + [0] * 300  # member = 1, non-member = 0


def test_split_is_drawn_by_seed():
    assert torch.equal(_split().eval_indices, _split().eval_indices)
    assert not torch.equal(_split().eval_indices, _split(eval_seed=1).eval_indices)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"members": 6000}, "members=6000"),
        ({"attacker_offset": 100}, "overlap"),
        ({"eval_members": 1001}, "eval_members"),
        ({"attacker_size": 10_000}, "attacker_size"),
        ({"attacker_size": None, "attacker_offset": 4500}, "leaves the attacker no images"),
    ],
)
def test_bad_sizes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _split(**overrides)


def test_attacker_size_none_takes_every_remaining_nonmember_and_extends_the_sized_split():
    everything = _split(attacker_size=None)
    assert len(everything.attacker) == 6000 - 500 - 1000 - 300  # the pool after the evaluation non-members
    assert torch.equal(everything.attacker[:2000], _split().attacker)  # a prefix: sized runs see the same images
    assert not set(everything.attacker.tolist()) & set(everything.eval_indices.tolist())
    assert not set(everything.attacker.tolist()) & set(everything.members.tolist())
