"""The ε lower bound of a one-run audit: Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training
Run" (NeurIPS).

Each of ``m`` canaries joins the training run independently with probability ½. The auditor makes ``r`` guesses
(IN or OUT; it abstains on the other ``m − r``) and ``v`` of them are right. Their main theorem: under ε-DP the
number of right guesses is stochastically dominated by Binomial(r, q), q = e^ε / (1 + e^ε) (ε-DP randomised
response), and under (ε, δ)-DP

    Pr[v or more right] ≤ Pr[Binomial(r, q) ≥ v] + 2 m δ · max_{1 ≤ i ≤ v} Pr[v − i ≤ Binomial(r, q) < v] / i.

The bound at confidence c is the largest ε this rejects at level 1 − c (the p-value of ``v`` is below 1 − c), found
by bisection as in the paper's code; the p-value grows with ε, so every smaller ε is rejected too.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from privacy_attacks.errors import ConfigError, require_int

BISECTION_STEPS = 60


def check_counts(m: int, r: int, v: int) -> None:
    """:class:`ConfigError` unless 0 ≤ v ≤ r ≤ m and m > 0 (integers)."""
    require_int(m, "canaries")
    require_int(r, "guesses", minimum=0)
    require_int(v, "correct guesses", minimum=0)
    if not v <= r <= m:
        raise ConfigError(f"need correct <= guesses <= canaries, got {v} correct of {r} guesses on {m} canaries.")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Pr[v or more of r guesses right] when training is (ε, δ)-DP, at most (the theorem above), capped at 1."""
    check_counts(m, r, v)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))  # Pr[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # Pr[Binomial = v - i], i = 1..v
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest ε whose (ε, δ)-DP the count of ``v`` right of ``r`` guesses on ``m`` canaries rejects at
    ``confidence`` (0 when even ε = 0 is not rejected)."""
    check_counts(m, r, v)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r} is not allowed: it must be a number in (0, 1).")
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"audit_delta={delta!r} is not allowed: it must be a number in [0, 1).")
    level = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < level:  # grow until the p-value reaches the level
        low, high = high, 2 * high
        if high > 1e3:  # every ε is rejected: only with δ = 0 and a vanishing binomial tail
            return math.inf
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if p_value(m, r, v, middle, delta) < level:
            low = middle
        else:
            high = middle
    return low
