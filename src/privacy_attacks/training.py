"""Fit a classifier recipe on a dataset: the one training path shared by ``train.py`` and target provisioning.

A *recipe* is the config of a classifier (``conf/model/*.yaml``): the network (built for the data's image shape and
classes, which the recipe reads from the data config: ``${data.image_shape}``, ``${data.num_classes}``), the optimiser,
the scheduler, ``max_epochs``, ``batch_size`` and ``members`` (train on a subset); optionally the
regularisers ``label_smoothing`` and ``early_stopping_patience``, ``ema_decay`` (evaluate an exponential moving
average of the weights), and ``privacy``, a training defence's node
(DP-SGD, set from ``defense=dpsgd`` by :func:`privacy_attacks.defenses.recipe_with_defense`).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from privacy_attacks.cache import library_versions
from privacy_attacks.callbacks.epoch_log import EpochLog
from privacy_attacks.data import ImageDataModule
from privacy_attacks.data.identity import data_name, data_shape, data_source
from privacy_attacks.data.module import mean_and_std
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.errors import CheckpointError, ConfigError, UserError, require_int, require_positive
from privacy_attacks.harness import build_node, build_trainer, instantiate_checked
from privacy_attacks.systems import ImageClassifier


def validate_recipe(recipe: DictConfig, key: str = "model", data: DictConfig | None = None) -> None:
    """Stop before any work when a recipe's seed, epochs, batch size, learning rate or members are off (whole numbers
    where they count); with ``data`` (the data config) also when its window of the training pool does not fit the
    data's, its network cannot take the data's images, gives another number of outputs than the data has classes, or
    cannot be trained under its training defence (DP-SGD and batch norm)."""
    if "seed" in recipe:
        require_int(recipe.seed, f"{key}.seed", minimum=None)
    require_int(recipe.max_epochs, f"{key}.max_epochs")
    require_int(recipe.batch_size, f"{key}.batch_size")
    require_positive(recipe.optimizer.lr, f"{key}.optimizer.lr")
    require_int(recipe.get("members"), f"{key}.members", null_means="the whole training pool")
    require_int(recipe.get("member_offset"), f"{key}.member_offset", minimum=0, null_means="0")
    smoothing = recipe.get("label_smoothing", 0.0)
    require_positive(smoothing, f"{key}.label_smoothing", allow_zero=True)
    if smoothing >= 1:
        raise ConfigError(f"{key}.label_smoothing={smoothing!r} is not allowed: it must be a number in [0, 1).")
    require_int(recipe.get("early_stopping_patience"), f"{key}.early_stopping_patience", null_means="no early stopping")
    decay = recipe.get("ema_decay")
    if decay is not None and not (isinstance(decay, (int, float)) and 0 < decay < 1):
        raise ConfigError(
            f"{key}.ema_decay={decay!r} is not allowed: it must be a number in (0, 1), or null (no moving average)."
        )
    privacy = build_privacy(recipe)  # a bad DP setting stops here
    for part in ("optimizer", "scheduler"):  # partials: nothing is built yet, but a misspelt _target_ stops here
        if recipe.get(part) is not None:
            build_part(recipe, part, key)
    if data is not None:
        check_members(recipe, key, data)
        check_network(recipe, key, data, privacy)


def check_members(recipe: DictConfig, key: str, data: DictConfig) -> None:
    """:class:`ConfigError` naming ``<key>.members`` or ``<key>.member_offset`` when the recipe's window of the
    training pool does not fit the data's (the training set minus ``data.val_size``; read once where the source
    cannot say its size without reading)."""
    source = data_source(data)
    total = source.train_size if source.train_size is not None else len(source.load().train_labels)
    offset = recipe.get("member_offset", 0) or 0
    split_indices(data.val_size, data.split_seed, recipe.get("members"), total, offset, key=key)


def build_net(recipe: DictConfig, key: str = "model") -> nn.Module:
    """``recipe.net`` instantiated; a bad setting (the network's own check, an unknown argument) as one line."""
    return build_part(recipe, "net", key)


def build_part(recipe: DictConfig, part: str, key: str = "model") -> Any:
    """``recipe.<part>`` (``net``, ``optimizer``, ``scheduler``) instantiated; a bad setting (its own check, an unknown
    argument, a ``_target_`` that does not exist) as one line naming ``<key>.<part>``."""
    return build_node(recipe[part], f"{key}.{part}")


def takes_norm(net_node: Any) -> bool:
    """Whether a network's config node chooses its normalisation (a ``norm`` key, or a ``norm`` argument of its
    ``_target_``): ``<net>.norm=group`` then builds it with group norm."""
    return takes_argument(net_node, "norm")


def takes_argument(net_node: Any, name: str) -> bool:
    """Whether a network's config node has the key ``name`` or its ``_target_`` an argument of that name (False
    where the target cannot be read: no hint rather than a wrong one)."""
    if name in net_node:
        return True
    try:
        target = get_method(net_node["_target_"]) if "_target_" in net_node else None
        return target is not None and name in inspect.signature(target).parameters
    except Exception:  # noqa: BLE001 - a target that cannot be read: no hint rather than a wrong one
        return False


def check_network(
    recipe: DictConfig, key: str, data: DictConfig, privacy: Any = None, net_key: str | None = None
) -> None:
    """Build ``recipe.net`` (the global RNG left as it was) and pass a zero batch of the data's shape through it:
    :class:`ConfigError` in one line when it cannot take the images, when its outputs are not the data's classes, or
    when ``privacy`` (DP-SGD) cannot train it (its ``check_network``). Messages name the network as ``net_key``
    (default ``<key>.net``), the key a user sets."""
    net_key = net_key or f"{key}.net"
    image_shape, num_classes = data_shape(data)
    name = data_name(data)
    if num_classes is None:
        raise ConfigError(f"data={name} declares no num_classes: add num_classes: <count> to its config.")
    with torch.random.fork_rng(devices=[]):
        net = build_net(recipe, key)
    shown = OmegaConf.select(recipe, "net.name", default=None) or type(net).__name__  # torchvision's by its name
    label = f"{net_key} ({shown})"
    if image_shape is not None:  # the data's own statistics first: a wrong mean is not the model's fault
        mean_and_std(data.get("mean"), data.get("std"), image_shape[0])
        was_training = net.training
        try:
            with torch.no_grad():
                outputs = net.eval()(torch.zeros(2, *image_shape))
        except Exception as error:  # noqa: BLE001 - whatever the layers say, the cause is the shape
            reason = (str(error).splitlines() or [""])[0]
            raise ConfigError(
                f"{label} cannot take data={name}'s images of shape {list(image_shape)} ({reason}): choose a model "
                "built for the data's shape (model=cnn, model=resnet, model=mlp), or build yours from "
                "${data.image_shape}."
            ) from None
        net.train(was_training)
        if not isinstance(outputs, Tensor):
            raise ConfigError(
                f"{label} returns a {type(outputs).__name__}, not a tensor: its forward must return the logits, one "
                f"tensor of shape (N, {num_classes}) (return any other outputs from another method)."
            )
        if tuple(outputs.shape) != (2, num_classes):
            got = tuple(outputs.shape[1:])
            if outputs.ndim != 2 or outputs.shape[0] != 2:  # not one vector per image: a forward that does not classify
                raise ConfigError(
                    f"{label} gives outputs of shape {got} per image: a classifier's forward returns one logit per "
                    f"class, a tensor of shape (N, {num_classes}) for data={name}'s {num_classes} classes."
                )
            fix = (
                f"set {net_key}.num_classes={num_classes} (or '${{data.num_classes}}')"
                if takes_argument(recipe.net, "num_classes")
                else f"give {shown} a num_classes argument (its config: num_classes: ${{data.num_classes}}), or choose "
                "a network built for the data's classes"
            )
            raise ConfigError(
                f"{label} gives outputs of shape {got} per image but data={name} has {num_classes} classes: {fix}."
            )
    if not any(parameter.requires_grad for parameter in net.parameters()):
        raise ConfigError(
            f"{label} has no trainable parameters: keep its layers as attributes or in nn.ModuleList / "
            "nn.Sequential (a plain Python list hides them from torch)."
        )
    if privacy is not None and hasattr(privacy, "check_network"):
        privacy.check_network(net, net_key, shown, takes_norm=takes_norm(recipe.net))


def build_privacy(recipe: DictConfig) -> Any:
    """The recipe's training defence (``recipe.privacy``, e.g. :class:`privacy_attacks.defenses.DPSGD`), or None."""
    if recipe.get("privacy") is None:
        return None
    return instantiate_checked(recipe.privacy)  # a bad setting: the defence's own message


def build_datamodule(
    data: DictConfig, recipe: DictConfig, extra_train: tuple[Tensor, Tensor] | None = None, seed: int | None = None
) -> ImageDataModule:
    """The data module of ``data`` with the recipe's batch size and member subset (Poisson batches under DP-SGD),
    ``extra_train`` (images (K, C, H, W), labels (K,)) added to the members, and batch orders that follow
    ``seed``."""
    privacy = build_privacy(recipe)
    extra_images, extra_labels = extra_train if extra_train is not None else (None, None)
    try:
        return instantiate(
            data,
            batch_size=recipe.batch_size,
            members=recipe.get("members"),
            member_offset=recipe.get("member_offset", 0),
            poisson_sampling=bool(getattr(privacy, "poisson_sampling", False)),
            extra_images=extra_images,
            extra_labels=extra_labels,
            seed=seed,
        )
    except InstantiationException as error:  # a bad split size or source setting: show its own message
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def build_classifier(recipe: DictConfig, num_classes: int = 10) -> ImageClassifier:
    """The LightningModule of a recipe for data of ``num_classes`` classes: ``ImageClassifier(net, optimizer,
    scheduler, num_classes, label_smoothing, privacy)``."""
    return ImageClassifier(
        net=build_net(recipe),
        optimizer=build_part(recipe, "optimizer"),
        scheduler=build_part(recipe, "scheduler") if recipe.get("scheduler") else None,
        num_classes=num_classes,
        label_smoothing=float(recipe.get("label_smoothing", 0.0)),
        privacy=build_privacy(recipe),
    )


def network_name(net: DictConfig) -> str:
    """The class a network node builds, for log lines: ``LeNet5`` of ``privacy_attacks.models.LeNet5``."""
    return str(net.get("_target_", "network")).rsplit(".", 1)[-1]


def recipe_callbacks(recipe: DictConfig) -> list[L.Callback]:
    """The callbacks a recipe asks for: early stopping on ``val/acc`` after ``early_stopping_patience`` epochs
    without a new best; with ``ema_decay``, Lightning's EMA of the weights (updated after every optimiser step,
    swapped in for validation and kept at the end of the fit: a post-processing of the iterates, so it spends no
    privacy under DP-SGD; De et al. 2022, "Unlocking high-accuracy differentially private image classification")."""
    callbacks: list[L.Callback] = []
    patience = recipe.get("early_stopping_patience")
    if patience is not None:
        callbacks.append(EarlyStopping(monitor="val/acc", mode="max", patience=int(patience)))
    if recipe.get("ema_decay") is not None:
        callbacks.append(EMAWeightAveraging(decay=float(recipe.ema_decay)))
    return callbacks


def fit_classifier(
    recipe: DictConfig,
    data: DictConfig,
    trainer: DictConfig,
    seed: int,
    *,
    logger: Any = False,
    callbacks: list[L.Callback] | None = None,
    ckpt_path: str | None = None,
    extra_train: tuple[Tensor, Tensor] | None = None,
    test: bool = True,
    spec: dict[str, Any] | None = None,
    **trainer_overrides: Any,
) -> tuple[ImageClassifier, dict[str, float]]:
    """Train ``recipe`` from ``seed``, test it on the official test set, return (system, metrics).

    ``metrics`` holds ``train/acc``, ``val/acc``, ``val/loss``, ``test/acc``, ``test/loss``
    and ``fit_time_s``; with ``recipe.privacy`` (DP-SGD) also ``privacy/epsilon`` (spent, by the accountant),
    ``privacy/delta``, ``privacy/noise_multiplier`` and ``privacy/sample_rate``. ``ckpt_path`` resumes an
    interrupted fit from a Lightning checkpoint. ``extra_train`` (images, labels) trains on more examples than the
    recipe's members (the one-run audit's canaries). ``test=False`` leaves the test set unread (tuning runs): no
    ``test/*`` metrics. ``spec`` (the run's :func:`~privacy_attacks.targets.checkpoint_spec`) goes into every
    Lightning checkpoint of the fit (:class:`RunStamp`), against which a resume is checked; ``fit_time_s`` of a
    resumed fit counts the interrupted run's seconds up to its checkpoint too.
    """
    validate_recipe(recipe, data=data)
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = build_datamodule(data, recipe, extra_train, seed)
    system = build_classifier(recipe, data_shape(data)[1])
    stamp = check_resumable(ckpt_path, system, int(recipe.max_epochs)) if ckpt_path else {}
    before_s = float(stamp.get("fit_seconds", 0.0))  # the interrupted run's, up to its checkpoint
    stamps = [RunStamp(spec, before_s)] if spec is not None else []
    fitter = build_trainer(
        trainer,
        quiet=False,
        max_epochs=recipe.max_epochs,
        logger=logger,
        callbacks=[*(callbacks or []), *recipe_callbacks(recipe), EpochLog(network_name(recipe.net)), *stamps],
        **trainer_overrides,
    )
    start = time.perf_counter()
    # A run's own checkpoint holds the recipe's optimiser as a pickled partial, which torch's weights-only loading
    # refuses; the user resumes their own run's file, so it is loaded in full.
    fitter.fit(system, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    fit_time = before_s + time.perf_counter() - start
    metrics = {k: float(v) for k, v in fitter.callback_metrics.items() if k.startswith(("train/", "val/"))}
    if test:
        tested = fitter.test(system, datamodule=datamodule, verbose=False)[0]
        metrics.update({k: float(v) for k, v in tested.items()})
    unlogged = {**(system.private.metrics() if system.private is not None else {}), "fit_time_s": fit_time}
    for run_logger in fitter.loggers:  # the run's table has a column for each metric: these too, after the last step
        written = {k: v for k, v in unlogged.items() if k not in fitter.logged_metrics}
        run_logger.log_metrics(written, fitter.global_step)
    metrics.update(unlogged)
    return system, metrics


STAMP_KEY = "privacy_attacks"  # the entry of a Lightning checkpoint that RunStamp writes


class RunStamp(L.Callback):
    """Writes into every Lightning checkpoint of a fit the run's ``spec`` (its
    :func:`~privacy_attacks.targets.checkpoint_spec`: what determines its weights), the fit's seconds so far
    (``seconds_before``, a resumed run's earlier ones, included) and the library versions it ran under
    (:func:`~privacy_attacks.cache.library_versions`), under :data:`STAMP_KEY`."""

    def __init__(self, spec: dict[str, Any], seconds_before: float = 0.0):
        self.spec, self.seconds_before, self.start = spec, seconds_before, time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        seconds = self.seconds_before + time.perf_counter() - self.start
        checkpoint[STAMP_KEY] = {"spec": self.spec, "fit_seconds": seconds, "versions": library_versions()}


def spec_differences(found: Any, expected: Any, key: str = "") -> list[str]:
    """The entries where two specs differ, dotted (``recipe.seed: 0 in the checkpoint, 1 here``), in order."""
    if isinstance(found, dict) and isinstance(expected, dict):
        return [
            line
            for name in [*expected, *(n for n in found if n not in expected)]
            for line in spec_differences(found.get(name), expected.get(name), f"{key}.{name}" if key else str(name))
        ]
    return [] if found == expected else [f"{key}: {found!r} in the checkpoint, {expected!r} here"]


def check_resumable(ckpt_path: str, system: L.LightningModule, max_epochs: int | None = None) -> dict[str, Any]:
    """Raise :class:`CheckpointError` (one line naming ``ckpt_path``) unless the file is a Lightning checkpoint whose
    weights fit ``system`` (the same names and shapes): resuming another recipe's run fails here, not in Lightning;
    and unless, with epochs left to ``max_epochs``, its learning rate is above 0 (a finished cosine schedule's is 0:
    going on would train nothing). Returns the checkpoint's :class:`RunStamp` entry (empty for a checkpoint without
    one)."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(
            f"ckpt_path={ckpt_path!r} is not a readable checkpoint ({type(error).__name__})."
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"ckpt_path={ckpt_path!r} is not a Lightning checkpoint of train.py (no state_dict).")
    expected = {name: tuple(value.shape) for name, value in system.state_dict().items()}
    found = {name: tuple(getattr(value, "shape", ())) for name, value in state.items()}
    if expected != found:
        differ = sorted(set(expected) ^ set(found)) or [n for n in expected if expected[n] != found[n]]
        raise CheckpointError(
            f"ckpt_path={ckpt_path!r} holds another network than this run's recipe (first difference: "
            f"{differ[0]}): resume with the interrupted run's own model and data settings."
        )
    epochs_done = int(checkpoint.get("epoch", -1)) + 1
    rates = [group.get("lr") for state in checkpoint.get("optimizer_states") or [] for group in state["param_groups"]]
    if max_epochs is not None and epochs_done < max_epochs and rates and all(rate == 0 for rate in rates):
        raise CheckpointError(
            f"ckpt_path={ckpt_path!r} is the end of its run's learning-rate schedule (learning rate 0 after "
            f"{epochs_done} epoch(s)): going on to max_epochs={max_epochs} would change no weight. To train for "
            f"{max_epochs} epochs, start a new run without ckpt_path."
        )
    return checkpoint.get(STAMP_KEY) or {}


def resume_differences(ckpt_path: str, spec: dict[str, Any]) -> list[str]:
    """Where the run that wrote the checkpoint ``ckpt_path`` differs from this run's ``spec`` in what determines the
    weights (:func:`spec_differences`; none for a checkpoint without a :class:`RunStamp` or one that cannot be read,
    which :func:`check_resumable` answers)."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - check_resumable names the problem
        return []
    stamp = checkpoint.get(STAMP_KEY) if isinstance(checkpoint, dict) else None
    return spec_differences(stamp["spec"], spec) if isinstance(stamp, dict) and "spec" in stamp else []
