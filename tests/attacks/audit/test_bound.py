"""Steinke et al.'s one-run ε lower bound against hand computations on synthetic counts, and its coverage under
simulated ε-DP randomised response."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from privacy_attacks.attacks.audit.bound import epsilon_lower_bound, p_value
from privacy_attacks.errors import ConfigError


@pytest.mark.parametrize("r", [10, 200, 500])
def test_all_guesses_right_give_the_binomial_tail_solution(r):
    # delta = 0, v = r: the p-value is q^r, so the bound solves q^r = 0.05, q = e^eps / (1 + e^eps).
    q = 0.05 ** (1 / r)
    expected = math.log(q / (1 - q))
    assert epsilon_lower_bound(1000, r, r, delta=0.0, confidence=0.95) == pytest.approx(expected, abs=1e-6)


def test_the_delta_term_by_hand():
    # p = P[Bin(r, q) >= v] + 2 m delta max_i P[v - i <= Bin(r, q) < v] / i, with every term written out.
    m, r, v, eps, delta = 1000, 40, 35, 1.5, 1e-3
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    tail = sum(pmf[v:])
    alpha = max(sum(pmf[v - j] for j in range(1, i + 1)) / i for i in range(1, v + 1))
    assert p_value(m, r, v, eps, delta) == pytest.approx(tail + 2 * m * delta * alpha, rel=1e-9)
    assert p_value(m, r, v, eps, 0.0) == pytest.approx(tail, rel=1e-9)


def test_the_bound_sits_where_the_p_value_reaches_the_level():
    m, r, v, delta = 1000, 200, 170, 1e-5
    eps = epsilon_lower_bound(m, r, v, delta, 0.95)
    assert eps > 0.5
    assert p_value(m, r, v, eps - 1e-3, delta) < 0.05 <= p_value(m, r, v, eps + 1e-3, delta)
    # A larger delta refutes less; more confidence refutes less.
    assert epsilon_lower_bound(m, r, v, 1e-3, 0.95) < eps
    assert epsilon_lower_bound(m, r, v, delta, 0.99) < eps


@pytest.mark.parametrize(("r", "v"), [(100, 50), (100, 55), (1000, 500), (20, 0)])
def test_chance_gives_no_bound(r, v):
    assert binom.sf(v - 1, r, 0.5) >= 0.05  # even eps = 0 explains it
    assert epsilon_lower_bound(1000, r, v, 1e-5, 0.95) == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 0), "canaries=0"),
        ((10, 11, 5), "correct <= guesses <= canaries"),
        ((10, 5, 6), "correct <= guesses <= canaries"),
        ((10, -1, 0), "guesses=-1"),
    ],
)
def test_impossible_counts_are_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        epsilon_lower_bound(*args)


def test_bad_confidence_or_delta_are_config_errors():
    with pytest.raises(ConfigError, match="confidence"):
        epsilon_lower_bound(100, 10, 10, 0.0, 1.0)
    with pytest.raises(ConfigError, match="audit_delta"):
        epsilon_lower_bound(100, 10, 10, 1.0, 0.95)


@pytest.mark.parametrize(("r", "epsilon", "delta"), [(1000, 1.0, 0.0), (5000, 0.5, 0.0), (2000, 2.0, 1e-5)])
def test_the_bound_covers_the_epsilon_of_randomised_response_in_95_percent_of_trials(r, epsilon, delta):
    # ε-DP randomised response is the worst case of the theorem: each of r guesses is right with probability
    # q = e^ε / (1 + e^ε), independently. 2,000 fixed trials; the 95% bound may exceed ε in about 5% of them (the
    # allowance is the 99.9% quantile of Binomial(2000, 0.05): 6.55%). A bound that ignored the binomial tail,
    # log(v / (r - v)), would exceed ε in about half of the same trials; one at 90% confidence in about 10%.
    trials, q = 2000, math.exp(epsilon) / (1 + math.exp(epsilon))
    right = np.random.default_rng(0).binomial(r, q, size=trials)
    bound = {int(v): epsilon_lower_bound(2 * r, r, int(v), delta, 0.95) for v in np.unique(right)}  # one per count
    bounds = np.array([bound[int(v)] for v in right])
    allowed = binom.ppf(0.999, trials, 0.05)
    assert (bounds > epsilon).sum() <= allowed
    assert (np.log(right / (r - right)) > epsilon).sum() > 3 * allowed  # these trials do refute a tail-less bound
    assert np.median(bounds) > 0.7 * epsilon  # and the bound is not trivially small
