"""Statistics of sweeps: which overrides vary between rows."""

from __future__ import annotations

from privacy_attacks.statistics import varying_overrides


def test_varying_overrides_lists_differing_overrides_in_order():
    rows = [
        {"job": "0", "loss": "kl", "seed": 0, "logger": "none", "steps": 10, "student/acc": 0.9},
        {"job": "1", "loss": "mse", "seed": 1, "logger": "none", "steps": 20, "student/acc": 0.8},
        {"job": "2", "loss": "mse", "seed": 1, "logger": "none", "steps": 20, "student/acc": 0.7, "temperature": 2},
    ]
    assert varying_overrides(rows) == ["loss", "seed", "steps", "temperature"]
    assert varying_overrides(rows, ignore={"seed", "steps"}) == ["loss", "temperature"]
    assert varying_overrides(rows[:1]) == []
