"""A learned inversion network: the attacker's own decoder from a layer's features back to images.

Dosovitskiy & Brox, CVPR 2016, "Inverting Visual Representations with Convolutional Networks":
train a decoder D on images the attacker owns so that D(Φ_l(x)) ≈ x (mean squared error). D(Φ_l(x₀))
approximates the posterior mean E[x | Φ_l(x₀)], the image that a data prior says is most likely
behind the observed features. Feature inversion uses it as the start and as an anchor prior of the
shared engine's optimisation (``init=network``, ``anchor_lambda``), so the features are matched
without leaving the data manifold.

The decoder is trained once per (target checkpoint, layer, settings) with a Lightning Trainer, on the
target's features of the attacker's images computed once, and
cached under ``paths.cache_dir`` as ``inversion-<hash>.pt`` (:mod:`privacy_attacks.cache`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from privacy_attacks import cache
from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.callbacks.epoch_log import EpochLog
from privacy_attacks.data.tensors import TensorBatches
from privacy_attacks.harness import build_trainer, run_device
from privacy_attacks.models.taps import layer_output
from privacy_attacks.seeding import derive_seed, seeded

log = logging.getLogger(__name__)


class InversionNetwork(nn.Module):
    """Decoder ``features (N, *feature_shape) -> images (N, C, H, W)`` in [0, 1].

    A linear map to ``width`` channels of ⌈H/4⌉x⌈W/4⌉, then two ×2 transposed-convolution stages, a 3x3
    convolution to C channels and a sigmoid, batch-normalised after each hidden layer, cropped to HxW:
    Dosovitskiy & Brox's decoders, small (sized for MNIST's 28x28 digits by default) so that a few epochs over the
    attacker's images suffice. ``blocks`` > 0 adds that many residual blocks (two 3x3 convolutions, He et al. 2016)
    at each of the three resolutions: a deeper decoder, slower to train (one block at 32 channels: about 3 times
    on a CPU).
    """

    def __init__(self, feature_size: int, width: int = 32, image_shape: tuple[int, ...] = (1, 28, 28), blocks: int = 0):
        super().__init__()
        self.feature_size, self.width, self.blocks = int(feature_size), int(width), int(blocks)
        channels, self.height, self.image_width = (int(s) for s in image_shape)
        rows, cols = -(-self.height // 4), -(-self.image_width // 4)
        self.decode = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.feature_size, width * rows * cols),
            nn.BatchNorm1d(width * rows * cols),
            nn.ReLU(),
            nn.Unflatten(1, (width, rows, cols)),
            *(ResidualBlock(width) for _ in range(self.blocks)),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            *(ResidualBlock(width) for _ in range(self.blocks)),
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            *(ResidualBlock(width // 2) for _ in range(self.blocks)),
            nn.Conv2d(width // 2, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.decode(features)[..., : self.height, : self.image_width]


class ResidualBlock(nn.Module):
    """``x + conv(relu(bn(conv(x))))`` then batch norm and ReLU, channels kept: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x + self.body(x))


def one_cycle_adam(parameters: Iterable[nn.Parameter], lr: float, total_steps: int) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer for the attacker's networks: Adam with a one-cycle rate peaking at
    ``lr`` over ``total_steps``, stepped every batch."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class InversionNetworkSystem(L.LightningModule):
    """Trains :class:`InversionNetwork` on ``(features, images)`` batches (MSE from features to images).

    The target's features are computed once before training (:func:`layer_features`), not per step.
    Adam with a one-cycle learning rate over ``total_steps``; logs ``inversion/train_mse``.
    """

    def __init__(self, decoder: InversionNetwork, lr: float, total_steps: int):
        super().__init__()
        self.decoder = decoder
        self.lr, self.total_steps = float(lr), int(total_steps)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, images = batch
        loss = F.mse_loss(self.decoder(features), images)
        self.log("inversion/train_mse", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return one_cycle_adam(self.decoder.parameters(), self.lr, self.total_steps)


def layer_features(net: nn.Module, layer: str, images: Tensor, chunk: int = 4096) -> Tensor:
    """``net``'s ``layer`` activations of ``images`` (A, C, H, W), computed where ``net`` is, in chunks:
    (A, *feature_shape) on the CPU."""
    return in_batches(lambda part: layer_output(net, layer, part), images, batch_size=chunk, device=net_device(net))


def fit_on_tensors(
    system: L.LightningModule,
    inputs: Tensor,
    targets: Tensor,
    settings: dict[str, Any],
    role: str,
    trainer_cfg: DictConfig,
    progress: EpochLog,
) -> None:
    """Fit one of the attacker's networks on ``(inputs, targets)`` batches of ``settings["batch_size"]`` for
    ``settings["epochs"]``, shuffled by a seed derived from ``settings["seed"]`` and ``role``; no validation."""
    trainer = build_trainer(trainer_cfg, max_epochs=settings["epochs"], limit_val_batches=0, callbacks=[progress])
    seed = derive_seed(settings["seed"], role, "batches") % 2**31
    batches = TensorBatches(inputs, targets, settings["batch_size"], shuffle=True, seed=seed)
    trainer.fit(system, train_dataloaders=batches)


def inversion_cache_path(
    cache_dir: str | Path,
    net: nn.Module,
    layer: str,
    settings: dict[str, Any],
    images_key: dict[str, Any],
    device: str = "cpu",
) -> Path:
    """``<cache_dir>/inversion-<hash>.pt``, keyed by what the decoder is fitted to: the content of the target's
    weights (:func:`privacy_attacks.cache.weights_digest`, not a file name: a target retrained under the same name
    gets its own decoder), the layer, the settings, ``images_key`` (what names the attacker's training images: the
    data's digest and split) and the device it trains on (:func:`~privacy_attacks.cache.device_entry`)."""
    spec = {
        "format": 4,
        "target_weights": cache.weights_digest(net),
        "layer": layer,
        "images": images_key,
        **settings,
    }
    spec.update(cache.device_entry(device))
    return cache.cache_path(cache_dir, "inversion", spec)


def decoder_settings(settings: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """What of ``settings`` (``inversion_network``) the decoder depends on, as its cache key names them."""
    blocks = int(settings.get("blocks", 0))
    return {key: settings[key] for key in ("train_images", "epochs", "batch_size", "lr", "width", "seed")} | (
        {"blocks": blocks} if blocks else {}  # 0 keeps the earlier decoders' cache keys
    )


def provision_inversion_network(
    net: nn.Module,
    layer: str,
    load_images: Callable[[], Tensor],
    images_key: dict[str, Any],
    settings: DictConfig | dict[str, Any],
    trainer_cfg: DictConfig,
    cache_dir: str | Path,
    image_shape: tuple[int, ...] = (1, 28, 28),
) -> InversionNetwork:
    """The decoder of ``net``'s ``layer``, loaded from the cache or trained on the attacker's images.

    ``load_images() -> (A, *image_shape)`` is called only when the decoder must be trained (a cache hit loads
    no data); its first ``settings["train_images"]`` images are used. ``settings``: ``train_images``,
    ``epochs``, ``batch_size``, ``lr``, ``width``, ``seed``, optionally ``blocks`` (``inversion_network`` in
    ``conf/attack/feature_inversion.yaml``); ``images_key`` names those images in the cache key
    (:func:`inversion_cache_path`). Returns the decoder in eval mode, on the CPU. A cached file that
    cannot be read or does not fit the decoder is a :class:`~privacy_attacks.errors.CheckpointError`.
    """
    settings = decoder_settings(settings)
    blocks = settings.get("blocks", 0)
    path = inversion_cache_path(cache_dir, net, layer, settings, images_key, run_device(trainer_cfg).type)
    device = next(net.parameters()).device
    with torch.no_grad():
        feature_size = layer_output(net, layer, torch.zeros(1, *image_shape, device=device))[0].numel()
    decoder = InversionNetwork(feature_size, settings["width"], image_shape, blocks)

    def train(path: Path) -> InversionNetwork:
        images = load_images()[: settings["train_images"]]
        log.info("Training the inversion network of %s on %d images (cached at %s).", layer, len(images), path)
        features = layer_features(net, layer, images)
        with seeded(settings["seed"], "inversion_network"):
            decoder = InversionNetwork(feature_size, settings["width"], image_shape, blocks)
            steps_per_epoch = math.ceil(len(images) / settings["batch_size"])
            system = InversionNetworkSystem(decoder, settings["lr"], settings["epochs"] * steps_per_epoch)
            progress = EpochLog(f"decoder of {layer}", shown=("inversion/train_mse",))
            fit_on_tensors(system, features, images, settings, "inversion_network", trainer_cfg, progress)
        cache.save(path, {k: v.detach().cpu() for k, v in decoder.state_dict().items()})
        return decoder

    load = partial(cache.load_state, module=decoder, what="inversion network")
    decoder = cache.provision(path, create=train, load=load)[0]
    return decoder.cpu().eval().requires_grad_(False)
