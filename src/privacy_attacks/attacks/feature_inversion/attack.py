"""Feature inversion: recover private query images from the target's intermediate features.

An attacker who sees Φ_l(x₀), the target's activations at layer l for a private query x₀, minimises
‖Φ_l(x) − Φ_l(x₀)‖² / ‖Φ_l(x₀)‖² + ``tv_lambda`` · ℓ_TV(x) (+ the engine's other priors) over
images x in [0, 1] (Mahendran & Vedaldi, CVPR 2015, "Understanding Deep Image Representations by
Inverting Them"), on the shared reconstruction engine (:mod:`privacy_attacks.engine.module`) with the objective
:class:`.matching.FeatureMatching`. ``python attack.py attack=feature_inversion layer=conv2``. The layer is one of
the target's named blocks or any module path (``layer=conv2.0``; :mod:`privacy_attacks.models.taps`); the images
are the configured data's (``data=``).

``init=network`` and ``anchor_lambda`` > 0 add a learned prior: a decoder from the layer's features to
images trained on the attacker's own images (:mod:`.inversion_network`, Dosovitskiy & Brox 2016)
gives a guess x̂ of each private image, used as the start and in the penalty ``anchor_lambda`` · mean (x − x̂)².
``inversion_network.unrolled.steps`` > 0 refines that guess with learned stages that read the feature loss's
gradient (:mod:`.unrolled`, Adler & Öktem 2017) before the optimisation.

Writes ``reconstructions.pt`` ({"images": (N, C, H, W) in [0, 1], "labels": (N,), "originals":
(N, C, H, W)}), ``reconstructions.png`` and TensorBoard events; returns ``recon/psnr``,
``recon/ssim``, ``recon/mse`` (means over the N private images) and the same against the class-mean
image (``recon/psnr_class_mean``: what an attacker who only guessed the class would reach); with the
inversion network, ``recon/psnr_network`` (its guess alone, before the optimisation) and with the refinement
stages ``recon/psnr_decoder`` (the decoder's, before them).
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from privacy_attacks.attacks.feature_inversion.inversion_network import (
    decoder_settings,
    inversion_cache_path,
    layer_features,
    provision_inversion_network,
)
from privacy_attacks.attacks.feature_inversion.matching import FeatureMatching
from privacy_attacks.attacks.feature_inversion.unrolled import provision_unrolled_refiner
from privacy_attacks.data.identity import attacker_training_images, data_source, recipe_members
from privacy_attacks.data.private import PRIVATE_SETS, private_pool
from privacy_attacks.engine.figures import originals_figure
from privacy_attacks.engine.metrics import class_means, image_similarity
from privacy_attacks.engine.module import (
    ReconstructionModule,
    engine_from_config,
    engine_hparams,
    validate_engine_config,
)
from privacy_attacks.engine.sweep import batch_note, fit_engine
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_loggers, finish_loggers, log_image_grid, run_device
from privacy_attacks.io import output_dir
from privacy_attacks.models.taps import check_layer, layer_output
from privacy_attacks.targets import Target

log = logging.getLogger(__name__)
# The attack's own swept keys, logged as TensorBoard hparams with the engine's (:func:`engine_hparams`).
HPARAMS = ("layer", "num_images", "private_set", "private_seed")


def validate(cfg: DictConfig) -> None:
    """ConfigError for a layer the target does not have (the message lists its layers), more images than the
    private pool, bad inversion-network settings, or a bad engine setting (:func:`validate_engine_config`)."""
    check_layer(instantiate(cfg.target.net), cfg.layer)  # a network is built in milliseconds, untrained
    require_choice(cfg.private_set, PRIVATE_SETS, "private_set")
    for key in ("num_images", "private_pool"):
        require_int(cfg[key], key)
    require_int(cfg.private_seed, "private_seed", minimum=None)
    if cfg.num_images > cfg.private_pool:
        raise ConfigError(
            f"num_images={cfg.num_images} is larger than the private pool (private_pool={cfg.private_pool})."
        )
    if uses_inversion_network(cfg):
        settings = cfg.inversion_network
        for key in ("train_images", "epochs", "batch_size", "width"):
            require_int(settings[key], f"inversion_network.{key}")
        total = data_source(cfg.data).train_size  # None: known once read
        if total is not None and settings.train_images > total - cfg.data.val_size:
            raise ConfigError(
                f"inversion_network.train_images={settings.train_images} is more than the "
                f"{total - cfg.data.val_size} training images outside the validation split "
                f"(data.val_size={cfg.data.val_size})."
            )
        require_positive(settings.lr, "inversion_network.lr")
        require_int(settings.seed, "inversion_network.seed", minimum=None)
        require_int(settings.blocks, "inversion_network.blocks", minimum=0)
        stages = settings.unrolled
        require_int(stages.steps, "inversion_network.unrolled.steps", minimum=0)
        if stages.steps:
            for key in ("width", "epochs"):
                require_int(stages[key], f"inversion_network.unrolled.{key}")
            require_positive(stages.lr, "inversion_network.unrolled.lr")
    validate_engine_config(cfg)


def uses_inversion_network(cfg: DictConfig) -> bool:
    """Whether the run needs the learned inversion network (``init=network`` or ``anchor_lambda`` > 0)."""
    return cfg.init == "network" or cfg.anchor_lambda > 0


def inversion_network_guess(
    cfg: DictConfig, target: Target, features: Tensor, image_shape: tuple[int, ...]
) -> tuple[Tensor, Tensor | None]:
    """The attacker's learned guess of the images behind ``features``: (N, *image_shape), and the decoder's own
    output before the refinement stages (None without them, ``inversion_network.unrolled.steps=0``).

    The decoder (and the stages) come from the cache or are trained on the first ``inversion_network.train_images``
    training images of the data outside the validation split (loaded only then; no private image of either set is
    among them)."""
    settings = cfg.inversion_network
    images_key = {
        "data": data_source(cfg.data).digest(),
        "val_size": int(cfg.data.val_size),
        "split_seed": int(cfg.data.split_seed),
    }
    loaded: list[Tensor] = []

    def attacker_images() -> Tensor:  # read once, whether the decoder, the stages or both are trained
        if not loaded:
            loaded.append(attacker_training_images(cfg.data)[: settings.train_images])
        return loaded[0]

    decoder = provision_inversion_network(
        target.net,
        cfg.layer,
        attacker_images,
        images_key,
        settings,
        cfg.trainer,
        cfg.paths.cache_dir,
        image_shape,
    )
    with torch.no_grad():
        decoded = decoder(features.cpu())
    if settings.unrolled.steps == 0:
        return decoded, None
    device = run_device(cfg.trainer).type
    decoder_path = inversion_cache_path(
        cfg.paths.cache_dir, target.net, cfg.layer, decoder_settings(settings), images_key, device
    )
    network = partial(layer_output, target.net, cfg.layer)
    refiner = provision_unrolled_refiner(
        network,
        decoder,
        decoder_path,
        lambda: (layer_features(target.net, cfg.layer, attacker_images()), attacker_images()),
        {**settings.unrolled, "batch_size": settings.batch_size, "seed": settings.seed},
        cfg.trainer,
        cfg.paths.cache_dir,
        image_shape[0],
    )
    where = next(target.net.parameters()).device
    with torch.no_grad():
        refined = refiner.to(where)(decoded.to(where), features.to(where), network, decoder.to(where)).cpu()
    return refined, decoded


def build_module(
    cfg: DictConfig,
    net: nn.Module,
    features: Tensor,
    guess: Tensor | None = None,
    image_shape: tuple[int, ...] = (1, 28, 28),
) -> ReconstructionModule:
    """The engine inverting ``features`` (N, ...), the private images' activations of ``net`` at ``cfg.layer``, over
    images of ``image_shape``;
    ``guess`` (N, C, H, W) feeds ``init=network`` and the ``anchor`` prior."""
    node_kwargs = {"anchor": {"guess": guess}, "network": {"guess": guess}} if guess is not None else {}
    objective = FeatureMatching(net, cfg.layer, features, image_shape)
    return engine_from_config(cfg, objective, node_kwargs, log_prefix="recon")


def class_mean_images(cfg: DictConfig, labels: Tensor) -> Tensor:
    """The mean training image of each label's class (the target's members), (N, C, H, W)."""
    images, targets = recipe_members(cfg.data, cfg.target)
    return class_means(images, targets, int(targets.max()) + 1)[labels]


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Invert the target's ``layer`` features of ``num_images`` private test images; score against the originals."""
    out = output_dir(cfg)
    pool, pool_labels = private_pool(cfg)
    originals, labels = pool[: cfg.num_images], pool_labels[: cfg.num_images]
    with torch.no_grad():
        # What the attacker observes, computed where the target runs.
        features = layer_output(target.net, cfg.layer, originals.to(next(target.net.parameters()).device))
    shape = tuple(originals.shape[1:])
    guess, decoded = (None, None)
    if uses_inversion_network(cfg):
        guess, decoded = inversion_network_guess(cfg, target, features, shape)
    shared = {"guess": guess}  # one guess for a group: its settings are none of the keys its jobs differ in

    def guess_for(job: DictConfig) -> Tensor | None:
        if uses_inversion_network(job) and shared["guess"] is None:  # a group-mate needs it where this job does not
            shared["guess"] = inversion_network_guess(job, target, features, shape)[0]
        return shared["guess"] if uses_inversion_network(job) else None

    loggers = build_loggers(cfg)
    # Alone, or with the other jobs of its group under hydra/launcher=vectorised.
    module, seconds, batched = fit_engine(
        cfg, lambda job: build_module(job, target.net, features, guess_for(job), shape), cfg.trainer, loggers
    )
    images = module.reconstructions()[0].cpu()
    scores = image_similarity(images, originals)
    baseline = image_similarity(class_mean_images(cfg, labels), originals)
    metrics = {
        "recon/psnr": scores["psnr"].mean().item(),
        "recon/psnr_median": scores["psnr"].median().item(),
        "recon/ssim": scores["ssim"].mean().item(),
        "recon/mse": scores["mse"].mean().item(),
        "recon/psnr_class_mean": baseline["psnr"].mean().item(),
        "recon/ssim_class_mean": baseline["ssim"].mean().item(),
        "recon/fit_time_s": seconds,
    }
    if guess is not None:  # the inversion network's guess alone, before the feature-matching optimisation
        metrics["recon/psnr_network"] = image_similarity(guess, originals)["psnr"].mean().item()
    if decoded is not None:  # the decoder's, before the refinement stages
        metrics["recon/psnr_decoder"] = image_similarity(decoded, originals)["psnr"].mean().item()
    torch.save({"images": images, "labels": labels, "originals": originals}, out / "reconstructions.pt")
    shown = min(cfg.num_images, 16)
    titles = [f"{int(y)}: {float(s):.0f}dB" for y, s in zip(labels[:shown], scores["psnr"][:shown])]
    originals_figure(
        out / "reconstructions.png",
        originals[:shown],
        images[:shown],
        titles,
        f"feature inversion from {cfg.layer}: PSNR {metrics['recon/psnr']:.1f} dB, SSIM {metrics['recon/ssim']:.2f}",
    )
    # The originals above their reconstructions, and the swept hparams with the final metrics.
    log_image_grid(loggers, "recon/reconstructions", (originals[:shown], images[:shown]), int(cfg.steps))
    finish_loggers(loggers, engine_hparams(cfg, HPARAMS), metrics, step=int(cfg.steps))
    log.info(
        "feature inversion from %s: PSNR %.2f dB (class mean %.2f), SSIM %.3f; %s%s",
        cfg.layer,
        metrics["recon/psnr"],
        metrics["recon/psnr_class_mean"],
        metrics["recon/ssim"],
        out,
        batch_note(batched, "fitted"),
    )
    return metrics
