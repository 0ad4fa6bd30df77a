"""The reconstruction engine: optimise images (not weights) against a pluggable objective.

Usage (an objective is any ``nn.Module`` with ``num_images`` and ``forward(images) -> (R·N,)``)::

    from functools import partial
    from privacy_attacks.engine import ReconstructionModule, fit_reconstruction
    from privacy_attacks.engine.priors import TotalVariation, Jitter
    from privacy_attacks.engine.inits import NoiseInit
    from privacy_attacks.attacks.inversion.objectives import ClassInversion, CrossEntropySimilarity
    objective = ClassInversion(target.net, labels=torch.arange(10), similarity=CrossEntropySimilarity())
    module = ReconstructionModule(objective, priors={"tv": TotalVariation(1e-2), "jitter": Jitter(1)},
                                  init=NoiseInit(), optimizer=partial(torch.optim.Adam, lr=0.1), steps=200, restarts=4)
    fit_reconstruction(module, cfg.trainer, logger=loggers)   # a Lightning Trainer built from cfg.trainer
    images, losses = module.reconstructions()                 # (N, C, H, W) in [0, 1], best restart and iterate

Contract of an objective (see :class:`ReconstructionModule`):

- ``num_images`` (int): N, the number of targets reconstructed; ``image_shape``: (C, H, W) of the images.
- ``forward(images)``: ``images`` (R·N, C, H, W), restarts stacked restart-major (image ``r·N + i``
  reconstructs target ``i``), already passed through the transform priors (jitter); returns the
  per-image loss (R·N,). An objective whose loss couples a batch (gradient matching) reshapes to
  (R, N, ...) itself and may return one loss per restart broadcast over its N images.
- Its own ``nn.Parameter`` s with ``requires_grad=True`` (e.g. DLG's dummy labels) are optimised
  together with the images; frozen networks inside it (no trainable parameter) are kept in eval mode
  and never accumulate gradients (``backward(inputs=...)``).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from privacy_attacks.engine.inits import NoiseInit
from privacy_attacks.engine.priors import Prior
from privacy_attacks.errors import ConfigError, UserError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_node, build_trainer, logs_step
from privacy_attacks.seeding import generator

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
# The config keys every reconstruction attack has (``conf/attack/_reconstruction_base.yaml``), logged as hparams.
ENGINE_KEYS = ("init", "optimizer", "lr", "steps", "restarts", "seed")
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


class ReconstructionModule(L.LightningModule):
    """Non-parametric LightningModule: the images are an ``nn.Parameter`` (R·N, C, H, W) in [0, 1] (or, with a
    ``parameterisation``, the codes it maps to images).

    Each step minimises, per image, ``objective(T(x)) + Σ_p weight_p · penalty_p(x)`` where T are the
    transform priors (jitter); the loss summed over images is back-propagated into the images and the
    objective's own trainable parameters only. After the step the projection priors (blur) are applied
    and the pixels are clamped to [0, 1]. The best iterate of every image (lowest loss) is kept, and
    :meth:`reconstructions` returns, for each of the N targets, the best of its R restarts.

    Args:
        objective: see the module docstring; ``num_images`` = N.
        priors: named priors (:mod:`.priors`); those with weight 0 are skipped.
        init: ``init(shape, generator) -> Tensor`` in [0, 1] (:mod:`.inits`).
        optimizer: partial optimiser called with the trainable parameters (Adam, SGD, or L-BFGS, which
            is stepped with a closure).
        steps: optimiser steps (one per training batch of :func:`fit_reconstruction`).
        restarts: R independent starts per target, optimised together in one batch.
        seed: the attack's seed; the initialisation, the priors' random draws (jitter) and the objective's own
            (those of an objective with a ``use_generator`` method: inversion's weight noise) take their own
            generators derived from it (:mod:`privacy_attacks.seeding`), so restarts differ and nothing
            depends on the global RNG state.
        signed_gradients: replace gradients by their sign before the step (Geiping et al. 2020).
        scheduler: optional partial LR scheduler, stepped after every step.
        log_prefix: stage of the logged names ``<log_prefix>/loss``, ``<log_prefix>/<prior>``.
        parameterisation: optional frozen module mapping codes (R·N, *latent_shape) to images (R·N, C, H, W) in
            [0, 1], with a ``latent_shape`` attribute (a generative prior:
            :class:`~privacy_attacks.attacks.inversion.gan.GeneratedImages`): the codes are optimised instead of
            the pixels, drawn N(0, 1) from the seed (``init`` unused) and passed through its ``project(codes)`` after
            each step if it has one (or taken from its ``initial_codes`` (R·N, *latent_shape) where it holds some); a
            parameterisation's own trainable parameters are optimised with the codes; projection priors (blur) and
            the clamp act on pixels and are skipped.
        clamp_each_step: clamp the pixels to [0, 1] after every step (default). False: leave the
            iterate where the optimiser put it (L-BFGS needs that: DLG/iDLG) and clamp only the
            kept reconstructions.
    """

    def __init__(
        self,
        objective: nn.Module,
        priors: Mapping[str, Prior] | None = None,
        init: Callable[[tuple[int, ...], torch.Generator], Tensor] | None = None,
        optimizer: OptimizerFactory = partial(torch.optim.Adam, lr=0.1),
        steps: int = 100,
        restarts: int = 1,
        seed: int = 0,
        signed_gradients: bool = False,
        scheduler: Callable[..., Any] | None = None,
        log_prefix: str = "recon",
        clamp_each_step: bool = True,
        parameterisation: nn.Module | None = None,
    ):
        super().__init__()
        ignored = ["objective", "priors", "init", "optimizer", "scheduler", "parameterisation"]
        self.save_hyperparameters(ignore=ignored, logger=False)
        self.automatic_optimization = False
        self.objective = objective
        self.priors = nn.ModuleDict({name: p for name, p in (priors or {}).items() if p is not None and p.active})
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_images = int(objective.num_images)
        shape = (restarts * self.num_images, *objective.image_shape)
        self.parameterisation = parameterisation
        if parameterisation is None:
            self.images = nn.Parameter((init or NoiseInit())(shape, generator(seed, "init")).float().clamp(0, 1))
        else:
            codes = getattr(parameterisation, "initial_codes", None)  # where a previous search left them
            if codes is None:
                codes = torch.randn((shape[0], *parameterisation.latent_shape), generator=generator(seed, "init"))
            device = next(iter(parameterisation.buffers()), codes).device
            self.latents = nn.Parameter(codes.to(device).clone())
        for name, prior in self.priors.items():
            prior.use_generator(generator(seed, "prior", name))
        if callable(getattr(objective, "use_generator", None)):  # an objective with draws of its own
            objective.use_generator(generator(seed, "objective"))
        self.register_buffer("best_loss", torch.full(shape[:1], float("inf")))
        with torch.no_grad():
            self.register_buffer("best_images", self.current_images().detach().clamp(0, 1).clone())
        self._penalties = [(n, p) for n, p in self.priors.items() if type(p).penalty is not Prior.penalty]
        self._transforms = [p for p in self.priors.values() if type(p).transform is not Prior.transform]
        self._projections = [p for p in self.priors.values() if type(p).project is not Prior.project]
        if parameterisation is not None and self._projections:
            log.warning(
                "The projection priors (%s) act on pixels: skipped under a generative prior.", self._projections
            )
        if restarts > 1 and not self._transforms and parameterisation is None:
            starts = self.images.detach().view(restarts, self.num_images, -1)
            if bool((starts == starts[:1]).all()):
                log.warning(
                    "The %d restarts start from the same images and no prior draws at random, so they will end "
                    "identical: use a random init, jitter, or restarts=1.",
                    restarts,
                )
        self._trainable_cache: list[nn.Parameter] | None = None

    def current_images(self) -> Tensor:
        """The current iterate (R·N, C, H, W): the pixels, or the parameterisation's images of the codes."""
        return self.images if self.parameterisation is None else self.parameterisation(self.latents)

    def forward(self, images: Tensor | None = None, with_parts: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-image loss (R·N,) of ``images`` (default: the current ones) and, if asked, its parts."""
        if images is None:
            images = self.current_images()
            self._current = images.detach()  # the iterate the losses are of (the best is tracked from it)
        return self.penalised(images, self.objective(self.transformed(images)), with_parts)

    def transformed(self, images: Tensor) -> Tensor:
        """``images`` (R·N, C, H, W) through the transform priors (jitter), as the objective sees them."""
        for prior in self._transforms:
            images = prior.transform(images)
        return images

    def penalised(self, images: Tensor, losses: Tensor, with_parts: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective's per-image ``losses`` (R·N,) of ``images`` plus the weighted penalty priors, and the parts."""
        parts = {"objective": losses.detach().mean()} if with_parts else {}
        for name, prior in self._penalties:
            penalty = prior.penalty(images)
            if penalty.shape != losses.shape:  # a scalar would broadcast to every image without a word
                raise UserError(
                    f"priors.{name} ({type(prior).__name__}) gave penalties of shape {tuple(penalty.shape)}: a prior's "
                    f"penalty(images) returns one value per image, ({len(images)},)."
                )
            losses = losses + prior.weight * penalty
            if with_parts:
                parts[name] = penalty.detach().mean()
        return losses, parts

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        trainable = self._trainable
        loggers = self.trainer.loggers
        log_now = bool(loggers) and logs_step(batch_idx, self.trainer.log_every_n_steps, self.hparams.steps)
        logged: dict[str, Tensor] = {}

        def closure() -> Tensor:
            optimizer.zero_grad()
            losses, parts = self(with_parts=log_now and not logged)
            if not logged:  # first evaluation of this step: the current (clamped) iterate
                self.track_best(losses.detach())
                logged.update(parts, loss=losses.detach().mean())
            total = losses.sum()
            self.manual_backward(total, inputs=trainable)
            if self.hparams.signed_gradients:
                for parameter in trainable:
                    parameter.grad.sign_()
            return total

        optimizer.step(closure=closure)
        self.after_step(batch_idx)
        if self.scheduler_factory is not None:
            self.lr_schedulers().step()
        if log_now:  # written at the step they were measured, the first and the last included
            prefix = self.hparams.log_prefix
            values = {f"{prefix}/{k}": float(v) for k, v in logged.items()}
            for logger in loggers:
                logger.log_metrics(values, step=batch_idx)

    def after_step(self, batch_idx: int) -> None:
        """After the optimiser step ``batch_idx``: the pixels' projections and clamp, or the codes' own projection."""
        if self.parameterisation is None:
            self._project(batch_idx)
        elif hasattr(self.parameterisation, "project"):  # e.g. codes kept in the prior's range
            with torch.no_grad():
                self.latents.data.copy_(self.parameterisation.project(self.latents.data))

    def _project(self, batch_idx: int) -> None:
        """The projection priors (blur) and the clamp to [0, 1], on the pixels after a step."""
        with torch.no_grad():
            images = self.images.data
            for prior in self._projections:
                images = prior.project(images, batch_idx)
            self.images.data.copy_(images.clamp_(0, 1) if self.hparams.clamp_each_step else images)

    def on_train_end(self) -> None:
        with torch.no_grad():  # the last iterate is a candidate too
            self.track_best(self(with_parts=False)[0])

    def configure_optimizers(self):
        self._trainable_cache = None  # the parameters as they are now (moved to the device)
        optimizer = self.optimizer_factory(params=self._trainable)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)}}

    def train(self, mode: bool = True) -> ReconstructionModule:
        """Lightning calls ``train()`` at fit start: frozen networks inside the objective stay in eval mode."""
        super().train(mode)
        for part in (self.objective, self.parameterisation):
            for module in _frozen_submodules(part) if part is not None else ():
                module.eval()
        return self

    def reconstructions(self) -> tuple[Tensor, Tensor]:
        """For each of the N targets, the best iterate of its best restart: (images (N, C, H, W), losses (N,))."""
        restarts = self.hparams.restarts
        losses = self.best_loss.view(restarts, self.num_images)
        best = losses.argmin(dim=0)
        images = self.best_images.view(restarts, self.num_images, *self.best_images.shape[1:])
        index = torch.arange(self.num_images, device=best.device)
        return images[best, index].detach().clone(), losses[best, index].detach().clone()

    def all_reconstructions(self) -> tuple[Tensor, Tensor]:
        """Best iterate of every restart: (images (R, N, C, H, W), losses (R, N))."""
        restarts = self.hparams.restarts
        shape = (restarts, self.num_images)
        return self.best_images.view(*shape, *self.best_images.shape[1:]).clone(), self.best_loss.view(shape).clone()

    @property
    def _trainable(self) -> list[nn.Parameter]:
        """The images and the objective's trainable parameters (the frozen network's are left out)."""
        if self._trainable_cache is None:
            self._trainable_cache = [p for p in self.parameters() if p.requires_grad]
        return self._trainable_cache

    def track_best(self, losses: Tensor) -> None:
        """Keep, per image, the current iterate where ``losses`` (R·N,) improve on the best so far."""
        improved = losses < self.best_loss
        self.best_loss = torch.where(improved, losses, self.best_loss)
        self.best_images[improved] = self._current[improved].clamp(0, 1)


def _frozen_submodules(module: nn.Module) -> Iterator[nn.Module]:
    """The outermost submodules that hold parameters, none of them trainable."""
    params = list(module.parameters(recurse=True))
    if params and not any(p.requires_grad for p in params):
        yield module
        return
    for child in module.children():
        yield from _frozen_submodules(child)


def fit_reconstruction(
    module: ReconstructionModule, trainer: DictConfig | Mapping[str, Any], logger: Any = False, **overrides: Any
) -> ReconstructionModule:
    """Run ``module.hparams.steps`` steps with a Lightning ``Trainer`` built from ``trainer`` (``cfg.trainer``).

    ``logger``: a Lightning logger, a list of them, or False. ``overrides`` go to the Trainer
    (e.g. ``enable_progress_bar=False``). Returns ``module`` (its :meth:`~ReconstructionModule.reconstructions`).
    """
    fitter = build_trainer(trainer, **{"max_epochs": 1, "logger": logger or False, "limit_val_batches": 0, **overrides})
    with warnings.catch_warnings():  # the frozen networks inside the objective are in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        fitter.fit(module, train_dataloaders=range(module.hparams.steps))
    return module


def validate_engine_settings(steps: Any, restarts: Any, lr: Any | None = None) -> None:
    """ConfigError unless ``steps`` and ``restarts`` are positive integers (and ``lr`` > 0)."""
    require_int(steps, "steps")
    require_int(restarts, "restarts")
    if lr is not None:
        require_positive(lr, "lr")


def prior_settings(cfg: Any) -> dict[str, str]:
    """Each setting of each prior node of ``cfg.priors``: ``{"priors.<name>.<field>": key}``, where ``key`` is the
    config key it reads (``tv_lambda`` for ``weight: ${tv_lambda}``) or, for a literal, its own path."""
    settings = {}
    for name, node in cfg.priors.items():
        for field in node:
            if field.startswith("_"):
                continue
            path = f"priors.{name}.{field}"
            match = _INTERPOLATION.match(str(node._get_node(field)._value()))
            settings[path] = match.group(1) if match else path
    return settings


def penalty_weights(cfg: Any) -> dict[str, str]:
    """``{prior name: the key its weight reads}`` for the penalty priors of ``cfg.priors`` (those that add
    ``weight · penalty`` to the loss, a new one included), not the transforms and projections, whose "weight" is a
    size (jitter's pixels, blur's sigma)."""
    settings = prior_settings(cfg)
    return {
        name: settings[f"priors.{name}.weight"]
        for name, node in cfg.priors.items()
        if "weight" in node and getattr(get_class(node._target_), "penalty", Prior.penalty) is not Prior.penalty
    }


def validate_engine_config(cfg: Any) -> None:
    """ConfigError, before any work, for what every reconstruction attack shares: an unknown ``optimizer`` or
    ``init``, a negative prior weight (named by the key it reads, e.g. ``tv_lambda``), a prior's own bad
    argument (each prior node is built once to check it), or steps/restarts/lr that are not positive.

    Every node of ``cfg.priors`` is checked the same way, so a new prior needs only its class and its node."""
    require_choice(cfg.optimizer, cfg.optimizers, "optimizer")
    require_choice(cfg.init, cfg.inits, "init")
    settings = prior_settings(cfg)
    for name, node in cfg.priors.items():
        require_positive(node.weight, settings[f"priors.{name}.weight"], allow_zero=True)
        try:
            build_node(node, f"priors.{name}", Prior, "a prior")
        except UserError as error:  # a bad argument: the prior's own message, after its key
            if str(error).startswith(f"priors.{name} "):
                raise
            raise ConfigError(f"priors.{name}: {error}") from None
    validate_engine_settings(cfg.steps, cfg.restarts, cfg.lr)


def engine_hparams(cfg: Any, keys: Sequence[str] = ()) -> dict[str, Any]:
    """The hparams a reconstruction run logs: the attack's own ``keys``, then :data:`ENGINE_KEYS`, then the
    config keys the priors read (``tv_lambda``, ``blur_every``, ...), each once, with their values."""
    names = dict.fromkeys([*keys, *ENGINE_KEYS, *prior_settings(cfg).values()])
    return {name: OmegaConf.select(cfg, name) for name in names}


def engine_from_config(
    cfg: Any, objective: nn.Module, node_kwargs: Mapping[str, Mapping[str, Any]] | None = None, **options: Any
) -> ReconstructionModule:
    """The engine for ``objective`` with the attack config's priors, ``init``, ``optimizer``, ``steps``,
    ``restarts`` and ``seed`` (``conf/attack/_reconstruction_base.yaml``). ``node_kwargs`` gives
    run-time arguments to the prior or init node of that name (e.g. ``{"anchor": {"guess": images}}``);
    ``options`` override or add keyword arguments of :class:`ReconstructionModule`."""
    node_kwargs = node_kwargs or {}
    kwargs: dict[str, Any] = {
        "priors": {
            name: build_node(node, f"priors.{name}", Prior, "a prior", **node_kwargs.get(name, {}))
            for name, node in cfg.priors.items()
        },
        "init": build_node(cfg.inits[cfg.init], f"inits.{cfg.init}", **node_kwargs.get(cfg.init, {})),
        "optimizer": build_node(cfg.optimizers[cfg.optimizer], f"optimizers.{cfg.optimizer}"),
        "steps": cfg.steps,
        "restarts": cfg.restarts,
        "seed": cfg.seed,
    }
    return ReconstructionModule(objective, **{**kwargs, **options})
