"""The member / non-member / attacker split of membership inference."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.membership.data import membership_split
from privacy_attacks.errors import ConfigError


def _split(**overrides):
    args = dict(
        val_size=500,
        split_seed=0,
        members=1000,
        eval_members=300,
        attacker_size=2000,
        attacker_offset=None,
        eval_seed=0,
        total=6000,
    )
    return membership_split(**{**args, **overrides})


def _roles(split):
    members = set(split.eval_indices[split.eval_membership == 1].tolist())
    return members, set(split.eval_indices[split.eval_membership == 0].tolist())


def test_member_nonmember_attacker_sets_are_disjoint():
    split = _split()
    members = set(split.members.tolist())
    eval_members, eval_nonmembers = _roles(split)
    attacker = set(split.attacker.tolist())
    assert len(members) == 1000 and len(eval_members) == len(eval_nonmembers) == 300 and len(attacker) == 2000
    assert eval_members <= members
    assert not eval_nonmembers & members and not attacker & members
    assert not attacker & eval_nonmembers and not attacker & eval_members
    assert sorted(split.eval_membership.tolist()) == [0] * 300 + [1] * 300  # member = 1, non-member = 0


def test_report_and_tune_sets_are_disjoint_and_both_apart_from_the_attacker():
    report, tune = _split(eval_set="report"), _split(eval_set="tune")
    report_members, report_nonmembers = _roles(report)
    tune_members, tune_nonmembers = _roles(tune)
    assert len(tune_members) == len(tune_nonmembers) == 300
    assert not (report_members | report_nonmembers) & (tune_members | tune_nonmembers)
    assert torch.equal(report.attacker, tune.attacker)  # the attacker's data does not depend on the set scored
    assert not set(tune.attacker.tolist()) & (tune_members | tune_nonmembers)


def test_evaluation_order_does_not_reveal_membership():
    membership = _split().eval_membership
    assert membership[:300].sum() not in (0, 300)  # not members first (a shuffled order)
    changes = int((membership[1:] != membership[:-1]).sum())
    assert changes > 200  # about 300 changes of label in a random order, 1 when sorted


def test_split_is_drawn_by_seed():
    assert torch.equal(_split().eval_indices, _split().eval_indices)
    assert not torch.equal(_split().eval_indices, _split(eval_seed=1).eval_indices)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"members": 6000}, "members=6000"),
        ({"attacker_offset": 300}, "overlap"),
        ({"eval_members": 501}, "eval_members"),
        ({"attacker_size": 10_000}, "attacker_size"),
        ({"attacker_size": None, "attacker_offset": 4500}, "leaves the attacker no images"),
        ({"eval_set": "test"}, "eval_set"),
        ({"eval_seed": "abc"}, "eval_seed='abc' is not allowed: it must be an integer"),
        ({"eval_seed": 1.5}, "eval_seed=1.5"),
        ({"split_seed": "abc"}, "data.split_seed='abc' is not allowed: it must be an integer"),
    ],
)
def test_bad_sizes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _split(**overrides)


def test_attacker_size_none_takes_every_remaining_nonmember_and_extends_the_sized_split():
    everything = _split(attacker_size=None)
    assert len(everything.attacker) == 6000 - 500 - 1000 - 2 * 300  # the pool after both sets' non-members
    assert torch.equal(everything.attacker[:2000], _split().attacker)  # a prefix: sized runs see the same images
    assert not set(everything.attacker.tolist()) & set(everything.eval_indices.tolist())
    assert not set(everything.attacker.tolist()) & set(everything.members.tolist())


def test_more_nonmembers_than_members_keep_both_sets_and_the_attacker_apart():
    report, tune = _split(eval_nonmembers=900, eval_set="report"), _split(eval_nonmembers=900, eval_set="tune")
    report_members, report_nonmembers = _roles(report)
    tune_members, tune_nonmembers = _roles(tune)
    assert len(report_members) == len(tune_members) == 300
    assert len(report_nonmembers) == len(tune_nonmembers) == 900
    assert len(report.eval_indices) == len(report.eval_membership) == 1200
    members = set(report.members.tolist())
    assert report_members <= members and tune_members <= members
    assert not (report_nonmembers | tune_nonmembers) & members
    assert not (report_members | report_nonmembers) & (tune_members | tune_nonmembers)
    attacker = set(report.attacker.tolist())
    assert torch.equal(report.attacker, tune.attacker) and len(attacker) == 2000
    assert not attacker & (report_members | report_nonmembers | tune_members | tune_nonmembers)


def test_eval_nonmembers_null_is_the_balanced_split_of_before():
    balanced, explicit = _split(), _split(eval_nonmembers=300)
    assert torch.equal(balanced.eval_indices, explicit.eval_indices)
    assert torch.equal(balanced.eval_membership, explicit.eval_membership)
    assert torch.equal(balanced.attacker, explicit.attacker)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"eval_nonmembers": 0}, "eval_nonmembers=0"),
        ({"eval_nonmembers": 2500}, "eval_nonmembers <= 2250"),  # two sets of 2,500 from a pool of 4,500
        ({"eval_nonmembers": 900, "attacker_offset": 1000}, "attacker_offset must be >= 2 \\* eval_nonmembers"),
    ],
)
def test_bad_nonmember_counts_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _split(**overrides)


@pytest.mark.parametrize("offset", [0, 1000])
def test_the_members_are_the_images_the_target_trains_on_from_its_member_offset(compose_attack, offset):
    from privacy_attacks.attacks.audit.canaries import nonmember_pool
    from privacy_attacks.attacks.membership.attack import build_split
    from privacy_attacks.training import build_datamodule

    tiny = ["data=synthetic", "data.source.train_size=3000", "data.val_size=100", "target.members=400"]
    cfg = compose_attack(["attack=membership", *tiny, f"+target.member_offset={offset}", "eval_members=100"])
    module = build_datamodule(cfg.data, cfg.target)
    module.setup("fit")
    trained = set(module.indices["train"].tolist())
    split = build_split(cfg)
    members, nonmembers = _roles(split)
    assert set(split.members.tolist()) == trained and members <= trained
    assert not nonmembers & trained and not set(split.attacker.tolist()) & trained
    audit = compose_attack(["attack=audit", *tiny, f"+target.member_offset={offset}"])
    assert not set(nonmember_pool(audit).tolist()) & trained  # no canary is an image the target trains on anyway
