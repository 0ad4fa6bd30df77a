"""Learned refinement stages after the inversion network: a learned gradient scheme on the feature loss.

Adler & Öktem, Inverse Problems 2017, "Solving ill-posed inverse problems using iterative deep neural networks":
instead of a fixed number of gradient steps with a hand-chosen prior, K small networks each take the current image
and the gradient of the data term at it and return an update, trained end to end on the attacker's own images.
Here the data term is the feature distance of :class:`~.matching.FeatureMatching`, ‖Φ_l(x) − Φ_l(x₀)‖² / ‖Φ_l(x₀)‖²,
its gradient taken through the target (the white-box attacker of feature inversion already has it), and the
first image the decoder's guess D(Φ_l(x₀)) (:mod:`.inversion_network`):

    x_0 = D(Φ_l(x₀)),   x_{k+1} = clip(x_k + R_k([x_k, ĝ_k, x_0, log L_k, D(Φ_l(x_k)) − x_0]), 0, 1),   k = 0 … K − 1,

with ĝ_k the loss's gradient at x_k scaled to unit RMS per image, L_k the loss (a constant channel), so the
stages read the direction and the size of the mismatch apart, and D(Φ_l(x_k)) − x_0 the mismatch read back into
pixels by the decoder (where the current image's features decode differently from the observed ones; the
gradient alone is sparse behind ReLUs and max pooling). Each R_k is three 3x3 convolutions (``width`` channels,
the last initialised to zero: an untrained refiner returns the decoder's guess). The gradient enters as an input
(no second-order terms in training); the decoder stays frozen. The stages' output is the engine's start and anchor
in place of the decoder's guess, so the optimisation that follows still matches the features exactly.

Trained once per decoder (its cache file names the target, the layer, the attacker's images and the decoder's
settings) and settings with a Lightning Trainer, cached as ``unrolled-<hash>.pt``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from privacy_attacks import cache
from privacy_attacks.attacks.feature_inversion.inversion_network import fit_on_tensors, one_cycle_adam
from privacy_attacks.callbacks.epoch_log import EpochLog
from privacy_attacks.harness import run_device
from privacy_attacks.seeding import seeded

log = logging.getLogger(__name__)
# The refiner's settings (``inversion_network.unrolled`` in conf/attack/feature_inversion.yaml).
SETTINGS = ("steps", "width", "epochs", "lr")


def feature_loss_gradient(
    network: Callable[[Tensor], Tensor], images: Tensor, features: Tensor
) -> tuple[Tensor, Tensor]:
    """The feature distance's gradient at ``images`` (N, C, H, W), scaled to unit RMS per image, and the distance's
    log (N, 1, 1, 1); ``network`` maps images to the observed layer's features, ``features`` (N, ...) the observed
    ones. Computed with gradients on whatever the caller's mode; neither output carries a graph."""
    with torch.enable_grad():
        x = images.detach().requires_grad_(True)
        residual = (network(x) - features).flatten(1)
        loss = residual.pow(2).sum(1) / features.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        (gradient,) = torch.autograd.grad(loss.sum(), x)
    rms = gradient.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (images.dim() - 1))
    return gradient / (rms + 1e-12), loss.detach().clamp_min(1e-12).log().view_as(rms)


class UnrolledRefiner(nn.Module):
    """``steps`` learned update stages: ``(guess (N, C, H, W), features (N, ...), network, decoder) -> images
    (N, C, H, W)`` in [0, 1], ``network`` the target's map from images to the observed layer and ``decoder`` the
    inversion network, from those features to images (neither a submodule: both stay frozen and in eval mode). An
    untrained refiner returns ``guess`` (each stage's last convolution starts at zero)."""

    def __init__(self, channels: int = 1, steps: int = 4, width: int = 32):
        super().__init__()
        self.channels, self.steps, self.width = int(channels), int(steps), int(width)
        self.stages = nn.ModuleList(self._stage() for _ in range(self.steps))

    def _stage(self) -> nn.Sequential:
        stage = nn.Sequential(
            nn.Conv2d(4 * self.channels + 1, self.width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(self.width, self.width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(self.width, self.channels, 3, padding=1),
        )
        nn.init.zeros_(stage[-1].weight)
        nn.init.zeros_(stage[-1].bias)
        return stage

    def forward(
        self, guess: Tensor, features: Tensor, network: Callable[[Tensor], Tensor], decoder: nn.Module
    ) -> Tensor:
        images = guess
        for stage in self.stages:
            gradient, log_loss = feature_loss_gradient(network, images, features)
            read_back = decoder(network(images)) - guess
            update = stage(torch.cat([images, gradient, guess, log_loss.expand_as(images[:, :1]), read_back], 1))
            images = (images + update).clamp(0, 1)
        return images


class UnrolledRefinerSystem(L.LightningModule):
    """Trains :class:`UnrolledRefiner` on ``(features, guess‖image)`` batches: the decoder's guesses and the true
    images stacked on the channel axis (N, 2C, H, W), so one :class:`TensorBatches` carries both. MSE of the
    refined images; Adam with a one-cycle rate over ``total_steps``; logs ``inversion/unrolled_mse``."""

    def __init__(
        self,
        refiner: UnrolledRefiner,
        network: Callable[[Tensor], Tensor],
        decoder: nn.Module,
        lr: float,
        total_steps: int,
    ):
        super().__init__()
        self.refiner = refiner
        # Plain attributes, not submodules: the target and the decoder are neither trained nor switched to train mode.
        self.network, self.frozen = network, [decoder]
        self.lr, self.total_steps = float(lr), int(total_steps)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, stacked = batch
        guess, images = stacked.chunk(2, dim=1)
        loss = F.mse_loss(self.refiner(guess, features, self.network, self.frozen[0]), images)
        self.log("inversion/unrolled_mse", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return one_cycle_adam(self.refiner.parameters(), self.lr, self.total_steps)


def unrolled_cache_path(cache_dir: str | Path, decoder_path: Path, settings: dict[str, Any], device: str) -> Path:
    """``<cache_dir>/unrolled-<hash>.pt``: keyed by the decoder's own cache file (whose name is the hash of the
    target's weights, the layer, the attacker's images and the decoder's settings), the refiner's settings, the
    images and batches it trains on, and the device."""
    spec = {"format": 1, "decoder": Path(decoder_path).name, **settings} | cache.device_entry(device)
    return cache.cache_path(cache_dir, "unrolled", spec)


def provision_unrolled_refiner(
    network: Callable[[Tensor], Tensor],
    decoder: nn.Module,
    decoder_path: Path,
    load_training: Callable[[], tuple[Tensor, Tensor]],
    settings: DictConfig | dict[str, Any],
    trainer_cfg: DictConfig,
    cache_dir: str | Path,
    channels: int = 1,
) -> UnrolledRefiner:
    """The refiner after ``decoder`` (cached at ``decoder_path``), loaded from the cache or trained.

    ``load_training() -> (features (A, ...), images (A, C, H, W))``, the attacker's images and their features at the
    observed layer (the decoder's training set), is called only to train. ``settings``: ``steps``, ``width``,
    ``epochs``, ``lr`` and the decoder's ``batch_size``, ``seed``. Returns the refiner in eval mode, on the CPU;
    a cached file that cannot be read or does not fit is a :class:`~privacy_attacks.errors.CheckpointError`.
    """
    settings = {key: settings[key] for key in (*SETTINGS, "batch_size", "seed")}
    path = unrolled_cache_path(cache_dir, decoder_path, settings, run_device(trainer_cfg).type)
    refiner = UnrolledRefiner(channels, settings["steps"], settings["width"])

    def train(path: Path) -> UnrolledRefiner:
        features, images = load_training()
        log.info("Training %d refinement stages on %d images (cached at %s).", settings["steps"], len(images), path)
        frozen = copy.deepcopy(decoder).to(run_device(trainer_cfg))  # where the fit and the target run
        with torch.no_grad():
            guesses = torch.cat([frozen(part.to(run_device(trainer_cfg))).cpu() for part in features.split(4096)])
        with seeded(settings["seed"], "unrolled_refiner"):
            trained = UnrolledRefiner(channels, settings["steps"], settings["width"])
            total_steps = settings["epochs"] * math.ceil(len(images) / settings["batch_size"])
            system = UnrolledRefinerSystem(trained, network, frozen, settings["lr"], total_steps)
            progress = EpochLog("refinement stages", shown=("inversion/unrolled_mse",))
            stacked = torch.cat([guesses, images], 1)
            fit_on_tensors(system, features, stacked, settings, "unrolled_refiner", trainer_cfg, progress)
        cache.save(path, {k: v.detach().cpu() for k, v in trained.state_dict().items()})
        return trained

    load = partial(cache.load_state, module=refiner, what="refinement stages")
    refiner = cache.provision(path, create=train, load=load)[0]
    return refiner.cpu().eval().requires_grad_(False)
