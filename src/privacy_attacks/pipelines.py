"""The two entry points behind ``train.py`` and ``attack.py``: ``run_train(cfg)`` and ``run_attack(cfg)``.

Both take a composed Hydra config, do the work, write ``metrics.json`` into the run
folder and return the metric dict (so Hydra sweepers can optimise it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_method
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from privacy_attacks import cache
from privacy_attacks.data.identity import check_source_node
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError, require_int
from privacy_attacks.harness import (
    build_loggers,
    config_hparams,
    instantiate_named,
    limit_gpu_memory,
    run_device,
    run_metrics,
    set_threads,
    warn_lookalike_additions,
    with_run_metrics,
    write_hparams_table,
)
from privacy_attacks.io import output_dir, write_json
from privacy_attacks.seeding import derive_seed
from privacy_attacks.targets import checkpoint_spec, provision_target, save_checkpoint
from privacy_attacks.training import build_privacy, check_network, fit_classifier, resume_differences, validate_recipe

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_train(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.data``; write checkpoints, TensorBoard logs and ``metrics.json``.

    The trained network is also registered in the target cache (``cfg.paths.cache_dir``) under its recipe's key
    (unless ``test=false``, a tuning run that never reads the test set), so ``attack.py`` with the same recipe uses it
    without retraining. A training defence (``defense=dpsgd``) enters the recipe (:func:`recipe_with_defense`); any
    other defence stops here.
    """
    check_train(cfg)
    recipe = recipe_with_defense(cfg, "model")
    device = run_device(cfg.trainer).type
    limit_gpu_memory(cfg.get("gpu_memory_fraction"), run_device(cfg.trainer))
    log.info("torch threads: %d", set_threads(cfg.get("threads")))
    out = output_dir(cfg)
    spec = checkpoint_spec(recipe, cfg.data, device, cfg.trainer)  # its cache key, and the stamp of its checkpoints
    ckpt_path = cfg.get("ckpt_path")
    differences = resume_differences(str(ckpt_path), spec) if ckpt_path else []
    if differences:  # going on from another run's weights: this run's model, not the recipe's
        log.warning(
            "ckpt_path was written by a run of other settings (%s%s): this run goes on from its weights, and is not "
            "cached as the target of this recipe.",
            "; ".join(differences[:3]),
            "; ..." if len(differences) > 3 else "",
        )
    loggers = build_loggers(cfg)
    for logger in loggers:
        logger.log_hyperparams(config_hparams(cfg))
    try:
        system, metrics = fit_classifier(
            recipe,
            cfg.data,
            cfg.trainer,
            recipe.seed,
            logger=loggers or False,
            callbacks=run_callbacks(cfg, has_logger=bool(loggers)),
            ckpt_path=ckpt_path,
            test=bool(cfg.get("test", True)),
            spec=spec,
        )
    except (KeyboardInterrupt, SystemExit):  # Lightning exits on Ctrl-C after its graceful shutdown
        last = out / "checkpoints" / "last.ckpt"
        if last.exists():
            log.warning("Interrupted: the same command with ckpt_path=%s goes on from the last epoch.", last)
        raise
    write_json(out / "metrics.json", metrics)
    for logger in loggers:  # the fit only flushed them (harness.build_loggers): close the run's event file
        write_hparams_table(logger, config_hparams(cfg))
        getattr(logger, "finalize_run", logger.finalize)("success")
    if "test/acc" not in metrics:
        log.info("test=false: the test set was not read; val/acc %.4f; metrics in %s", metrics["val/acc"], out)
        return metrics  # not cached: an attack's target carries its test metrics
    if differences:
        log.info(
            "test/acc %.4f; metrics in %s; not cached (resumed from a run of other settings)", metrics["test/acc"], out
        )
        return metrics
    cached = cache.cache_path(cfg.paths.cache_dir, "target", spec)
    existed = cached.exists()  # no lock to see a file written whole (by a rename)
    if not existed:
        with cache.locked(cached):
            existed = cached.exists()
            if not existed:
                save_checkpoint(cached, system.net, spec, metrics)
    where = "the cached target of this recipe, kept, is at" if existed else "target cached at"
    log.info("test/acc %.4f; metrics in %s; %s %s", metrics["test/acc"], out / "metrics.json", where, cached)
    return metrics


def run_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    """``cfg.callbacks`` instantiated; without a logger (``logger=none``) the ones that only write to a logger
    (``LearningRateMonitor``) are left out, with a line saying so."""
    callbacks = instantiate_named(cfg.get("callbacks"))
    if has_logger:
        return callbacks
    dropped = [type(c).__name__ for c in callbacks if isinstance(c, LearningRateMonitor)]
    if dropped:
        log.info("logger=none: %s left out (it writes only to a logger).", ", ".join(dropped))
    return [c for c in callbacks if not isinstance(c, LearningRateMonitor)]


def available_attacks() -> list[str]:
    """Names of the ``conf/attack/*.yaml`` configs."""
    return sorted(p.stem for p in (CONF_DIR / "attack").glob("*.yaml") if not p.stem.startswith("_"))


def target_report(cfg: DictConfig, target: Any) -> dict[str, float]:
    """What an attack run reports of its target beside the attack's success: its test accuracy (``target/test_acc``,
    the utility that privacy–utility plots read) for the attacks on the trained target (those whose surfaces include
    its training), and its spent ε (``target/privacy/*``) when it was trained with DP-SGD; nothing without a target."""
    target_metrics = target.metrics if target is not None else {}
    report = {f"target/{k}": float(v) for k, v in target_metrics.items() if k.startswith("privacy/")}
    if "training" in (cfg.attack.get("surfaces") or []) and "test/acc" in target_metrics:
        report["target/test_acc"] = float(target_metrics["test/acc"])
    return report


def check_attack(cfg: DictConfig) -> None:
    """Every check an attack run makes before any work (:class:`ConfigError` in one line): an attack is chosen and
    importable, the seed is a whole number, the target's recipe and defence are sound and its network takes the data's
    images and gives its classes (unless the attack provisions its own target), the device exists (``trainer=gpu``
    without a GPU), and the attack's own ``attack.validate``. A sweep makes them for each of its values before its
    first job (:class:`~privacy_attacks.callbacks.SweepCheck`)."""
    warn_lookalike_additions(cfg)
    if cfg.get("attack") is None:
        choices = ", ".join(available_attacks()) or "none yet"
        raise ConfigError(f"No attack chosen: add attack=<name> to the command line (available: {choices}).")
    get_method(cfg.attack.entry)
    require_int(cfg.get("seed"), "seed", minimum=None)  # the attack's own randomness
    check_source_node(cfg.data)
    require_int(cfg.data.get("split_seed"), "data.split_seed", minimum=None)  # it keys the cached models
    target = recipe_with_defense(cfg, "target")
    validate_recipe(target, "target")  # a defence the attack never meets stops here
    if not cfg.attack.get("provision"):  # an attack that provisions its own target checks it there, if it uses it
        # The target's network before the attack's own checks: a student or proxy built from it (the default attacker
        # network) would otherwise report the target's fault under its own key.
        check_network(target, "target", cfg.data, build_privacy(target))
    run_device(cfg.trainer)
    if cfg.attack.get("validate"):
        get_method(cfg.attack.validate)(cfg)


def check_train(cfg: DictConfig) -> None:
    """Every check a ``train.py`` run makes before any work: the seed, the recipe with its training defence, the
    device, and that ``ckpt_path`` (resuming) names a file."""
    warn_lookalike_additions(cfg)
    require_int(cfg.get("seed"), "seed", minimum=None)
    check_source_node(cfg.data)
    require_int(cfg.data.get("split_seed"), "data.split_seed", minimum=None)
    validate_recipe(recipe_with_defense(cfg, "model"))
    run_device(cfg.trainer)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not Path(str(ckpt_path)).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} is not a checkpoint file: give the interrupted run's "
            "outputs/train/<time>/checkpoints/last.ckpt."
        )


def run_attack(cfg: DictConfig) -> dict[str, float]:
    """Provision the frozen target and run the attack chosen by ``attack=<name>``.

    Each attack config (``conf/attack/<name>.yaml``) sets ``attack.entry``, the dotted path of a
    function ``run(cfg, target) -> dict``, and optionally ``attack.validate``, a function
    ``validate(cfg)`` that raises :class:`ConfigError` before any work, and ``attack.provision``, a function
    ``provision(cfg) -> Target | None`` for an attack that trains a target of its own (the canary audit) or needs
    none (gradient inversion against its own shared model) (default: :func:`provision_target`, the cached target of
    ``cfg.target``); the returned metrics are
    written to ``metrics.json``, with the target's ``privacy/*`` metrics (its spent ε) as ``target/privacy/*``
    when it was trained with DP-SGD.
    """
    check_attack(cfg)  # bad input stops here, before any training
    entry = get_method(cfg.attack.entry)
    log.info("torch threads: %d", set_threads(cfg.get("threads")))
    limit_gpu_memory(cfg.get("gpu_memory_fraction"), run_device(cfg.trainer))
    out = output_dir(cfg)
    provision = get_method(cfg.attack.provision) if cfg.attack.get("provision") else provision_target
    target = provision(cfg)
    # The global RNGs (for draws that take no generator) from the attack's seed, never the bare seed a target's
    # recipe also uses: a network built from them must not start from the target's initial weights.
    L.seed_everything(derive_seed(cfg.seed, "global") % 2**32, workers=True, verbose=False)
    beside = target_report(cfg, target)
    with run_metrics(beside):  # the run's loggers write them with the attack's metrics, and so does metrics.json
        metrics = with_run_metrics(entry(cfg, target))
    write_json(out / "metrics.json", metrics)
    log.info("%s: metrics in %s", cfg.attack.name, out / "metrics.json")
    return metrics
