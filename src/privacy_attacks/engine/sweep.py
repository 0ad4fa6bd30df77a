"""Vectorised sweeps: the jobs of a multirun that differ only in keys the engine can batch are fitted as one.

``hydra/launcher=vectorised`` (``hydra_plugins.privacy_attacks_launchers``) groups a sweep's jobs whose overrides
differ only in their attack's ``attack.vectorised_keys`` (output inversion: ``tv_lambda``, ``l2_lambda``, ``init``,
``loss``, ``seed``) and announces the groups here (:func:`plan_groups`) before it runs the jobs one after another as
the basic launcher does. A reconstruction attack fits its engine with :func:`fit_engine`: alone, or, for the first job
of a group, together with the engines of every job of its group in one stacked fit
(:func:`~privacy_attacks.engine.stacked.fit_stacked`); the later jobs of the group take their fitted engine from
here. Every job still writes its own folder, metrics, figures and TensorBoard run (its loss curves replayed from the
stacked fit), so the sweep summary reads them as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from privacy_attacks.engine.module import ReconstructionModule, fit_reconstruction
from privacy_attacks.engine.stacked import fit_stacked, stack_refusal

log = logging.getLogger(__name__)


@dataclass
class SweepGroup:
    """The jobs of one group (job number -> task config) and, once fitted, their engines and logged curves."""

    configs: dict[int, DictConfig]
    modules: dict[int, ReconstructionModule] = field(default_factory=dict)
    history: dict[int, dict[int, dict[str, float]]] = field(default_factory=dict)
    fit_time: float = 0.0
    fitted: bool = False


_GROUPS: dict[int, SweepGroup] = {}


def plan_groups(groups: Iterable[Mapping[int, DictConfig]]) -> None:
    """Announce the groups of the sweep about to run (each: job number -> its task config); replaces any earlier
    plan. Groups of one job are left out (they fit alone)."""
    _GROUPS.clear()
    for configs in groups:
        if len(configs) > 1:
            group = SweepGroup(dict(configs))
            _GROUPS.update(dict.fromkeys(configs, group))


def clear_plan() -> None:
    """Forget the plan (the launcher calls it when its jobs are done)."""
    _GROUPS.clear()


def this_job() -> int | None:
    """The running Hydra job's number (``hydra.job.num``), or None outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    number = HydraConfig.get().job.get("num")
    return None if number is None else int(number)


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
    ``log_every_n_steps``) unless this job belongs to a planned group; then the first job
    of the group builds every job's engine (``build`` of each job's config), fits them as one and keeps them, and
    each job takes its own, its logged curves replayed into ``loggers``. The fit seconds are then the group's divided
    by its jobs. A group whose engines cannot be stacked (:func:`stack_refusal`: L-BFGS, ...) fits job by job, with
    a line saying why."""
    group = _GROUPS.get(this_job())
    every = {} if log_every is None else {"log_every_n_steps": int(log_every)}
    if group is not None and not group.fitted:
        group.fitted = True
        modules = {number: build(cfg if number == this_job() else config) for number, config in group.configs.items()}
        reason = stack_refusal(list(modules.values()))
        if reason is None:
            start = time.perf_counter()
            every_step = log_every or int(trainer.get("log_every_n_steps", 50))
            stacked = fit_stacked(list(modules.values()), trainer, every_step, **overrides)
            group.fit_time = (time.perf_counter() - start) / len(modules)
            group.modules = modules
            group.history = dict(zip(modules, stacked.history))
            log.info("vectorised sweep: jobs %s fitted as one batch", ", ".join(map(str, modules)))
        else:
            log.info("vectorised sweep: jobs %s fitted one by one (%s)", ", ".join(map(str, modules)), reason)
    if group is not None and this_job() in group.modules:
        number = this_job()
        for step, values in sorted(group.history.pop(number).items()):
            for logger in loggers:
                logger.log_metrics(values, step)
        return group.modules.pop(number), group.fit_time, len(group.configs)
    module = build(cfg)
    start = time.perf_counter()
    fit_reconstruction(module, trainer, logger=list(loggers) or False, **every, **overrides)
    return module, time.perf_counter() - start, 1
