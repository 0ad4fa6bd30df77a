"""Vectorised sweeps: the jobs of a multirun that differ only in keys the engine can batch are fitted as one.

``hydra/launcher=vectorised`` (``hydra_plugins.privacy_attacks_launchers``) groups a sweep's jobs whose overrides
differ only in their attack's ``attack.vectorised_keys`` (output inversion: the priors' weights, ``init``, ``loss``,
``seed``) and announces the groups here (:func:`plan_groups`) before it runs the jobs one after another as
the basic launcher does. An attack does the work a group can share through :func:`run_grouped`: alone, or, for the
first job of a group, for every job of its group at once; the later jobs of the group take their result from here. A
reconstruction attack fits its engine with :func:`fit_engine` (the engines of a group in one stacked fit,
:func:`~privacy_attacks.engine.stacked.fit_stacked`); distillation trains its students with
:func:`~privacy_attacks.attacks.stealing.stacked.fit_students`. Every job still writes its own folder, metrics, figures
and TensorBoard run (its logged curves replayed from the shared work), so the sweep summary reads them as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from privacy_attacks.engine.module import ReconstructionModule, fit_reconstruction
from privacy_attacks.engine.stacked import fit_stacked, stack_refusal

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SweepGroup:
    """The jobs of one group (job number -> task config) and, once the first has run, each job's result."""

    configs: dict[int, DictConfig]
    results: dict[int, Any] = field(default_factory=dict)
    done: bool = False


_GROUPS: dict[int, SweepGroup] = {}


def plan_groups(groups: Iterable[Mapping[int, DictConfig]]) -> None:
    """Announce the groups of the sweep about to run (each: job number -> its task config); replaces any earlier
    plan. Groups of one job are left out (they run alone)."""
    _GROUPS.clear()
    for configs in groups:
        if len(configs) > 1:
            group = SweepGroup(dict(configs))
            _GROUPS.update(dict.fromkeys(configs, group))


def clear_plan() -> None:
    """Forget the plan (the launcher calls it when its jobs are done)."""
    _GROUPS.clear()


def planned_followers() -> set[int]:
    """The job numbers of the planned groups that are not their group's first: their work is done by the first, so
    they take little time of their own (the sweep progress line estimates the time left by it)."""
    return {job for group in _GROUPS.values() for job in sorted(group.configs)[1:]}


def this_job() -> int | None:
    """The running Hydra job's number (``hydra.job.num``), or None outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    number = HydraConfig.get().job.get("num")
    return None if number is None else int(number)


def run_grouped(
    cfg: DictConfig,
    alone: Callable[[DictConfig], T],
    together: Callable[[dict[int, DictConfig]], dict[int, T] | str],
) -> tuple[T, int]:
    """This job's result and how many jobs shared the work: ``(alone(cfg), 1)`` unless the job belongs to a planned
    group. Then the first job of the group calls ``together`` with every job's config (its own as given) and keeps
    each job's result for it; ``together`` returns a sentence instead when the group's work cannot be shared (each
    job then runs ``alone``, after a line saying why), as when it raises (a job's own fault then shows in its own
    run)."""
    number = this_job()
    group = _GROUPS.get(number)
    if group is not None and not group.done:
        group.done = True
        configs = {job: cfg if job == number else config for job, config in group.configs.items()}
        try:
            results = together(configs)
        except Exception as error:  # noqa: BLE001 - one job's fault must not fail the others: each runs alone
            results = f"the shared work failed: {type(error).__name__}: {error}"
            log.warning("vectorised sweep: %s", results)
        if isinstance(results, str):
            log.info("vectorised sweep: jobs %s run one by one (%s)", ", ".join(map(str, configs)), results)
        else:
            group.results = dict(results)
            log.info("vectorised sweep: jobs %s fitted as one batch", ", ".join(map(str, configs)))
    if group is not None and number in group.results:
        return group.results.pop(number), len(group.configs)
    return alone(cfg), 1


def batch_note(batched: int, done: str) -> str:
    """`` (<done> in one batch with 1 other job)``, ``... with 3 other jobs)``; ``""`` for a job done alone (a log
    line's ending; ``done``: what was batched, e.g. ``fitted``)."""
    if batched <= 1:
        return ""
    return f" ({done} in one batch with {batched - 1} other job{'s' if batched > 2 else ''})"


def replay(loggers: Sequence[Any], history: Mapping[int, Mapping[str, float]]) -> None:
    """Write a job's logged values ``{step: {name: value}}`` (recorded during shared work) into its loggers."""
    for step, values in sorted(history.items()):
        for logger in loggers:
            logger.log_metrics(dict(values), step)


def fit_engine(
    cfg: DictConfig,
    build: Callable[[DictConfig], ReconstructionModule],
    trainer: Mapping[str, Any],
    loggers: Sequence[Any] = (),
    log_every: int | None = None,
    **overrides: Any,
) -> tuple[ReconstructionModule, float, int]:
    """The fitted engine ``build(cfg)`` of this job: ``(module, fit seconds, jobs fitted together)``.

    Alone (:func:`fit_reconstruction` with ``loggers``, logging every ``log_every`` steps: default the trainer's
    ``log_every_n_steps``) unless this job belongs to a planned group (:func:`run_grouped`); then the first job of
    the group builds every job's engine (``build`` of each job's config) and fits them as one, and each job takes its
    own, its logged curves replayed into ``loggers``. The fit seconds are then the group's divided by its jobs. A
    group whose engines cannot be stacked (:func:`stack_refusal`: L-BFGS, ...) fits job by job."""

    def alone(job: DictConfig) -> tuple[ReconstructionModule, float, dict]:
        module = build(job)
        every = {} if log_every is None else {"log_every_n_steps": int(log_every)}
        start = time.perf_counter()
        fit_reconstruction(module, trainer, logger=list(loggers) or False, **every, **overrides)
        return module, time.perf_counter() - start, {}

    def together(configs: dict[int, DictConfig]) -> dict[int, tuple[ReconstructionModule, float, dict]] | str:
        modules = {job: build(config) for job, config in configs.items()}
        reason = stack_refusal(list(modules.values()))
        if reason is not None:
            return reason
        start = time.perf_counter()
        every = log_every or int(trainer.get("log_every_n_steps", 50))
        stacked = fit_stacked(list(modules.values()), trainer, every, **overrides)
        share = (time.perf_counter() - start) / len(modules)
        return {job: (module, share, stacked.history[i]) for i, (job, module) in enumerate(modules.items())}

    (module, seconds, history), batched = run_grouped(cfg, alone, together)
    replay(loggers, history)
    return module, seconds, batched
