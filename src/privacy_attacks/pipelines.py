"""The two entry points behind ``train.py`` and ``attack.py``: ``run_train(cfg)`` and ``run_attack(cfg)``.

Both take a composed Hydra config, do the work, write ``metrics.json`` into the run
folder and return the metric dict (so Hydra sweepers can optimise it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from privacy_attacks import cache
from privacy_attacks.defenses import defense_from_config
from privacy_attacks.errors import ConfigError
from privacy_attacks.harness import build_loggers, instantiate_named, set_threads
from privacy_attacks.io import output_dir, write_json
from privacy_attacks.targets import checkpoint_path, checkpoint_spec, provision_target, save_checkpoint
from privacy_attacks.training import fit_classifier, validate_recipe

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_train(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.data``; write checkpoints, TensorBoard logs and ``metrics.json``.

    The trained network is also registered in the target cache (``cfg.paths.cache_dir``) under
    its recipe's key, so ``attack.py`` with the same recipe uses it without retraining.
    """
    validate_recipe(cfg.model)
    log.info("torch threads: %d", set_threads(cfg.get("threads")))
    out = output_dir(cfg)
    loggers = build_loggers(cfg)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    system, metrics = fit_classifier(
        cfg.model,
        cfg.data,
        cfg.trainer,
        cfg.model.seed,
        logger=loggers or False,
        callbacks=instantiate_named(cfg.get("callbacks")),
        ckpt_path=cfg.get("ckpt_path"),
    )
    write_json(out / "metrics.json", metrics)
    cached = checkpoint_path(cfg.model, cfg.data, cfg.paths.cache_dir, "target")
    with cache.locked(cached):
        if not cached.exists():
            save_checkpoint(cached, system.net, checkpoint_spec(cfg.model, cfg.data), metrics)
    log.info("test/acc %.4f; metrics in %s; target cached at %s", metrics["test/acc"], out / "metrics.json", cached)
    return metrics


def available_attacks() -> list[str]:
    """Names of the ``conf/attack/*.yaml`` configs."""
    return sorted(p.stem for p in (CONF_DIR / "attack").glob("*.yaml") if not p.stem.startswith("_"))


def run_attack(cfg: DictConfig) -> dict[str, float]:
    """Provision the frozen target and run the attack chosen by ``attack=<name>``.

    Each attack config (``conf/attack/<name>.yaml``) sets ``attack.entry``, the dotted path of a
    function ``run(cfg, target) -> dict``, and optionally ``attack.validate``, a function
    ``validate(cfg)`` that raises :class:`ConfigError` before any work; the returned metrics are
    written to ``metrics.json``.
    """
    if cfg.get("attack") is None:
        choices = ", ".join(available_attacks()) or "none yet"
        raise ConfigError(f"No attack chosen: add attack=<name> to the command line (available: {choices}).")
    entry = get_method(cfg.attack.entry)
    log.info("torch threads: %d", set_threads(cfg.get("threads")))
    defense_from_config(cfg)  # a defence the attack never meets stops here
    if cfg.attack.get("validate"):
        get_method(cfg.attack.validate)(cfg)  # bad input stops here, before any training
    out = output_dir(cfg)
    target = provision_target(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    metrics = entry(cfg, target)
    write_json(out / "metrics.json", metrics)
    log.info("%s: metrics in %s", cfg.attack.name, out / "metrics.json")
    return metrics
