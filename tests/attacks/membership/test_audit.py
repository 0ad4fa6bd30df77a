"""The heuristic ε estimate of a membership attack: Clopper–Pearson bounds by hand, the split between choosing and
measuring, and its behaviour on simulated ε-DP randomised response and on a separable score set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta

from privacy_attacks.attacks.membership.audit import epsilon_bounds, epsilon_from_rates, epsilon_heuristic


def test_the_bound_of_an_operating_point_by_hand():
    # 90 of 100 members and 5 of 100 non-members called members, one-sided 97.5% bounds, delta 0.
    positive, negative = epsilon_bounds(np.array([90]), np.array([5]), 100, 100, 0.0, 0.025)
    tpr_low = beta.ppf(0.025, 90, 11)
    fpr_high = beta.ppf(0.975, 6, 95)
    assert positive[0] == pytest.approx(math.log(tpr_low / fpr_high))
    assert negative[0] == pytest.approx(math.log((1 - fpr_high) / (1 - tpr_low)))
    assert positive[0] < epsilon_from_rates(0.9, 0.05)  # the bound is below the point estimate
    assert epsilon_from_rates(0.9, 0.05) == pytest.approx(max(math.log(18), math.log(0.95 / 0.1)))


def test_no_false_positive_and_chance_give_what_they_should():
    positive, _ = epsilon_bounds(np.array([0, 50]), np.array([0, 50]), 100, 100, 0.0, 0.025)
    assert positive[0] == 0.0  # no true positive: no bound
    assert positive[1] == 0.0  # chance: no bound
    positive, _ = epsilon_bounds(np.array([100]), np.array([0]), 100, 100, 0.0, 0.025)
    assert positive[0] == pytest.approx(math.log(beta.ppf(0.025, 100, 1) / beta.ppf(0.975, 1, 100)))


def test_a_perfect_attack_gives_a_large_bound_and_a_random_one_none():
    membership = torch.tensor([1] * 500 + [0] * 500)
    perfect = epsilon_heuristic(membership.double(), membership)
    assert perfect["mia/epsilon_heuristic"] > 4.0 and perfect["mia/epsilon_heuristic_delta"] == 1e-5
    noise = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert epsilon_heuristic(noise, membership)["mia/epsilon_heuristic"] < 0.3


def test_the_bound_is_computed_on_the_half_the_threshold_was_not_chosen_on():
    # Random scores: the best threshold of one half over-fits it; measured on the other half it bounds nothing,
    # while the same search scored on the half it chose on would claim more.
    generator = torch.Generator().manual_seed(1)
    scores, membership = torch.rand(400, generator=generator), torch.randint(0, 2, (400,), generator=generator)
    honest = epsilon_heuristic(scores, membership, delta=0.0)["mia/epsilon_heuristic"]
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    chosen = order[:200]
    s, m = scores[chosen].numpy(), membership[chosen].numpy()
    thresholds = np.unique(s)
    tp = np.array([((s >= t) & (m == 1)).sum() for t in thresholds])
    fp = np.array([((s >= t) & (m == 0)).sum() for t in thresholds])
    in_sample = max(b.max() for b in epsilon_bounds(tp, fp, int(m.sum()), int((m == 0).sum()), 0.0, 0.025))
    assert honest <= in_sample and honest < 0.2


def test_the_bound_holds_with_more_nonmembers_than_members():
    # 100 members, 2,000 non-members: each half is counted in its own members and non-members.
    membership = torch.tensor([1] * 100 + [0] * 2000)
    perfect = epsilon_heuristic(membership.double(), membership, delta=0.0)["mia/epsilon_heuristic"]
    assert perfect > 3.0
    noise = torch.rand(2100, generator=torch.Generator().manual_seed(0))
    assert epsilon_heuristic(noise, membership)["mia/epsilon_heuristic"] < 0.3


def randomised_response(epsilon: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of n members then n non-members through ε-DP randomised response (Warner 1965; Kairouz et al. 2015): a
    member reports 1 with probability e^ε / (1 + e^ε), a non-member with 1 / (1 + e^ε); plus an independent
    uniform / 2 (post-processing: still ε-DP), so there are 2n thresholds to choose from."""
    generator = torch.Generator().manual_seed(seed)
    membership = torch.cat([torch.ones(n), torch.zeros(n)]).long()
    coin = torch.rand(2 * n, generator=generator, dtype=torch.float64)
    q = math.exp(epsilon) / (1 + math.exp(epsilon))
    report = torch.where(membership == 1, coin < q, coin >= q).double()
    return report + torch.rand(2 * n, generator=generator, dtype=torch.float64) / 2, membership


def test_on_independent_epsilon_dp_trials_the_estimate_stays_below_epsilon_in_95_percent_of_seeds():
    # Here every image is an independent trial of an ε-DP mechanism, the assumption the estimate makes, and every
    # operating point has TPR / FPR = e^ε exactly. 2,000 + 2,000 images, 200 fixed seeds: at most 10 may exceed ε
    # (1 does). Without Clopper–Pearson (point estimates) 95 of these seeds exceed ε; choosing the threshold on the
    # measured half, 18; choosing and measuring on all images, 27.
    epsilon = 1.0
    values = [
        epsilon_heuristic(*randomised_response(epsilon, 2000, seed), delta=0.0)["mia/epsilon_heuristic"]
        for seed in range(200)
    ]
    assert sum(value > epsilon for value in values) <= 10
    assert np.median(values) > 0.5  # not trivially small: most seeds find much of the leak


def test_a_separable_non_private_score_set_gives_a_positive_estimate():
    # Members' scores N(2, 1), non-members' N(0, 1), 500 + 500 (an evaluation set of the default size): no finite
    # ε holds for every threshold, and at the best one TPR / FPR is large; every seed must find it.
    for seed in range(10):
        generator = torch.Generator().manual_seed(seed)
        membership = torch.cat([torch.ones(500), torch.zeros(500)]).long()
        scores = torch.randn(1000, generator=generator, dtype=torch.float64) + 2.0 * membership
        assert epsilon_heuristic(scores, membership)["mia/epsilon_heuristic"] > 1.5
