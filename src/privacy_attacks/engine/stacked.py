"""Several reconstruction engines fitted as one: the points of a sweep over λ, init, loss and seed in one batch.

The engines (:class:`~privacy_attacks.engine.module.ReconstructionModule`, one per sweep point, M in all) keep
everything of their own: images, init, priors with their weights and random generators, best iterates. What they share
is the frozen network: each step runs it once over every engine's transformed images (Σ_m R·N images:
``objective.network``), then each engine's ``objective.head`` and penalties score its own slice, and one optimiser steps
every engine's images. Adam and SGD act element by element and every image's loss depends on its own pixels only, so
each engine ends where it would have ended alone (up to the order of floating-point sums in the batched network); on a
GPU the M small batches become one large one.

Usage::

    modules = [build_module(cfg_m, target.net, labels) for cfg_m in sweep_points]
    fit_stacked(modules, cfg.trainer)            # then modules[m].reconstructions() as after fit_reconstruction

Engines can be stacked when :func:`stack_refusal` returns None: objectives that are ``head(network(images))`` with one
``stack_key`` (the same network: :class:`~privacy_attacks.attacks.inversion.objectives.ClassInversion`'s target,
:class:`~privacy_attacks.attacks.feature_inversion.matching.FeatureMatching`'s model and layer), no trainable parameter
of their own, one number of steps, and one optimiser that is not L-BFGS (whose line search couples every image).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import nn

from privacy_attacks.engine.module import ReconstructionModule
from privacy_attacks.harness import build_trainer, logs_step

# The engine settings every stacked engine must share (their hparams).
SHARED_SETTINGS = ("steps", "signed_gradients", "clamp_each_step")


def _factory_key(factory: Any) -> Any:
    """A comparable form of an optimiser or scheduler factory (a ``functools.partial``)."""
    if isinstance(factory, partial):
        return factory.func, factory.args, tuple(sorted(factory.keywords.items()))
    return factory


def stack_refusal(modules: Sequence[ReconstructionModule]) -> str | None:
    """Why ``modules`` cannot be fitted as one (a sentence), or None when they can."""
    if len(modules) < 2:
        return "a single engine"
    first = modules[0]
    for module in modules:
        objective = module.objective
        if not all(callable(getattr(objective, name, None)) for name in ("network", "head")):
            return f"{type(objective).__name__} is not head(network(images))"
        if getattr(objective, "stack_key", None) != getattr(first.objective, "stack_key", None):
            return "the engines invert different networks"
        if any(p.requires_grad for p in objective.parameters()):
            return f"{type(objective).__name__} trains parameters of its own"
        differ = [k for k in SHARED_SETTINGS if module.hparams[k] != first.hparams[k]]
        if differ:
            return f"the engines differ in {', '.join(differ)}"
        if _factory_key(module.optimizer_factory) != _factory_key(first.optimizer_factory):
            return "the engines use different optimisers"
        if _factory_key(module.scheduler_factory) != _factory_key(first.scheduler_factory):
            return "the engines use different schedulers"
    optimizer = _factory_key(first.optimizer_factory)
    if (optimizer[0] if isinstance(optimizer, tuple) else optimizer) is torch.optim.LBFGS:
        return "L-BFGS's line search couples every image of the batch"
    return None


class StackedReconstruction(L.LightningModule):
    """M engines (see the module docstring) fitted together, one shared network pass per step.

    ``history[m]`` holds engine m's logged values ``{step: {"<prefix>/loss": ..., "<prefix>/<prior>": ...}}`` every
    ``log_every`` steps, as engine m would have logged them alone (:meth:`ReconstructionModule.training_step`).
    """

    def __init__(self, modules: Sequence[ReconstructionModule], log_every: int = 1):
        super().__init__()
        reason = stack_refusal(modules)
        if reason is not None:
            raise ValueError(f"These engines cannot be fitted as one: {reason}.")
        self.automatic_optimization = False
        self.members = nn.ModuleList(modules)
        self.log_every = int(log_every)
        self.history: list[dict[int, dict[str, float]]] = [{} for _ in modules]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        record = logs_step(batch_idx, self.log_every, self.members[0].hparams.steps)
        images = [member.current_images() for member in self.members]
        transformed = [member.transformed(x) for member, x in zip(self.members, images)]
        outputs = self.members[0].objective.network(torch.cat(transformed)).split([len(x) for x in transformed])
        total = 0.0
        for index, (member, x, output) in enumerate(zip(self.members, images, outputs)):
            member._current = x.detach()
            losses, parts = member.penalised(x, member.objective.head(output), with_parts=record)
            member.track_best(losses.detach())
            if record:
                prefix = member.hparams.log_prefix
                values = {**parts, "loss": losses.detach().mean()}
                self.history[index][batch_idx] = {f"{prefix}/{k}": float(v) for k, v in values.items()}
            total = total + losses.sum()
        trainable = [p for member in self.members for p in member._trainable]
        self.manual_backward(total, inputs=trainable)
        if self.members[0].hparams.signed_gradients:
            for parameter in trainable:
                parameter.grad.sign_()
        optimizer.step()
        for member in self.members:
            member.after_step(batch_idx)
        if self.members[0].scheduler_factory is not None:
            self.lr_schedulers().step()

    def on_train_end(self) -> None:
        with torch.no_grad():  # the last iterate is a candidate too
            for member in self.members:
                member.track_best(member(with_parts=False)[0])

    def configure_optimizers(self):
        first = self.members[0]
        for member in self.members:
            member._trainable_cache = None  # the parameters as they are now (moved to the device)
        # One optimiser over every engine's images: each tensor keeps its own state, as in a fit of its own.
        optimizer = first.optimizer_factory(params=[p for member in self.members for p in member._trainable])
        if first.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": first.scheduler_factory(optimizer=optimizer)}}


def fit_stacked(
    modules: Sequence[ReconstructionModule], trainer: Mapping[str, Any], log_every: int = 1, **overrides: Any
) -> StackedReconstruction:
    """Fit ``modules`` as one (:class:`StackedReconstruction`, ValueError when :func:`stack_refusal` says why not)
    for their shared number of steps with a Trainer built from ``trainer`` (``cfg.trainer``), without a logger (each
    engine's curves are in ``history``). Returns the stacked module; the engines hold their reconstructions."""
    stacked = StackedReconstruction(modules, log_every)
    fitter = build_trainer(trainer, **{"max_epochs": 1, "logger": False, "limit_val_batches": 0, **overrides})
    with warnings.catch_warnings():  # the frozen networks inside the objectives are in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        fitter.fit(stacked, train_dataloaders=range(modules[0].hparams.steps))
    return stacked
