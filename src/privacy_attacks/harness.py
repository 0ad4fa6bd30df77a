"""The run harness: what every entry point and attack does the same way.

- :func:`build_loggers`: the run's loggers, one per ``_target_`` node of ``cfg.logger`` (none for ``logger=none``),
  kept open until :func:`finish_loggers`, so a run writes one event file;
- :func:`finish_loggers`: log the run's hparams (:func:`run_hparams` and the attack's own) together with its final
  metrics, and finalize;
- :func:`log_image_grid`: an image grid (e.g. originals above reconstructions) to the loggers that take images;
- :func:`set_threads`: the run's torch thread count (``threads``), set before any work;
- :func:`limit_gpu_memory`: the run's share of the GPU's memory (``gpu_memory_fraction``), for jobs sharing a card;
- :func:`build_trainer`: a Lightning Trainer from ``cfg.trainer`` for a fit inside a run (a target, a student,
  a reconstruction, an attack classifier, a decoder): no logger, no callbacks and no checkpoints unless asked;
- :func:`run_device`: the device of ``cfg.trainer`` for the work outside Lightning fits (queries, shadow models,
  scoring), with a clear error when ``trainer=gpu`` is asked for on a machine without one.

Attack modules keep only what is their own: which hparams and metrics they log, and their fits' settings.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from privacy_attacks.callbacks.sigterm import StopOnSigterm
from privacy_attacks.errors import ConfigError, UserError, require_int
from privacy_attacks.io import move_aside

log = logging.getLogger(__name__)

# What a Trainer inside a run does unless its config or the caller says otherwise: it writes nothing of
# its own (the run's loggers are passed in where a fit's curves are wanted) and skips the sanity check.
QUIET_TRAINER: dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}
# Without a trainer config: one CPU device, deterministic, no progress bar.
DEFAULT_TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "deterministic": True,
    "enable_progress_bar": False,
}


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count to ``threads`` (the config's top-level ``threads``) and return the count
    in effect. ``None`` keeps the process's count: torch's default (one per core), or under
    ``hydra/launcher=joblib`` the cores shared among the parallel jobs (joblib sets ``OMP_NUM_THREADS`` of its
    workers to cores // n_jobs unless the environment already sets it)."""
    require_int(threads, "threads", null_means="torch's default")
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def limit_gpu_memory(fraction: float | None, device: torch.device) -> None:
    """Cap this process's CUDA allocations at ``fraction`` of the card's memory (``gpu_memory_fraction``; None: no
    cap), so that several jobs of a sweep can share one GPU (``hydra/launcher=gpu_pool``). Nothing on the CPU."""
    if fraction is None:
        return
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ConfigError(f"gpu_memory_fraction={fraction!r} is not allowed: it must be in (0, 1], or null (no cap).")
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(float(fraction), device)


def instantiate_checked(node: Any, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; when the built object's own check refuses a setting (a :class:`UserError`
    inside Hydra's ``InstantiationException``), that one-line error instead of Hydra's traceback."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def build_node(node: Any, key: str, kind: type | None = None, what: str | None = None, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` for the config node at ``key`` (``priors.tv``, ``model.optimizer``); a bad
    setting (its own check, an unknown argument, a ``_target_`` that does not exist) as one line naming ``key``, and
    with ``kind``, :class:`ConfigError` unless it builds one (``what``: how the message names it)."""
    try:
        built = instantiate_checked(node, **kwargs)  # its own check's error as it is
    except InstantiationException as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        reason = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())  # e.g. the missing module
        raise ConfigError(f"{key} ({node.get('_target_')}) cannot be built: {reason}") from None
    if kind is not None and not isinstance(built, kind):
        raise ConfigError(
            f"{key} builds an object of class {type(built).__name__}, not {what or 'a ' + kind.__name__}: its "
            f"_target_ must be a subclass of {kind.__module__}.{kind.__qualname__}."
        )
    return built


def instantiate_named(group: Mapping[str, Any] | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a named mapping (``cfg.logger``, ``cfg.callbacks``); [] for None."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The run's loggers: one per ``_target_`` node of ``cfg.logger``; none for ``logger=none``.

    Each remembers ``cfg`` (``run_cfg``, for :func:`finish_loggers`) and stays open until then: a Trainer that ends
    its fit with ``finalize("success")`` only flushes it, so the run goes on writing into the same event file.
    """
    loggers = instantiate_named(cfg.get("logger"))
    for logger in loggers:
        set_aside_earlier_events(logger)
        logger.run_cfg = cfg
        logger.finalize_run = logger.finalize
        logger.finalize = functools.partial(_flush_unless_failed, logger)
    return loggers


def set_aside_earlier_events(logger: Any) -> Path | None:
    """Move the event files an earlier run left in ``logger``'s TensorBoard folder (a sweep run again into the same
    ``hydra.sweep.dir``) to ``earlier/<n>/`` beneath it, a TensorBoard run of their own: the folder's run is then
    this one alone (one event file, its own hparams beside its own metrics), and nothing is lost. Returns where they
    went (None when there were none, or for a logger without a folder)."""
    log_dir = getattr(logger, "log_dir", None)
    events = sorted(Path(log_dir).glob("events.out.tfevents.*")) if log_dir else []
    if not events:
        return None
    aside = move_aside(Path(log_dir), events)
    log.info("An earlier run's TensorBoard events in this run's folder were moved to %s.", aside)
    return aside


def _flush_unless_failed(logger: Any, status: str) -> None:
    """A Trainer's ``finalize`` of a run's logger: write out what it holds and keep it open; close it on failure."""
    if status != "success":
        logger.finalize_run(status)
        return
    logger.save()
    flush = getattr(logger.experiment, "flush", None)  # TensorBoard's SummaryWriter
    if flush is not None:
        flush()


def hparam_items(value: Any, key: str) -> dict[str, Any]:
    """``value`` as TensorBoard hparams under ``key``: mappings flattened with dots (``target.net._target_``), values
    other than bool, int, float and str (lists, None) as strings."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: v for name, item in value.items() for k, v in hparam_items(item, f"{key}.{name}").items()}
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)}


def task_overrides() -> list[str]:
    """The job's command-line overrides as typed (Hydra's task overrides): an interpolation in one
    (``'methods.proxy.loss=${losses.kl}'``) stays the text it was, where reading the list would resolve it."""
    return [str(item) for item in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]


def command_line_hparams() -> dict[str, Any]:
    """The job's command-line overrides (Hydra's task overrides, Hydra's own left out) as hparams, keyed as written
    (``model@target``, ``query_budget``); none outside a Hydra job."""
    if not HydraConfig.initialized():
        return {}
    overrides = OverridesParser.create().parse_overrides(task_overrides())
    params: dict[str, Any] = {}
    for override in overrides:
        if not (override.is_delete() or override.is_hydra_override()):
            params.update(hparam_items(override.value(), override.get_key_element().lstrip("+~")))
    return params


def lookalike_additions(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """One line for each ``+key=value`` of ``overrides`` that adds a key beside a declared one of nearly the same
    name (``+model.max_epoch=1`` beside ``model.max_epochs``): Hydra suggests the ``+`` for a misspelt key, and a key
    nothing reads is taken without a word."""
    lines = []
    for item in overrides:
        if not item.startswith("+") or item.startswith("++"):
            continue
        key = item[1:].partition("=")[0]
        if "/" in key or "@" in key:  # a config group added (+logger/tb=...), not a key
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if not isinstance(parent, DictConfig):
            continue
        close = difflib.get_close_matches(name, [str(k) for k in parent.keys() if k != name], n=1, cutoff=0.8)
        if close:
            declared = f"{parent_key}.{close[0]}" if parent_key else close[0]
            lines.append(f"+{key} adds a new key beside {declared}: if it is a misspelling of it, nothing reads it.")
    return lines


_WARNED: set[str] = set()  # the lines of this process so far: a sweep's checks and jobs say each once


def warn_lookalike_additions(cfg: DictConfig) -> None:
    """Log :func:`lookalike_additions` of the job's command line once per process (nothing outside a Hydra job)."""
    if HydraConfig.initialized():
        for line in lookalike_additions(cfg, task_overrides()):
            if line not in _WARNED:
                _WARNED.add(line)
                log.warning(line)


def config_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The whole resolved config as hparams, flattened with dots as :func:`run_hparams` keys them
    (``model.net._target_``), with every command-line override (:func:`command_line_hparams`): what ``train.py``
    logs."""
    container = OmegaConf.to_container(cfg, resolve=True)
    params = {k: v for key, value in container.items() for k, v in hparam_items(value, str(key)).items()}
    return {**params, **command_line_hparams()}


def write_hparams_table(logger: Any, params: Mapping[str, Any]) -> None:
    """TensorBoard's hparams-table entry of a run whose metrics are already logged as scalars: the session's
    ``params``, and no experiment summary, so that TensorBoard builds the table from every run under its
    ``--logdir`` (the union of their hparams; a column per scalar tag, with its last value): a folder of sweeps of
    several attacks gets every attack's columns, where one run's experiment summary would give all runs its own.
    No scalar is written again (Lightning's ``log_hyperparams(params, metrics)`` would add each metric at step 0, a
    point out of its curve). Loggers other than TensorBoard's get ``log_hyperparams(params)``."""
    writer = getattr(getattr(logger, "experiment", None), "_get_file_writer", None)
    if writer is None:
        logger.log_hyperparams(dict(params))
        return
    from torch.utils.tensorboard.summary import hparams

    _, session_start, session_end = hparams(dict(params), {})
    for summary in (session_start, session_end):
        writer().add_summary(summary)


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What tells a run apart in TensorBoard's hparams: the data's name, the target's recipe (``target.*``: its
    network's ``_target_``, ``max_epochs``, ``members``, ``seed``...), the defence (``defense.*``), ``attack.name``,
    the attacker's network when it chose one (``attacker_net.*``), ``seed`` and every command-line override
    (:func:`command_line_hparams`)."""
    params: dict[str, Any] = {"data.name": OmegaConf.select(cfg, "data.name", default=None) or "mnist"}
    for key in ("target", "defense", "attacker_net", "attack.name", "seed"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            params.update(hparam_items(value, key))
    return {**params, **command_line_hparams()}


def writes_this_step(trainer: Any) -> bool:
    """Whether Lightning writes what a training step logs with ``self.log`` now: its own rule (the
    ``log_every_n_steps``-th batch of the fit, counted from 1, is written at its 0-based step), read from its logger
    connector, so that a step that skips ``self.log`` on the others writes each value at the step it was measured
    (and progress lines, which read the last logged value, have one with or without a logger)."""
    return bool(trainer._logger_connector.should_update_logs)


def lightning_writes(step: int, every: int) -> bool:
    """Whether Lightning writes what its 0-based step ``step`` logs, at ``log_every_n_steps=every`` (0: never): the
    rule of :func:`writes_this_step`, for a loop of one's own that records a curve as a Lightning fit would."""
    return every > 0 and (step + 1) % every == 0


def logs_step(step: int, every: int, steps: int) -> bool:
    """Whether a fit of ``steps`` steps that writes its loggers itself writes step ``step`` (0-based): the first,
    every ``every``-th after it, and the last (none with ``every`` 0, Lightning's "never")."""
    return every > 0 and (step % every == 0 or step == steps - 1)


_RUN_METRICS: ContextVar[Mapping[str, float] | None] = ContextVar("run_metrics", default=None)


@contextlib.contextmanager
def run_metrics(metrics: Mapping[str, float]) -> Iterator[None]:
    """Within it, :func:`finish_loggers` writes ``metrics`` beside an attack's own (those it does not report itself):
    what the run knows of the attacked target (its test accuracy, its spent ε), so that TensorBoard's table has the
    columns of ``metrics.json``."""
    token = _RUN_METRICS.set(dict(metrics))
    try:
        yield
    finally:
        _RUN_METRICS.reset(token)


def with_run_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` followed by the run's (:func:`run_metrics`) it does not have: where both have a name, the
    attack's own wins."""
    extras = _RUN_METRICS.get() or {}
    return {**metrics, **{key: value for key, value in extras.items() if key not in metrics}}


def finish_loggers(
    loggers: Sequence[Any],
    hparams: Mapping[str, Any],
    metrics: Mapping[str, float],
    *,
    step: int = 0,
    cfg: DictConfig | None = None,
) -> None:
    """For each logger: the final ``metrics`` as scalars at ``step`` (the fit's last step beside its curves; 0 for an
    attack without curves), once; the hparams (:func:`write_hparams_table`: TensorBoard's table shows them beside the
    run's last scalars); then finalize it.

    The hparams are :func:`run_hparams` of ``cfg`` (default: the config :func:`build_loggers` built the logger from;
    none for a logger built otherwise) updated with ``hparams``, the attack's own. Within :func:`run_metrics`, its
    metrics join ``metrics`` (the attack's own kept where both have a name).
    """
    metrics = with_run_metrics(metrics)
    for logger in loggers:
        logger.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)
        run_cfg = cfg if cfg is not None else getattr(logger, "run_cfg", None)
        params = {**(run_hparams(run_cfg) if run_cfg is not None else {}), **hparams}
        write_hparams_table(logger, params)
        getattr(logger, "finalize_run", logger.finalize)("success")


def log_image_grid(loggers: Sequence[Any], tag: str, rows: Sequence[Tensor], step: int) -> None:
    """Images (K, C, H, W) of each of ``rows`` (same K) as one grid, one row each, to the loggers whose
    experiment takes images (TensorBoard)."""
    from torchvision.utils import make_grid

    grid = None
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            if grid is None:
                grid = make_grid(torch.cat(list(rows)), nrow=len(rows[0]), padding=2, pad_value=1.0)
            experiment.add_image(tag, grid, global_step=step)


def build_trainer(
    config: DictConfig | Mapping[str, Any] | None = None, *, quiet: bool = True, **overrides: Any
) -> L.Trainer:
    """A Lightning Trainer from a trainer config (``cfg.trainer``, ``conf/trainer/*.yaml``; ``trainer=gpu`` works).

    Settings come from, in increasing priority: :data:`QUIET_TRAINER` (unless ``quiet=False``), ``config``,
    and ``overrides`` (``max_epochs``, ``logger``, ``callbacks``...). ``callbacks`` default to none, beside
    :class:`~privacy_attacks.callbacks.sigterm.StopOnSigterm`, which every trainer gets.
    ``config`` may be a ``_target_`` node, a plain mapping of Trainer arguments, or None (then
    :data:`DEFAULT_TRAINER`: one deterministic CPU device).
    """
    config = DEFAULT_TRAINER if config is None else config
    defaults = {"callbacks": [], **QUIET_TRAINER} if quiet else {}
    settings = {**{key: value for key, value in defaults.items() if key not in config}, **overrides}
    trainer = instantiate(config, **settings) if "_target_" in config else L.Trainer(**{**config, **settings})
    trainer.callbacks.append(StopOnSigterm())  # a SIGTERM stops every call at a batch's end
    return trainer


GPU_ACCELERATORS = ("gpu", "cuda")


def run_device(config: DictConfig | Mapping[str, Any] | None = None) -> torch.device:
    """The device a run's trainer config asks for: ``cuda`` for ``accelerator: gpu``/``cuda`` (and ``auto`` when a
    GPU is there), else the CPU. Raises :class:`ConfigError` when a GPU is asked for and none is available."""
    accelerator = str((config or {}).get("accelerator", "cpu")).lower()
    if accelerator in GPU_ACCELERATORS:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer=gpu (accelerator={accelerator}) was asked for, but torch sees no CUDA GPU on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Use trainer=cpu, or install a CUDA "
                "build of torch where a GPU is present."
            )
        return torch.device("cuda")
    if accelerator == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
