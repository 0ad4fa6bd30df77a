"""Provision trained, frozen classifiers for attacks, cached by their config.

A checkpoint is keyed by the recipe (``conf/model/*.yaml``, resolved), the data split and the
recipe's seed: a target trained on 1,000 members gets its own file beside the default one.
A missing checkpoint is trained once, under a file lock, even when several multirun jobs
ask for it at the same moment (:mod:`privacy_attacks.cache`). A training interrupted goes on, when asked for
again, from the state it saved after an epoch (:mod:`privacy_attacks.callbacks.partial_fit`).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from privacy_attacks import cache
from privacy_attacks.callbacks.partial_fit import PartialFitCheckpoint, resumable_partial_fit
from privacy_attacks.data.identity import data_identity
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import CheckpointError
from privacy_attacks.harness import run_device
from privacy_attacks.models import NETWORK_MODULES
from privacy_attacks.training import fit_classifier, validate_recipe

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1
# How often (seconds, at most once an epoch) a classifier being trained for the cache saves the state an interrupted
# fit goes on from (:class:`~privacy_attacks.callbacks.partial_fit.PartialFitCheckpoint`).
PARTIAL_FIT_EVERY_S = 60.0
# Recipe keys added after targets were first cached. At these values a recipe trains the same weights as without
# them, so they stay out of the key and a cached target keeps its file.
NEUTRAL_RECIPE_KEYS: dict[str, Any] = {
    "label_smoothing": 0.0,
    "early_stopping_patience": None,
    "ema_decay": None,
    "privacy": None,
}

# Network keys added when the models learnt other data's shapes: at the network class's own default (MNIST's shape
# and statistics for LeNet5 and the judges) they build the same network as without them, so they stay out of the key.
NEUTRAL_NET_KEYS = ("image_shape", "mean", "std")
# Keys a network gained after its models were first cached: at the factory's own default they build the network built
# without them, so they stay out of the key too (torchvision's classifiers: ``norm``, batch norm by default).
ADDED_NET_KEYS: dict[str, tuple[str, ...]] = {"privacy_attacks.models.torchvision_classifier": ("norm",)}


@dataclass
class Target:
    """A trained classifier, frozen: ``net`` is in eval mode with ``requires_grad=False``.

    ``spec`` is what the checkpoint is keyed by (recipe, data split, seed); ``metrics`` are the
    classifier's own train/val/test metrics from when it was trained.
    """

    net: nn.Module
    checkpoint: Path
    spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    recorded: dict[str, Any] = field(default_factory=dict)


# Trainer settings that change trained weights, at the values every cached classifier was trained with (deterministic
# per device type: trainer=cpu sets true, trainer=gpu false). Other values enter the key.
NEUTRAL_TRAINER_KEYS: dict[str, Any] = {
    "precision": ("32-true", "32", 32),
    "accumulate_grad_batches": (1,),
    "gradient_clip_val": (None, 0, 0.0),
    "gradient_clip_algorithm": (None, "norm"),
}
NEUTRAL_DETERMINISTIC = {"cpu": True, "cuda": False}


def trainer_spec(trainer: DictConfig | dict[str, Any] | None, device: str = "cpu") -> dict[str, Any]:
    """The trainer settings of ``trainer`` that change trained weights and differ from :data:`NEUTRAL_TRAINER_KEYS`
    (precision, determinism, gradient accumulation and clipping); {} for the settings of ``conf/trainer``."""
    if trainer is None:
        return {}
    spec = {
        key: trainer[key]
        for key, neutral in NEUTRAL_TRAINER_KEYS.items()
        if trainer.get(key, neutral[0]) not in neutral
    }
    deterministic = trainer.get("deterministic", NEUTRAL_DETERMINISTIC.get(device))
    if deterministic != NEUTRAL_DETERMINISTIC.get(device):
        spec["deterministic"] = deterministic
    return spec


def recipe_spec(recipe: DictConfig) -> dict[str, Any]:
    """The resolved recipe as it enters a cached model's key: without the recipe keys of :data:`NEUTRAL_RECIPE_KEYS`
    at their neutral values, nor the network keys of :data:`NEUTRAL_NET_KEYS` at the network class's own default (a
    LeNet5 built for MNIST's shape and statistics is the LeNet5 built without them)."""
    resolved = OmegaConf.to_container(recipe, resolve=True)
    spec = {k: v for k, v in resolved.items() if not (k in NEUTRAL_RECIPE_KEYS and v == NEUTRAL_RECIPE_KEYS[k])}
    return without_neutral_net_keys(spec)


def without_neutral_net_keys(recipe: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe without the network keys of :data:`NEUTRAL_NET_KEYS` at the network class's own default, and
    with the digest of the network's source file when it is a researcher's own code (``net.code``): what every cache
    key over a recipe (targets, shadow models) names of its network."""
    net = recipe.get("net")
    if not (isinstance(net, dict) and isinstance(net.get("_target_"), str)):
        return recipe
    defaults = _net_defaults(net["_target_"])
    neutral = (*NEUTRAL_NET_KEYS, *ADDED_NET_KEYS.get(net["_target_"], ()))
    kept = {
        k: v
        for k, v in net.items()
        if not (k in neutral and k in defaults and _as_floats(v) == _as_floats(defaults[k]))
    }
    code = _net_code(net["_target_"])
    if code is not None:  # a researcher's own network: its source file is part of the key
        kept["code"] = code
    return {**recipe, "net": kept}


def _net_code(target: str) -> str | None:
    """:func:`~privacy_attacks.cache.code_digest` of the network class (or factory) ``target`` when it is a
    researcher's own code, inside the package or not; None for the framework's networks
    (:data:`privacy_attacks.models.NETWORK_MODULES`, keyed by their settings only) and torch's, and when it cannot be
    imported (building it will say why)."""
    try:
        obj = get_object(target)
    except (ImportError, AttributeError, ValueError):
        return None
    module = getattr(inspect.getmodule(obj), "__name__", "")
    if module in NETWORK_MODULES or module.split(".")[0] in ("torch", "torchvision"):
        return None
    return cache.code_digest(obj)


def _net_defaults(target: str) -> dict[str, Any]:
    """The keyword defaults of the network class (or factory) ``target`` ({} when it cannot be imported)."""
    try:
        signature = inspect.signature(get_object(target))
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _as_floats(value: Any) -> Any:
    """A number or a sequence of numbers as a tuple of floats (so [0.1307], (0.1307,) and 0.1307 compare equal)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    return value


def checkpoint_spec(
    recipe: DictConfig, data: DictConfig, device: str = "cpu", trainer: DictConfig | None = None
) -> dict[str, Any]:
    """Everything that determines a trained classifier's weights, as plain data (without the recipe keys of
    :data:`NEUTRAL_RECIPE_KEYS` at their neutral values).

    ``device`` is the type of the device it trains on (``cpu``, ``cuda``): the same recipe and seed give other
    weights on a GPU (other kernels, other rounding), so a GPU-trained classifier is cached apart from the CPU one,
    and on the CPU the thread count changes them too (:func:`~privacy_attacks.cache.device_entry`).
    The data enters as :func:`~privacy_attacks.data.identity.data_identity` (nothing for MNIST's own files, the digest
    of other files in MNIST's place, the name and digest of any other dataset), the batch order unless it is
    ``consecutive``, and the ``trainer`` settings that change weights (:func:`trainer_spec`) unless they are the
    project's: so the CPU, MNIST, consecutive-order checkpoints made before these entries existed keep their keys,
    and anything else is cached apart.
    """
    spec = {
        "recipe": recipe_spec(recipe),
        "split": {"val_size": int(data.val_size), "split_seed": int(data.split_seed)},
    }
    batch_order = data.get("batch_order", "consecutive")
    if batch_order != "consecutive":
        spec["split"]["batch_order"] = batch_order
    identity = data_identity(data)
    if identity is not None:
        spec["data"] = identity
    spec.update(cache.device_entry(device))
    trained_with = trainer_spec(trainer, device)
    if trained_with:
        spec["trainer"] = trained_with
    return spec


def checkpoint_path(
    recipe: DictConfig,
    data: DictConfig,
    cache_dir: str | Path,
    name: str = "target",
    device: str = "cpu",
    trainer: DictConfig | None = None,
) -> Path:
    """``<cache_dir>/<name>-<12 hex digits of the spec's hash>.pt`` (:func:`privacy_attacks.cache.cache_path`)."""
    return cache.cache_path(cache_dir, name, checkpoint_spec(recipe, data, device, trainer))


def save_checkpoint(
    path: Path,
    net: nn.Module,
    spec: dict[str, Any],
    metrics: dict[str, float],
    recorded: dict[str, Any] | None = None,
) -> None:
    """Write a target checkpoint atomically (a half-written file is never seen under ``path``); ``recorded``: what
    a recorder observed while it trained (saved only when given)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    saved = {"format": CHECKPOINT_FORMAT, "spec": spec, "state_dict": state, "metrics": metrics}
    if recorded is not None:
        saved["recorded"] = recorded
    cache.save(path, saved)


def load_checkpoint(path: Path, recipe: DictConfig, spec: dict[str, Any]) -> Target:
    """Load and freeze a cached classifier; :class:`CheckpointError` naming the file if it is unusable."""
    saved = cache.read(path)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT or "state_dict" not in saved:
        raise cache.unusable(path, "is not a privacy_attacks target checkpoint")
    if saved.get("spec") != spec:
        raise cache.unusable(path, "was trained with a different config than the one asked for")
    net: nn.Module = instantiate(recipe.net)
    try:
        net.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise cache.unusable(path, f"does not fit the network {recipe.net._target_}") from error
    net.eval().requires_grad_(False)
    metrics, recorded = dict(saved.get("metrics", {})), dict(saved.get("recorded", {}))
    return Target(net=net, checkpoint=path, spec=spec, metrics=metrics, recorded=recorded)


def provision_classifier(
    recipe: DictConfig,
    data: DictConfig,
    trainer: DictConfig,
    cache_dir: str | Path,
    name: str = "target",
    extra_train: tuple[Tensor, Tensor] | None = None,
    recorder: L.Callback | None = None,
) -> Target:
    """Return the trained, frozen classifier of ``recipe``, training and caching it on first use (going on from the
    state an interrupted training saved, at most every :data:`PARTIAL_FIT_EVERY_S` seconds, to the same weights).

    Args:
        recipe: a classifier recipe (``conf/model/*.yaml``), including its ``seed``.
        data: the data config (``conf/data/*.yaml``); its split is part of the key.
        trainer: the trainer config used if it has to be trained.
        cache_dir: folder of cached checkpoints.
        name: file-name prefix (``target``, ``evaluator``, ``shadow``...).
        extra_train: (K, C, H, W) images and (K,) labels trained on beside the recipe's members (the canaries
            of the one-run audit); their content is part of the key.
        recorder: a callback that takes part in the training and observes it (the white-box audit's Dirac
            canaries, :class:`~privacy_attacks.attacks.audit.dirac.DiracCanaries`): its ``spec`` joins the key,
            its ``record()`` is cached with the weights, as the target's ``recorded``.
    """
    validate_recipe(recipe, name, data)
    device = run_device(trainer).type
    spec = checkpoint_spec(recipe, data, device, trainer)
    if extra_train is not None:
        images, labels = extra_train
        spec["extra_train"] = {
            "images": cache.tensor_digest(images),
            "labels": cache.tensor_digest(labels),
            "count": len(labels),
        }
    if recorder is not None:
        spec["recorder"] = recorder.spec
    path = cache.cache_path(cache_dir, name, spec)

    def train(path: Path) -> Target:
        partial = cache.partial_path(path)
        resume = resumable_partial_fit(partial, spec)
        if resume is None:
            log.info("No cached %s at %s: training it once (recipe seed %s).", name, path, recipe.seed)

        def fit(ckpt_path: str | None) -> tuple[L.LightningModule, dict[str, float]]:
            saver = PartialFitCheckpoint(partial, every_s=PARTIAL_FIT_EVERY_S)
            callbacks = [saver] if recorder is None else [saver, recorder]
            return fit_classifier(
                recipe,
                data,
                trainer,
                recipe.seed,
                extra_train=extra_train,
                callbacks=callbacks,
                ckpt_path=ckpt_path,
                spec=spec,
                enable_checkpointing=True,  # the saver is the fit's one Checkpoint: Lightning adds no other
            )

        try:
            system, metrics = fit(resume)
        except CheckpointError as error:  # the interrupted fit's state cannot be resumed after all: start again
            if resume is None:
                raise
            log.warning("%s: training %s from the start.", error, name)
            partial.unlink(missing_ok=True)
            system, metrics = fit(None)
        save_checkpoint(path, system.net, spec, metrics, None if recorder is None else recorder.record())
        log.info("Cached %s at %s (test/acc %.4f).", name, path, metrics["test/acc"])
        return load_checkpoint(path, recipe, spec)

    return cache.provision(path, create=train, load=lambda path: load_checkpoint(path, recipe, spec))[0]


def provision_target(cfg: DictConfig) -> Target:
    """The attack config's target (``cfg.target``, with a training defence of ``cfg.defense`` in its recipe:
    :func:`privacy_attacks.defenses.recipe_with_defense`), trained and cached under ``cfg.paths.cache_dir``, on the
    run's device (:func:`privacy_attacks.harness.run_device`)."""
    recipe = recipe_with_defense(cfg, "target")
    target = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "target")
    target.net.to(run_device(cfg.trainer))
    return target
