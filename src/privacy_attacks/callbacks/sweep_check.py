"""Check a sweep's values before its first job: a bad value stops the sweep before any work, not at its job.

Each job checks its own settings before its work (:func:`privacy_attacks.pipelines.check_attack`, ``check_train``),
so without this a sweep ``tv_lambda=0,0.1,-1`` would run two jobs and stop at the third. At the start of a multirun
of the basic sweeper, :class:`SweepCheck` composes the job config once for each value of each swept key (the other
swept keys at their first value) and makes the same checks: every value is checked, in as many compositions as the
sweep has values, not jobs. A bad combination of two values is still stopped by the job that meets it.
"""

from __future__ import annotations

from typing import Any

from hydra import compose
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from privacy_attacks.callbacks.progress import sweep_grid
from privacy_attacks.cli import run_reporting_errors

# The checks each entry config's jobs make before their work.
CHECKS = {"attack": "privacy_attacks.pipelines.check_attack", "train": "privacy_attacks.pipelines.check_train"}


def value_overrides(grid: dict[str, list[str]]) -> list[list[str]]:
    """One list of overrides per value to check: the first job's, then for each swept key each of its other values
    with every other key at its first (``{"a": ["1", "2"], "b": ["x", "y", "z"]}`` -> a=1 b=x, a=2 b=x, a=1 b=y,
    a=1 b=z)."""
    first = {key: values[0] for key, values in grid.items()}
    runs = [first]
    for key, values in grid.items():
        runs += [{**first, key: value} for value in values[1:]]
    return [[f"{key}={value}" for key, value in run.items()] for run in runs]


class SweepCheck(Callback):
    """Before the first job of a multirun, the checks its jobs make before any work, for every swept value."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_method

        name = OmegaConf.select(config, "hydra.job.config_name", default=None)
        grid = sweep_grid(config)
        if name not in CHECKS or not grid or all(len(values) == 1 for values in grid.values()):
            return
        check = get_method(CHECKS[name])
        for overrides in value_overrides(grid):
            try:
                job = compose(config_name=name, overrides=overrides)
            except Exception:  # noqa: BLE001 - what Hydra cannot compose, it reports at that job's launch
                return
            # Hydra turns a callback's exception into a warning: a user error leaves as the scripts' own (status 2).
            run_reporting_errors(check, job)
