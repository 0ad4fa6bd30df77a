"""Membership metrics on synthetic scores: AUC, TPR at low FPR, intervals."""

from __future__ import annotations

import time

import pytest
import torch
from scipy.stats import binomtest
from torchmetrics.classification import BinaryROC

from privacy_attacks.attacks.membership.metrics import (
    _resampled_aucs,
    allowed_false_positives,
    bootstrap_auc_ci,
    bootstrap_aucs,
    clopper_pearson,
    mann_whitney_auc,
    membership_metrics,
    operating_points,
    roc_curve,
    tpr_at_fpr_exact,
)
from privacy_attacks.attacks.membership.metrics import (
    _split as _split_scores,
)

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


def _hand_made(nonmember_scores: list[tuple[float, int]], member_scores: list[tuple[float, int]]):
    """Scores and membership from (score, how many) pairs: members first, then non-members."""
    members = torch.cat([torch.full((n,), v) for v, n in member_scores])
    nonmembers = torch.cat([torch.full((n,), v) for v, n in nonmember_scores])
    membership = torch.cat([torch.ones(len(members)), torch.zeros(len(nonmembers))]).long()
    return torch.cat([members, nonmembers]), membership


def _one_nonmember_above_some_members(nonmembers: int = 1000):
    # 100 members: 40 at 10, 30 at 4, 30 at -5; non-members: one at 5, the rest at 0.
    # Thresholds: >=10 -> 40 TP / 0 FP, >=5 -> 40 / 1, >=4 -> 70 / 1, >=0 -> 70 / all, >=-5 -> 100 / all.
    return _hand_made([(5.0, 1), (0.0, nonmembers - 1)], [(10.0, 40), (4.0, 30), (-5.0, 30)])


def test_tpr_at_0_1_percent_fpr_allows_exactly_one_false_positive_of_1000():
    scores, membership = _one_nonmember_above_some_members(1000)
    assert tpr_at_fpr_exact(scores, membership, 0.001) == (0.7, 70, 1, 100)  # not 0.4, the TPR at zero FP
    assert tpr_at_fpr_exact(scores, membership, 0.0) == (0.4, 40, 0, 100)
    assert tpr_at_fpr_exact(scores, membership, 0.01) == (0.7, 70, 10, 100)
    assert tpr_at_fpr_exact(scores, membership, 1.0) == (1.0, 100, 1000, 100)
    metrics = membership_metrics(scores, membership, torch.zeros(len(scores)))
    assert metrics["mia/tpr@0.1%fpr"] == 0.7 and metrics["mia/tpr@1%fpr"] == 0.7
    assert metrics["mia/members"] == 100 and metrics["mia/nonmembers"] == 1000
    assert (metrics["mia/tpr@0.1%fpr_ci_low"], metrics["mia/tpr@0.1%fpr_ci_high"]) == clopper_pearson(70, 100)
    assert metrics["mia/tpr@0.1%fpr_ci_low"] < 0.7 < metrics["mia/tpr@0.1%fpr_ci_high"]


def test_alpha_times_n_not_an_integer_rounds_down():
    scores, membership = _one_nonmember_above_some_members(999)  # 0.1% of 999 is 0.999: no false positive
    assert tpr_at_fpr_exact(scores, membership, 0.001) == (0.4, 40, 0, 100)
    metrics = membership_metrics(scores, membership, torch.zeros(len(scores)))
    assert metrics["mia/tpr@0.1%fpr"] == 0.4 and metrics["mia/nonmembers"] == 999
    assert (metrics["mia/tpr@0.1%fpr_ci_low"], metrics["mia/tpr@0.1%fpr_ci_high"]) == clopper_pearson(40, 100)
    assert metrics["mia/tpr@1%fpr"] == 0.7  # 9 false positives allowed


@pytest.mark.parametrize(
    ("alpha", "n", "allowed"),
    [
        (0.001, 1000, 1),
        (0.001, 999, 0),
        (0.01, 1000, 10),
        (0.29, 100, 29),
        (0.57, 100, 57),
        (0.001, 1999, 1),
        (0.0, 1000, 0),
        (1.0, 7, 7),
    ],
)
def test_allowed_false_positives_is_an_exact_floor(alpha, n, allowed):
    assert allowed_false_positives(alpha, n) == allowed  # 0.29 * 100 is 28.999999999999996 in floats


def test_tied_groups_are_taken_whole():
    # 100 members: 30 at 10, 20 at 5, 50 at 3; non-members: two tied with those 20 members at 5, 998 at 0.
    scores, membership = _hand_made([(5.0, 2), (0.0, 998)], [(10.0, 30), (5.0, 20), (3.0, 50)])
    # One FP allowed: the tied group brings two, so it cannot be split to take its members with one of them.
    assert tpr_at_fpr_exact(scores, membership, 0.001) == (0.3, 30, 1, 100)
    # Two FPs allowed: the group and everything above 0 (no more non-members there).
    assert tpr_at_fpr_exact(scores, membership, 0.002) == (1.0, 100, 2, 100)
    # One non-member tied with members at the threshold: the group (with its one FP) counts as a whole.
    scores, membership = _hand_made([(5.0, 1), (0.0, 999)], [(10.0, 30), (5.0, 20), (-1.0, 50)])
    assert tpr_at_fpr_exact(scores, membership, 0.001) == (0.5, 50, 1, 100)
    assert tpr_at_fpr_exact(scores, membership, 0.0) == (0.3, 30, 0, 100)
    true_positives, false_positives = operating_points(scores, membership)
    assert true_positives.tolist() == [0, 30, 50, 50, 100] and false_positives.tolist() == [0, 0, 1, 1000, 1000]


def test_roc_curve_has_the_points_of_torchmetrics_binary_roc():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(500, generator=generator).round(decimals=1)  # with ties
    membership = (torch.rand(500, generator=generator) < 0.4).long()
    fpr, tpr = roc_curve(scores, membership)
    expected_fpr, expected_tpr, _ = BinaryROC(thresholds=None)(scores.sigmoid(), membership)
    assert torch.allclose(fpr, expected_fpr.double(), atol=1e-6)
    assert torch.allclose(tpr, expected_tpr.double(), atol=1e-6)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_advantage_is_the_largest_tpr_minus_fpr():
    scores, membership = _one_nonmember_above_some_members(1000)
    # best threshold >=4: 0.7 - 0.001
    assert membership_metrics(scores, membership, torch.zeros(len(scores)))["mia/advantage"] == pytest.approx(0.699)


def test_clopper_pearson_known_values():
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(25, 25) == (pytest.approx(0.025 ** (1 / 25)), 1.0)
    exact = binomtest(7, 20).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(7, 20) == (pytest.approx(exact.low), pytest.approx(exact.high))
    exact = binomtest(3, 1000).proportion_ci(confidence_level=0.99, method="exact")
    assert clopper_pearson(3, 1000, confidence=0.99) == (pytest.approx(exact.low), pytest.approx(exact.high))
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def _gaussians(per_class: int, seed: int = 0, shift: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    members = torch.randn(per_class, generator=generator) + shift
    scores = torch.cat([members, torch.randn(per_class, generator=generator)])
    return scores, torch.cat([torch.ones(per_class), torch.zeros(per_class)]).long()


def test_mann_whitney_auc_equals_the_reported_auc_with_ties():
    scores, membership = _gaussians(1000, seed=1, shift=0.5)
    scores = scores.round(decimals=1)  # many ties between members and non-members
    auc = membership_metrics(scores, membership, membership)["mia/auc"]
    assert mann_whitney_auc(scores, membership) == pytest.approx(auc, abs=1e-6)
    # The bootstrap's counting formula on the identity "resample" is the same statistic.
    members, nonmembers = _split_scores(scores, membership)
    identity = _resampled_aucs(members, nonmembers, torch.arange(1000)[None], torch.arange(1000)[None])
    assert float(identity) == pytest.approx(mann_whitney_auc(scores, membership), abs=1e-12)
    assert mann_whitney_auc(torch.tensor([1.0, 1.0]), torch.tensor([1, 0])) == 0.5


def test_bootstrap_auc_interval_contains_the_auc_is_seeded_and_narrows_with_n():
    scores, membership = _gaussians(1000)
    start = time.perf_counter()
    low, high = bootstrap_auc_ci(scores, membership)
    assert time.perf_counter() - start < 5  # about 0.05 s; a P x Q comparison per resample would be far slower
    metrics = membership_metrics(scores, membership, membership)
    assert low < metrics["mia/auc"] < high and (metrics["mia/auc_ci_low"], metrics["mia/auc_ci_high"]) == (low, high)
    assert bootstrap_auc_ci(scores, membership) == (low, high)
    assert bootstrap_auc_ci(scores, membership, seed=1) != (low, high)
    assert bootstrap_aucs(scores, membership, resamples=7).shape == (7,)
    small = bootstrap_auc_ci(*_gaussians(100))
    large = bootstrap_auc_ci(*_gaussians(10_000))
    assert large[1] - large[0] < (small[1] - small[0]) / 5  # width ~ 1/sqrt(N): 100x the data, ~10x narrower
    # ~0.76 = Phi(1 / sqrt 2) for unit shift; the large interval should cover it
    assert large[0] < 0.7602 < large[1]


def test_perfect_separation_gives_a_degenerate_auc_interval_at_1():
    scores = torch.cat([torch.linspace(101, 200, 1000), torch.linspace(-200, 100, 1000)])
    metrics = membership_metrics(scores, MEMBERSHIP, MEMBERSHIP)
    assert (metrics["mia/auc_ci_low"], metrics["mia/auc_ci_high"]) == (1.0, 1.0)
    assert metrics["mia/tpr@0.1%fpr_ci_high"] == 1.0
    assert metrics["mia/tpr@0.1%fpr_ci_low"] == pytest.approx(0.025 ** (1 / 1000))


def test_one_class_only_is_an_error():
    with pytest.raises(ValueError, match="members and non-members"):
        membership_metrics(torch.randn(10), torch.ones(10), torch.ones(10))
