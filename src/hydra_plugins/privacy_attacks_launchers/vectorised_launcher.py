"""``hydra/launcher=vectorised``: a sweep's jobs that differ only in batchable keys fitted as one (docs/sweeps.md).

The jobs run one after another in this process, as under the basic launcher, each with its own folder, metrics and
TensorBoard run. Before they start, the launcher groups those whose overrides differ only in their attack's
``attack.vectorised_keys`` (output inversion: the priors' weights, ``init``, ``loss``, ``seed``), at most
``group_size`` jobs a group, and announces the groups (:mod:`privacy_attacks.engine.sweep`); the first job of a group
fits every job's reconstruction in one batch, the others take theirs. An attack without ``vectorised_keys`` runs job
by job, exactly as under the basic launcher.

    python attack.py -m hydra/launcher=vectorised attack=inversion tv_lambda=0,1e-3,1e-2,1e-1 init=zeros,noise
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class VectorisedLauncherConf:
    _target_: str = "hydra_plugins.privacy_attacks_launchers.vectorised_launcher.VectorisedLauncher"
    group_size: int = 16  # the most jobs fitted as one batch (their images are in memory together)


ConfigStore.instance().store(
    group="hydra/launcher", name="vectorised", node=VectorisedLauncherConf, provider="privacy_attacks"
)


def override_key(override: str) -> str:
    """The key an override sets: ``tv_lambda`` of ``tv_lambda=0.1``, ``model@target`` of ``+model@target=cnn``."""
    return override.split("=", 1)[0].lstrip("+~")


def group_jobs(
    overrides: Sequence[Sequence[str]], vectorised: Sequence[Sequence[str]], group_size: int
) -> list[list[int]]:
    """Positions of the jobs grouped: jobs whose overrides are equal once those setting one of the job's
    ``vectorised`` keys are left out share a group (at most ``group_size``, in the sweep's order); a job without
    vectorised keys is a group of its own."""
    groups: dict[tuple, list[list[int]]] = {}
    order: list[list[int]] = []
    for position, (job, keys) in enumerate(zip(overrides, vectorised)):
        if not keys:
            order.append([position])
            continue
        key = (tuple(sorted(keys)), tuple(sorted(o for o in job if override_key(o) not in keys)))
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= group_size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(position)
    return order


class VectorisedLauncher(Launcher):
    def __init__(self, group_size: int = 16) -> None:
        super().__init__()
        if int(group_size) < 1:
            raise ValueError(f"hydra.launcher.group_size must be a positive integer, got {group_size}.")
        self.group_size = int(group_size)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from privacy_attacks.engine.sweep import clear_plan, plan_groups

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for index, overrides in enumerate(job_overrides):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = initial_job_idx + index
            configs.append(sweep_config)
        keys = [list(OmegaConf.select(c, "attack.vectorised_keys", default=None) or []) for c in configs]
        groups = group_jobs(job_overrides, keys, self.group_size)
        plan_groups({initial_job_idx + i: task_config(configs[i]) for i in group} for group in groups)
        log.info(f"Launching {len(job_overrides)} jobs locally in {len(groups)} vectorised groups")
        runs: list[JobReturn] = []
        try:
            for index, (overrides, sweep_config) in enumerate(zip(job_overrides, configs)):
                log.info(f"\t#{initial_job_idx + index} : {' '.join(filter_overrides(overrides))}")
                runs.append(
                    run_job(
                        hydra_context=self.hydra_context,
                        task_function=self.task_function,
                        config=sweep_config,
                        job_dir_key="hydra.sweep.dir",
                        job_subdir_key="hydra.sweep.subdir",
                    )
                )
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        finally:
            clear_plan()
        return runs


def task_config(sweep_config: DictConfig) -> DictConfig:
    """A job's config as its task function sees it: the sweep config without its ``hydra`` node."""
    config = sweep_config.copy()
    with read_write(config), open_dict(config):
        del config["hydra"]
    return config
