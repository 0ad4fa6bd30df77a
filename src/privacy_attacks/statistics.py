"""Statistics of repeated runs: the mean over seeds with its 95% Student-t interval, and which settings a
sweep's rows vary (what tells a figure's lines apart)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

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


def pooled_ci95(groups: Iterable[Iterable[float]]) -> float:
    """Half-width of the 95% interval of the mean of all values when only the variation *within* each group counts
    (the attacker's seeds within each scenario): ``t(0.975, df) * s_w / sqrt(N)``, ``s_w^2`` the pooled within-group
    variance with ``df = N - groups``. One group gives :func:`mean_ci95`'s interval; NaN when ``df`` is 0."""
    arrays = [np.asarray(list(group), dtype=float) for group in groups]
    arrays = [a for a in arrays if a.size]
    total = sum(a.size for a in arrays)
    df = total - len(arrays)
    if df <= 0:
        return math.nan
    within = sum(float(((a - a.mean()) ** 2).sum()) for a in arrays) / df
    return float(stats.t.ppf(0.975, df) * math.sqrt(within) / math.sqrt(total))


def hashable(value: Any) -> str:
    """A row value as a string that compares equal for equal values (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def varying_overrides(rows: list[dict[str, Any]], ignore: Iterable[str] = ()) -> list[str]:
    """Override columns of ``rows`` whose value differs between rows, in order of first appearance: what
    tells a figure's lines apart. Left out: ``job``, metric names (they hold a ``/``) and ``ignore``."""
    ignored = {"job", *ignore}
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ignored and "/" not in k]
    return [k for k in keys if len({hashable(row.get(k)) for row in rows}) > 1]
