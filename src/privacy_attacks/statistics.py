"""Statistics of repeated runs: the mean over seeds with its 95% Student-t interval."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval, ``t(0.975, n-1) * s / sqrt(n)`` with ``s``
    the sample standard deviation (ddof=1). ``(nan, nan)`` for no value, ci95 ``nan`` for one."""
    x = np.asarray(list(values), dtype=float)
    n = x.size
    if n == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
