"""A Hydra callback that says, as each job of a multirun starts, which job of how many it is and about how
long the rest will take::

    job 3/10 (loss=kl seed=1); 2 done in 1m40s, about 6m40s left

The number of jobs is counted when the sweep starts, as Hydra's basic sweeper builds its grid: the cartesian
product of the values of ``hydra.sweeper.params`` and of the command line's sweep overrides (the command line
wins for a key given in both). Under another sweeper the total is unknown and the line reads ``job 3 (...)``.

A job is done when its folder holds a ``metrics.json`` written since the sweep started; counting files rather
than calls keeps the count right where ``on_job_start`` runs in another process than the sweep (joblib's
workers, SLURM nodes), which the callback reaches with what it learnt at the start of the sweep. A done job
took from its ``.hydra/overrides.yaml`` (written as it starts) to its ``metrics.json``; the time left is the
mean of those times, times the jobs not done, divided by the jobs running now (job ``k`` starting with ``d``
done: ``k - d``, assuming jobs start in order, as the basic, joblib and SLURM launchers start them). Under
``hydra/launcher=vectorised`` the first job of a group does the work of all its jobs and the others take theirs in
an instant, so a mean over jobs would be skewed; there the time left is the mean time of the groups' first jobs,
times the groups not done, plus the others' mean times those left (:func:`time_left_grouped`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_grid(config: DictConfig) -> dict[str, list[str]] | None:
    """The values each key takes in the basic sweeper's grid of the multirun ``config``, ``{key: [values]}`` in
    the sweeper's order (one value for a plain override); ``None`` under another sweeper or for a sweep that
    cannot be enumerated (an interval)."""
    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    grid: dict[str, list[str]] = {}
    for override in OverridesParser.create(config_loader=loader).parse_overrides(arguments):
        if override.is_sweep_override() and not override.is_discrete_sweep():
            return None
        values = (
            override.sweep_string_iterator() if override.is_sweep_override() else [override.get_value_element_as_str()]
        )
        grid[override.get_key_element()] = list(values)
    return grid


def count_jobs(grid: dict[str, list[str]]) -> int:
    """The number of jobs of ``grid`` (:func:`sweep_grid`): the product of its numbers of values."""
    return math.prod(len(values) for values in grid.values())


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"6m40s"`` or ``"2h05m"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_left(durations: list[float], total: int, number: int) -> float:
    """About how long the jobs not done will take when job ``number`` (from 1) starts and the jobs that took
    ``durations`` are done: their mean time, times the jobs not done, over the jobs running (``number - done``)."""
    done = len(durations)
    return sum(durations) / done * max(total - done, 0) / max(number - done, 1)


def time_left_grouped(
    firsts: list[float], followers: list[float], total_firsts: int, total_followers: int
) -> float | None:
    """About how long a vectorised sweep's jobs not done will take, one at a time: the mean time of the groups'
    first jobs done (``firsts``; a job of no group counts as a group's first), times the first jobs not done, plus the
    mean time of the other jobs done (``followers``, 0 when none is), times theirs not done. None before any first
    job is done."""
    if not firsts:
        return None
    follower_mean = sum(followers) / len(followers) if followers else 0.0
    return sum(firsts) / len(firsts) * max(total_firsts - len(firsts), 0) + follower_mean * max(
        total_followers - len(followers), 0
    )


def progress_line(
    number: int, total: int | None, label: str, durations: list[float], elapsed: float, left: float | None = None
) -> str:
    """``job <number>/<total> (<label>); <done> done in <elapsed>, about <left> left`` (the time left is ``left``
    where given, else :func:`time_left`); the parts that are not known yet (the total, any job done) are left out."""
    line = f"job {number}/{total}" if total else f"job {number}"
    if label:
        line += f" ({label})"
    if durations:
        line += f"; {len(durations)} done in {format_duration(elapsed)}"
        if left is None and total:
            left = time_left(durations, total, number)
        if left is not None:
            line += f", about {format_duration(left)} left"
    return line


class SweepProgress(Callback):
    """Log, as each job of a multirun starts, its number out of the sweep's, the swept values it takes, the jobs
    done and an estimate of the time left (see the module's docstring). Single runs log nothing."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.start: float | None = None
        self.total: int | None = None
        self.swept: list[str] = []
        self.earlier: dict[str, float] = {}  # metrics.json files already in the sweep folder: path -> mtime
        self.numbers: dict[str, int] = {}  # the folders of the jobs started in this process -> their job numbers

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        grid = sweep_grid(config)
        self.total = count_jobs(grid) if grid is not None else None
        self.swept = [key for key, values in (grid or {}).items() if len(values) > 1]
        self.earlier = {str(p): p.stat().st_mtime for p in self._metrics_files(config)}
        self.start = self.clock()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.start is None:  # a single run
            return
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        label = " ".join(o for o in overrides if o.partition("=")[0] in self.swept)
        folder = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        if folder:
            self.numbers[str(Path(folder).resolve())] = int(config.hydra.job.num)
        done = self.done(config)
        line = progress_line(
            config.hydra.job.num + 1, self.total, label, list(done.values()), self.elapsed(), self.grouped_left(done)
        )
        log.info(line)

    def grouped_left(self, done: dict[str, float]) -> float | None:
        """The time left by :func:`time_left_grouped` when this process runs a vectorised sweep's planned groups
        (``done``: job folder -> seconds); None otherwise."""
        from privacy_attacks.engine.sweep import planned_followers

        followers = planned_followers()
        if not followers or self.total is None:
            return None
        firsts, others = [], []
        for folder, seconds in done.items():
            (others if self.numbers.get(folder) in followers else firsts).append(seconds)
        return time_left_grouped(firsts, others, self.total - len(followers), len(followers))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.start is not None:
            log.info("%d jobs done in %s", len(self.durations(config)), format_duration(self.elapsed()))

    def elapsed(self) -> float:
        return self.clock() - (self.start or 0.0)

    def durations(self, config: DictConfig) -> list[float]:
        """How long each job done since the sweep started took (see :meth:`done`)."""
        return list(self.done(config).values())

    def done(self, config: DictConfig) -> dict[str, float]:
        """The jobs done since the sweep started, their folder -> how long they took (the time its ``metrics.json``
        was written after its ``.hydra/overrides.yaml``; 0 for a job without the latter)."""
        durations = {}
        for metrics in self._metrics_files(config):
            end = metrics.stat().st_mtime
            if self.earlier.get(str(metrics)) != end:
                started = metrics.parent / ".hydra" / "overrides.yaml"
                seconds = max(end - started.stat().st_mtime, 0.0) if started.exists() else 0.0
                durations[str(metrics.parent.resolve())] = seconds
        return durations

    @staticmethod
    def _metrics_files(config: DictConfig) -> list[Path]:
        return list(Path(config.hydra.sweep.dir).glob("*/metrics.json"))
