"""Gradient inversion: recover a federated client's private batch from the gradient it shares.

A simulated client (:class:`.client.SimulatedClient`) computes ∇_θ L(f_θ(x*), y*) of the
shared model (built for the configured data's shape and classes) on a private batch of the data's test images;
the attacker, who knows θ, runs the reconstruction
engine (:mod:`privacy_attacks.engine.module`) with a gradient-matching objective (:mod:`.matching`):

- ``dlg``: Zhu, Liu & Han, NeurIPS 2019, "Deep Leakage from Gradients": squared L2 distance,
  dummy soft labels optimised jointly, L-BFGS;
- ``idlg``: Zhao, Mopuri & Bilen 2020, "iDLG: Improved Deep Leakage from Gradients": the labels are
  recovered analytically from the last layer's gradient (:mod:`.labels`), then L2 matching;
- ``ig``: Geiping, Bauermeister, Dröge & Moeller, NeurIPS 2020, "Inverting Gradients": cosine
  distance, TV prior, Adam on signed gradients, restarts (labels recovered analytically).

``init=gradient_decoder`` starts each image at a learned decoding of its recovered label's mean last-layer features,
read off the shared gradient (:mod:`.last_layer`); ``feature_fit.steps`` > 0 finishes every method that recovers
labels by fitting each recovered class's images to those features (:func:`.last_layer.fit_class_features`).

``prior=gan`` adds a generative image prior to a method that recovers labels (GIAS, Jeon et al., NeurIPS 2021;
GGL, Li et al., CVPR 2022): a class-conditional GAN trained on the attacker's own labelled images, whose codes are
searched first (:func:`search_codes`); the method's pixel optimisation starts from the images found.

Reconstructions are paired with the originals by the best assignment (:mod:`.assignment`)
before scoring. ``python attack.py attack=gradient_inversion method=idlg batch_size=1``.

Writes ``reconstructions.pt`` ({"images": (N, C, H, W) in [0, 1] paired with "originals",
"labels": recovered (N,), "original_labels": (N,)}), ``reconstructions.png`` and TensorBoard events;
returns ``recon/psnr``, ``recon/ssim``, ``recon/mse`` (means over the N = num_batches · batch_size
images), ``recon/psnr_median``, ``recon/psnr_alone`` / ``recon/psnr_repeated`` (the images alone in their class in
their batch / the others), ``recon/label_acc`` and timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from privacy_attacks.attacks.gradient_inversion.assignment import best_assignment
from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.attacks.gradient_inversion.imprint import (
    ImprintedModel,
    brightness_thresholds,
    recover_from_imprint,
)
from privacy_attacks.attacks.gradient_inversion.labels import recover_label_counts, recover_labels
from privacy_attacks.attacks.gradient_inversion.last_layer import (
    decoded_guess,
    fit_class_features,
    last_layer_inputs,
    last_linear,
    locate_output_linear,
    provision_gradient_decoder,
    read_class_features,
    validate_feature_fit,
    validate_settings,
)
from privacy_attacks.attacks.gradient_inversion.matching import GradientMatching
from privacy_attacks.attacks.inversion.gan import (
    ConditionalGenerator,
    GeneratedImages,
    TunedGenerators,
    provision_generator,
)
from privacy_attacks.data.identity import (
    attacker_training_images,
    attacker_training_set,
    data_identity,
    data_name,
    data_shape,
)
from privacy_attacks.data.private import PRIVATE_SETS, private_pool
from privacy_attacks.defenses import defense_from_config
from privacy_attacks.engine.figures import originals_figure
from privacy_attacks.engine.inits import GuessInit
from privacy_attacks.engine.metrics import image_similarity
from privacy_attacks.engine.module import (
    ReconstructionModule,
    engine_from_config,
    engine_hparams,
    fit_reconstruction,
    validate_engine_config,
)
from privacy_attacks.errors import ConfigError, require_bool, require_choice, require_int, require_positive
from privacy_attacks.harness import build_loggers, finish_loggers, log_image_grid, run_device
from privacy_attacks.io import output_dir
from privacy_attacks.seeding import derive_seed, seeded
from privacy_attacks.targets import Target, provision_classifier, provision_target
from privacy_attacks.training import check_network

log = logging.getLogger(__name__)
# The attack's own swept keys, logged as TensorBoard hparams with the engine's (:func:`engine_hparams`).
HPARAMS = (
    "method",
    "batch_size",
    "num_batches",
    "shared_model",
    "model_state",
    "private_set",
    "private_seed",
    "separate_restarts",
    "label_recovery",
    "group_rounds",
    "prior",
    "gradient_decoder.anchor",
    "feature_fit.steps",
    "feature_fit.tv_alone",
    "feature_fit.tv_repeated",
    "feature_fit.noise",
)
MODEL_STATES = ("init", "trained")
LABEL_RECOVERIES = ("bias_counts", "row_signs")
THREATS = ("honest_server", "malicious_server")
PRIORS = ("pixels", "gan")
SEARCH_KEYS = ("latent_dim", "width", "steps", "batch_size", "search_steps", "search_restarts", "generator_steps")
REFINEMENTS = ("generator", "pixels")  # prior=gan's stages after the code search, in this order
# The inits that start each image from a guess made of its recovered label, and what they start it at.
GUESSED_INITS = {
    "class_mean": "at the mean of its recovered label's images",
    "gradient_decoder": "at the decoded features of its recovered label's images",
}
# An image counts as recovered at or above this PSNR (dB): recon/recovered_fraction.
RECOVERED_PSNR = 30.0
# The label of a reconstruction whose label the method does not recover (imprint): no recon/label_acc then.
UNKNOWN_LABEL = -1


def validate(cfg: DictConfig) -> None:
    """ConfigError for an unknown method / shared model / state, a shared model that cannot take the data's images
    or does not give its classes, a batch larger than the private pool, or a bad engine setting
    (:func:`validate_engine_config`), before any work."""
    require_choice(cfg.method, cfg.methods, "method")
    require_choice(cfg.shared_model, cfg.shared_models, "shared_model")
    require_choice(cfg.model_state, MODEL_STATES, "model_state")
    require_choice(cfg.private_set, PRIVATE_SETS, "private_set")
    shared_key = "target" if cfg.shared_model == "target" else f"shared_models.{cfg.shared_model}"  # the user's key
    check_network(cfg.shared_models[cfg.shared_model], shared_key, cfg.data)  # the data's shape and classes
    require_int(cfg.private_seed, "private_seed", minimum=None)
    method = cfg.methods[cfg.method]
    require_choice(method.threat, THREATS, f"methods.{cfg.method}.threat")
    if method.threat == "malicious_server":
        require_int(method.bins, f"methods.{cfg.method}.bins")
    for key in ("batch_size", "num_batches", "private_pool"):
        require_int(cfg[key], key)
    require_bool(cfg.separate_restarts, "separate_restarts")
    require_choice(cfg.label_recovery, LABEL_RECOVERIES, "label_recovery")
    require_int(cfg.group_rounds, "group_rounds")
    if cfg.group_consistency > 0 and not method.recover_labels:
        raise ConfigError(
            f"group_consistency={cfg.group_consistency} registers restarts by their recovered labels, but "
            f"method={cfg.method} optimises soft labels: use a method that recovers them (idlg, ig, ig_lbfgs)."
        )
    require_int(cfg.label_public_images, "label_public_images")
    require_choice(cfg.prior, PRIORS, "prior")
    if cfg.prior == "gan":
        check_image_prior(cfg)
    if cfg.init in GUESSED_INITS and method.threat == "honest_server":
        if not method.recover_labels:
            raise ConfigError(
                f"init={cfg.init} starts each image {GUESSED_INITS[cfg.init]}, but "
                f"method={cfg.method} optimises soft labels: use a method that recovers them (idlg, ig, ig_lbfgs)."
            )
        if cfg.prior == "gan":
            raise ConfigError(f"init={cfg.init} and prior=gan both choose the start: with prior=gan leave init alone.")
        if cfg.init == "gradient_decoder":
            validate_settings(cfg.gradient_decoder)
    validate_feature_fit(cfg.feature_fit)
    if cfg.feature_fit.steps > 0 and (method.threat != "honest_server" or not method.recover_labels):
        raise ConfigError(
            f"feature_fit.steps={cfg.feature_fit.steps} fits each recovered class's images to its features read off "
            f"the last layer's gradient, but method={cfg.method} does not recover labels by class: use idlg, ig or "
            "ig_lbfgs, or feature_fit.steps=0."
        )
    if cfg.batch_size > cfg.private_pool:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the private pool (private_pool={cfg.private_pool})."
        )
    if cfg.batch_size * cfg.num_batches > cfg.private_pool:
        raise ConfigError(
            f"num_batches={cfg.num_batches} batches of batch_size={cfg.batch_size} need "
            f"{cfg.num_batches * cfg.batch_size} private images, more than private_pool={cfg.private_pool}."
        )
    validate_engine_config(cfg)


def check_image_prior(cfg: DictConfig) -> None:
    """:class:`ConfigError` for ``prior=gan`` where it cannot work (a method without recovered labels: the
    generator is conditioned on them; the malicious server's analytic recovery) or a bad ``gan`` setting."""
    method = cfg.methods[cfg.method]
    if method.threat != "honest_server" or not method.recover_labels:
        raise ConfigError(
            f"prior=gan searches a class-conditional generator's codes for the recovered labels, but "
            f"method={cfg.method} {'recovers no label' if method.threat == 'honest_server' else 'optimises nothing'}: "
            "use idlg, ig or ig_lbfgs."
        )
    for key in SEARCH_KEYS:
        require_int(cfg.gan[key], f"gan.{key}")
    require_positive(cfg.gan.lr, "gan.lr")
    require_positive(cfg.gan.search_lr, "gan.search_lr")
    require_positive(cfg.gan.generator_lr, "gan.generator_lr")
    for stage in cfg.gan.refine:
        require_choice(stage, REFINEMENTS, "gan.refine's stages")
    if cfg.gan.latent_clip is not None:
        require_positive(cfg.gan.latent_clip, "gan.latent_clip")
    if cfg.gan.search_restarts < cfg.restarts:
        raise ConfigError(
            f"gan.search_restarts={cfg.gan.search_restarts} must be at least restarts={cfg.restarts}: the best "
            "searched batches are the restarts' starts."
        )


def provision(cfg: DictConfig) -> Target | None:
    """The attack's target only where the clients share it (``shared_model=target model_state=trained``); None
    otherwise: the shared model is built from its own recipe, and no target is trained for nothing."""
    if cfg.shared_model == "target" and cfg.model_state == "trained":
        return provision_target(cfg)
    return None


def shared_model(cfg: DictConfig, target: Target | None) -> nn.Module:
    """The FedSGD model the client differentiates: ``cfg.shared_models[shared_model]`` at ``model_state``.

    ``init``: freshly initialised from a seed derived from ``private_seed`` (part of the scenario, like the
    clients' images, not of the attacker's randomness); ``trained``: trained once and cached like a target
    (for ``shared_model=target`` that is the attack's target itself). Frozen, in eval mode.
    """
    recipe = cfg.shared_models[cfg.shared_model]
    if cfg.model_state == "trained":
        if cfg.shared_model == "target":
            return target.net
        return provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, cfg.shared_model).net
    with seeded(cfg.private_seed, "shared_model"):
        net: nn.Module = instantiate(recipe.net)
    return net.eval().requires_grad_(False)


def image_shape(cfg: DictConfig) -> tuple[int, ...]:
    """The (C, H, W) of the configured data's images: what the client holds and the attacker reconstructs."""
    shape, _ = data_shape(cfg.data)
    if shape is None:
        raise ConfigError("attack=gradient_inversion needs the data's image shape: set data.image_shape (C, H, W).")
    return shape


def model_classes(model: nn.Module, shape: tuple[int, ...]) -> int:
    """The number of classes ``model`` outputs for images of ``shape`` (C, H, W)."""
    with torch.no_grad():
        return int(model(torch.zeros(1, *shape, device=next(model.parameters()).device)).shape[-1])


def image_prior(cfg: DictConfig, model: nn.Module) -> ConditionalGenerator | None:
    """``prior=gan``: the class-conditional generator trained on the attacker's own labelled images (the training
    pool outside the validation split: no private image of either set; :func:`~privacy_attacks.data.identity.
    attacker_training_set`) from the attack's seed, cached like the inversion's; None for ``prior=pixels``."""
    if cfg.prior != "gan":
        return None
    shape = image_shape(cfg)
    generator, _ = provision_generator(
        None,
        shape,
        model_classes(model, shape),
        lambda: attacker_training_set(cfg.data),
        {"data": data_name(cfg.data), "identity": data_identity(cfg.data), "images": "attacker_training"},
        cfg.gan,
        int(cfg.seed),
        cfg.trainer,
        cfg.paths.cache_dir,
    )
    return generator.to(next(model.parameters()).device)


@dataclass
class BatchResult:
    """One client's attack: reconstructions and recovered labels paired with the originals, and its time."""

    images: Tensor
    labels: Tensor
    seconds: float
    grad_cosine: float = 1.0


def build_module(
    cfg: DictConfig,
    model: nn.Module,
    gradient: list[Tensor],
    labels: Tensor | None,
    seed: int,
    restarts: int,
    start: Tensor | None = None,
    consensus: Tensor | None = None,
    anchor: Tensor | None = None,
    guess: Tensor | None = None,
    anchor_weight: float | None = None,
    **engine_options: Any,
) -> ReconstructionModule:
    """The engine with the method's gradient-matching objective and ``restarts`` dummy batches optimised together;
    ``labels`` None: DLG's optimised soft labels. ``seed`` (the attacker's, for this client) draws the dummy images
    (role ``init``) and DLG's soft labels (role ``labels``). A group-consistency round (:func:`fit_restarts`) starts
    from ``start`` (R·B, C, H, W) instead of ``init`` and pulls every image towards ``consensus`` (B, C, H, W) with
    the ``group`` prior; without a consensus that prior is off. ``anchor`` (R·B, C, H, W): the generator's images
    of ``prior=gan`` (or the decoded starts of ``init=gradient_decoder``) that the ``anchor`` prior pulls the pixels
    towards (None: off), with weight ``anchor_weight`` (None: ``gan.anchor``). ``guess`` (B, C, H, W): the
    images the init node of ``cfg.init`` starts from (``init=class_mean``: the recovered labels' class means),
    repeated over the restarts with that node's noise. ``engine_options`` override the
    engine's settings (the code search of ``prior=gan``: its parameterisation, optimiser and steps)."""
    method = cfg.methods[cfg.method]
    shape = image_shape(cfg)
    engine_options = {"clamp_each_step": bool(method.clamp_each_step), **engine_options}
    if start is not None:
        engine_options["init"] = GuessInit(guess=start)
    group = {"weight": 0.0} if consensus is None else {"guess": consensus}
    anchored = {"guess": anchor} if anchor_weight is None else {"guess": anchor, "weight": float(anchor_weight)}
    nodes = {"group": group, "anchor": {"weight": 0.0} if anchor is None else anchored}
    if guess is not None:
        nodes[cfg.init] = {"guess": guess}
    objective = GradientMatching(
        model,
        gradient,
        cfg.batch_size,
        instantiate(method.distance),
        labels=labels,
        restarts=restarts,
        num_classes=model_classes(model, shape),
        seed=seed,
        image_shape=shape,
    )
    return engine_from_config(
        cfg,
        objective,
        node_kwargs=nodes,
        seed=seed,
        **{
            "signed_gradients": bool(method.signed_gradients),
            "scheduler": instantiate(method.scheduler) if method.get("scheduler") else None,
            "log_prefix": "recon",
            "restarts": restarts,
            **engine_options,
        },
    )


def attack_batch(
    cfg: DictConfig,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    seed: int,
    logger: Any = False,
    defense: Any = None,
    mean_probabilities: Tensor | None = None,
    generator: ConditionalGenerator | None = None,
    start_guess: Callable[[list[Tensor], Tensor], Tensor] | None = None,
    finish: Callable[[list[Tensor], Tensor, Tensor, int], Tensor] | None = None,
) -> BatchResult:
    """Simulate one client holding ``images`` (B, C, H, W) / ``labels`` (B,) and invert its shared gradient
    (passed through the client's ``defense``, if any). ``mean_probabilities`` (C,): the shared model's mean output on
    the attacker's images (:func:`public_mean_probabilities`), for ``label_recovery=bias_counts``; ``generator``:
    the image prior of ``prior=gan`` (:func:`image_prior`); ``start_guess(gradient, recovered labels) -> (B, C, H, W)``:
    the images ``init=class_mean`` or ``init=gradient_decoder`` starts from (:func:`start_guesses`);
    ``finish(gradient, labels, images, seed) -> images``: the last step on the best restart (:func:`feature_finish`)."""
    start = time.perf_counter()
    device = next(model.parameters()).device  # the client computes where the shared model is
    raw, gradient = SimulatedClient(model, images.to(device), labels.to(device), defense=defense).gradients()
    recovered = None
    if cfg.methods[cfg.method].recover_labels:
        weight, bias = last_linear(model, gradient)
        if cfg.batch_size > 1 and bias is not None and mean_probabilities is not None:
            recovered = recover_label_counts(bias, cfg.batch_size, mean_probabilities)
        else:  # one image (iDLG's exact rule), or no bias / no estimate of the mean output
            recovered = recover_labels(weight, cfg.batch_size, bias)
    if isinstance(model, ImprintedModel):  # the malicious server reads the images off its imprint block
        weight, bias = model.imprint_gradients(gradient)
        reconstructions = recover_from_imprint(weight, bias, cfg.batch_size, image_shape(cfg)).cpu()
        order = best_assignment(reconstructions, images)
        seconds = time.perf_counter() - start
        unknown = torch.full((cfg.batch_size,), UNKNOWN_LABEL)  # a label multiset, not one per image: none claimed
        return BatchResult(reconstructions[order], unknown, seconds, gradient_cosine(raw, gradient))
    guess = start_guess(gradient, recovered) if start_guess is not None and recovered is not None else None
    candidates, losses, predicted = fit_restarts(cfg, model, gradient, recovered, seed, logger, generator, guess)
    distances = losses.sum(dim=1)  # each restart's gradient distance (its images' losses sum to it)
    best = int(distances.argmin())  # a restart is one batch: keep the best batch as a whole
    log.debug("restarts' gradient distances %s: restart %d kept", distances.tolist(), best)
    reconstructions, predicted = candidates[best], predicted[best]
    if finish is not None:
        reconstructions = finish(gradient, predicted, reconstructions, seed)
    seconds = time.perf_counter() - start
    reconstructions, predicted = reconstructions.cpu(), predicted.cpu()
    order = best_assignment(reconstructions, images)
    return BatchResult(reconstructions[order], predicted[order], seconds, gradient_cosine(raw, gradient))


def fit_restarts(
    cfg: DictConfig,
    model: nn.Module,
    gradient: list[Tensor],
    labels: Tensor | None,
    seed: int,
    logger: Any = False,
    generator: ConditionalGenerator | None = None,
    guess: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Optimise ``cfg.restarts`` dummy batches against one client's gradient: the best iterate of each restart,
    (R, B, C, H, W), its per-image losses (R, B) and its labels (R, B).

    ``separate_restarts`` false: the restarts are one vectorised problem (one optimiser over all of them; right for
    Adam, whose steps are per coordinate). True: each restart is its own problem with its own optimiser, as
    L-BFGS needs (one L-BFGS over all restarts keeps one history and one step size for them all, mixing their
    curvature); restart 0 draws from ``seed`` as a single-restart job does, restart r from ``(seed, "restart", r)``.
    Only the first problem's curves are logged.

    ``group_consistency`` > 0 (GradInversion's group consistency, Yin et al., CVPR 2021, §3.3): then
    ``group_rounds`` times, the restarts are registered to the best one (:func:`register_restarts`), their pixel
    mean is the consensus, and every restart is optimised again from where it stands with
    ``group_consistency`` · mean (x − consensus)² added to each image's loss.

    ``generator`` (``prior=gan``): the restarts start from the generator's images that :func:`search_codes` finds,
    after :func:`tune_generators` where ``gan.refine`` names ``generator``; without ``pixels`` there, they end there
    too; the first pixel pass pulls them towards those images with weight ``gan.anchor``. ``guess`` (B, C, H, W;
    ``init=class_mean`` or ``gradient_decoder``): every restart's first pass starts each image there (plus the init
    node's noise); with ``init=gradient_decoder`` that pass also pulls the images towards it with weight
    ``gradient_decoder.anchor``."""
    candidates = losses = predicted = consensus = anchors = None
    anchor_weight = None
    if guess is not None and cfg.init == "gradient_decoder" and cfg.gradient_decoder.anchor > 0:
        anchors, anchor_weight = guess.unsqueeze(0).expand(cfg.restarts, *guess.shape), cfg.gradient_decoder.anchor
    if generator is not None:
        candidates, losses, predicted, codes = search_codes(cfg, model, gradient, labels, seed, generator, logger)
        if "generator" in cfg.gan.refine:
            candidates, losses, predicted = tune_generators(cfg, model, gradient, labels, seed, generator, codes)
        if "pixels" not in cfg.gan.refine:
            return candidates, losses, predicted
        anchors = candidates
        logger = False  # one curve per job: the search's
    if not cfg.separate_restarts or cfg.restarts == 1:
        problems = [(seed, cfg.restarts)]
    else:
        problems = [(seed if r == 0 else derive_seed(seed, "restart", r), 1) for r in range(cfg.restarts)]
    rounds = int(cfg.group_rounds) if cfg.group_consistency > 0 and cfg.restarts > 1 else 0
    for round_ in range(rounds + 1):
        if round_ > 0:
            candidates, losses, predicted = register_restarts(candidates, losses, predicted)
            consensus = candidates.mean(dim=0)
        results, offset = [], 0
        for index, (problem_seed, restarts) in enumerate(problems):
            start = None if candidates is None else candidates[offset : offset + restarts].flatten(0, 1)
            anchor = anchors[offset : offset + restarts].flatten(0, 1) if anchors is not None and round_ == 0 else None
            offset += restarts
            first = guess if start is None else None
            module = build_module(
                cfg, model, gradient, labels, problem_seed, restarts, start, consensus, anchor, first, anchor_weight
            )
            fit_reconstruction(module, cfg.trainer, logger=logger if index == 0 and round_ == 0 else False)
            images, image_losses = module.all_reconstructions()  # (R, B, ...), (R, B)
            results.append((images, image_losses, module.objective.predicted_labels().view(restarts, cfg.batch_size)))
        candidates, losses, predicted = (torch.cat(parts) for parts in zip(*results, strict=True))
    return candidates, losses, predicted


def search_codes(
    cfg: DictConfig,
    model: nn.Module,
    gradient: list[Tensor],
    labels: Tensor,
    seed: int,
    generator: ConditionalGenerator,
    logger: Any = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``prior=gan``'s first stage (GIAS's latent search, Jeon et al., NeurIPS 2021, "Gradient Inversion with
    Generative Image Prior"; GGL, Li et al., CVPR 2022): ``gan.search_restarts`` batches of codes z (drawn N(0, 1)
    from ``(seed, "codes")``), optimised with Adam (``gan.search_lr``, ``gan.search_steps``) so that the gradient of
    G(z, ŷ), ŷ the recovered ``labels`` (B,), matches the client's under the method's distance; the method's pixel
    priors are off (the generator is the prior). Returns the ``restarts`` best batches (lowest summed loss) as
    :func:`fit_restarts` does, images (R, B, C, H, W), losses (R, B), labels (R, B), and their codes where the
    search ended, (R, B, latent_dim)."""
    searched = int(cfg.gan.search_restarts)
    images = GeneratedImages(generator, labels, cfg.gan.latent_clip)
    module = fit_generated(cfg, model, gradient, labels, derive_seed(seed, "codes"), searched, images, "search", logger)
    images, losses = module.all_reconstructions()  # (S, B, ...), (S, B)
    kept = losses.sum(dim=1).argsort()[: int(cfg.restarts)]
    codes = module.latents.detach().view(searched, len(labels), -1)[kept]
    return images[kept], losses[kept], labels.repeat(len(kept), 1), codes


def tune_generators(
    cfg: DictConfig,
    model: nn.Module,
    gradient: list[Tensor],
    labels: Tensor,
    seed: int,
    generator: ConditionalGenerator,
    codes: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``gan.refine`` with ``generator``: GIAS's parameter search (Jeon et al. 2021, §3.2) from the searched
    ``codes`` (R, B, latent_dim): each image's own copy of the generator (:class:`~privacy_attacks.attacks.inversion.
    gan.TunedGenerators`), its weights and code optimised with Adam (``gan.generator_lr``, ``gan.generator_steps``)
    under the method's distance, pixel priors off. Returns images (R, B, C, H, W), losses (R, B), labels (R, B)."""
    copies = TunedGenerators(generator, labels, codes.flatten(0, 1))
    seed = derive_seed(seed, "generators")
    module = fit_generated(cfg, model, gradient, labels, seed, len(codes), copies, "generator")
    images, losses = module.all_reconstructions()
    return images, losses, labels.repeat(len(codes), 1)


def fit_generated(
    cfg: DictConfig,
    model: nn.Module,
    gradient: list[Tensor],
    labels: Tensor,
    seed: int,
    restarts: int,
    parameterisation: nn.Module,
    stage: str,
    logger: Any = False,
) -> ReconstructionModule:
    """The engine over a generator's ``parameterisation`` of ``restarts`` batches, fitted with Adam at
    ``gan.<stage>_lr`` for ``gan.<stage>_steps`` under the method's distance, its pixel priors off."""
    module = build_module(
        cfg,
        model,
        gradient,
        labels,
        seed,
        restarts,
        parameterisation=parameterisation,
        optimizer=partial(torch.optim.Adam, lr=float(cfg.gan[f"{stage}_lr"])),
        steps=int(cfg.gan[f"{stage}_steps"]),
        priors={},
        signed_gradients=False,
        scheduler=None,
    )
    fit_reconstruction(module, cfg.trainer, logger=logger)
    return module


def register_restarts(candidates: Tensor, losses: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The restarts (R, B, C, H, W) with their images reordered within each batch to pair with the best restart's
    (lowest summed loss of ``losses`` (R, B)): the pairing of least pixel distance among images of the same label
    (``labels`` (R, B)), so that their pixel mean is a consensus of one image per slot (GradInversion's registration,
    here a permutation: the restarts fit one batch whose order is free). Returns the reordered candidates, losses
    and labels."""
    best = int(losses.sum(dim=1).argmin())
    orders = [
        best_assignment(candidates[r], candidates[best], labels[best][:, None] == labels[r][None, :])
        for r in range(len(candidates))
    ]
    index = torch.stack(orders)  # (R, B): restart r's image for slot i of the best restart
    rows = torch.arange(len(candidates), device=candidates.device)[:, None]
    return candidates[rows, index], losses[rows, index], labels[rows, index]


def public_mean_probabilities(cfg: DictConfig, model: nn.Module) -> Tensor | None:
    """p̄ (C,): the shared model's softmax averaged over the first ``label_public_images`` of the attacker's own
    images (:func:`~privacy_attacks.data.identity.attacker_training_images`, never a private one), which
    ``label_recovery=bias_counts`` needs to count repeated labels; None where labels are not recovered that way."""
    method = cfg.methods[cfg.method]
    if not method.recover_labels or cfg.label_recovery != "bias_counts" or cfg.batch_size == 1:
        return None
    device = next(model.parameters()).device
    public = attacker_training_images(cfg.data)[: cfg.label_public_images].float()
    with torch.no_grad():
        probabilities = torch.cat([model(chunk.to(device)).softmax(dim=-1) for chunk in public.split(500)])
    return probabilities.mean(dim=0)


def attacker_class_means(cfg: DictConfig) -> Tensor:
    """``init=class_mean``: the mean of the attacker's own images of each class, (K, C, H, W)
    (:func:`~privacy_attacks.data.identity.attacker_training_set`: no private image of either set), from which
    each dummy image starts at the mean of its recovered label."""
    images, labels = attacker_training_set(cfg.data)
    _, declared = data_shape(cfg.data)
    classes = declared if declared is not None else int(labels.max()) + 1
    means = torch.zeros(classes, *images.shape[1:])  # a class the attacker has no image of starts black
    for k in labels.unique().tolist():
        means[k] = images[labels == k].float().mean(dim=0)
    return means


def start_guesses(cfg: DictConfig, model: nn.Module) -> Callable[[list[Tensor], Tensor], Tensor] | None:
    """``(gradient, recovered labels (B,)) -> (B, C, H, W)``, each image's start: ``init=class_mean`` the attacker's
    mean image of its label (:func:`attacker_class_means`, computed once), ``init=gradient_decoder`` the decoded mean
    image of its label's images in the client's batch (:mod:`.last_layer`; the decoder trained once per shared model,
    batch size and attacker seed, cached); None for the other inits."""
    if cfg.methods[cfg.method].threat != "honest_server":
        return None
    if cfg.init == "class_mean":
        means = attacker_class_means(cfg)
        return lambda _gradient, labels: means[labels.cpu()]
    if cfg.init != "gradient_decoder":
        return None
    decoder = provision_gradient_decoder(
        model,
        lambda: attacker_training_set(cfg.data),
        {"data": data_name(cfg.data), "identity": data_identity(cfg.data), "images": "attacker_training"},
        int(cfg.batch_size),
        cfg.gradient_decoder,
        int(cfg.seed),
        cfg.paths.cache_dir,
        image_shape(cfg),
    )

    def decode(gradient: list[Tensor], labels: Tensor) -> Tensor:
        weight, bias = last_linear(model, gradient)
        return decoded_guess(decoder, weight, bias, labels, int(cfg.batch_size))

    return decode


def feature_finish(cfg: DictConfig, model: nn.Module) -> Callable[[list[Tensor], Tensor, Tensor, int], Tensor] | None:
    """``feature_fit.steps`` > 0: ``(gradient, labels (B,), images (B, C, H, W), seed) -> images``, each recovered
    class's images fitted to its last-layer features read off ``gradient`` (:func:`.last_layer.fit_class_features`;
    the mean feature where every class is present: over the first ``label_public_images`` of the attacker's own
    images); None where it is off."""
    if cfg.feature_fit.steps == 0:
        return None
    public = attacker_training_images(cfg.data)[: cfg.label_public_images].float()
    mean_feature = last_layer_inputs(model, public)[0].mean(dim=0)

    def finish(gradient: list[Tensor], labels: Tensor, images: Tensor, seed: int) -> Tensor:
        weight, bias = last_linear(model, gradient)
        read = read_class_features(weight, bias, labels, int(cfg.batch_size), mean_feature)
        return fit_class_features(model, images, labels, read.float(), cfg.feature_fit, seed)

    return finish


def alone_in_batch(labels: Tensor, batch_size: int) -> Tensor:
    """(N,) bool: whether each image of the consecutive client batches of ``batch_size`` in ``labels`` (N,) is the
    only one of its class in its batch (for scoring: ``recon/psnr_alone`` and ``recon/psnr_repeated``)."""
    batches = labels.view(-1, batch_size)
    same = batches.unsqueeze(2) == batches.unsqueeze(1)  # (clients, B, B)
    return (same.sum(dim=2) == 1).flatten()


def gradient_cosine(raw: list[Tensor], shared: list[Tensor]) -> float:
    """Cosine similarity of the shared gradient with the client's raw one, all tensors flattened into one vector:
    how much of the update a defended client still gives the federation (1: all of it)."""
    a, b = torch.cat([g.flatten() for g in raw]), torch.cat([g.flatten() for g in shared])
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def run(cfg: DictConfig, target: Target | None) -> dict[str, float]:
    """Attack ``num_batches`` simulated clients of ``batch_size`` private images each; score all images."""
    out = output_dir(cfg)
    model = shared_model(cfg, target)
    method = cfg.methods[cfg.method]
    if method.threat == "malicious_server":  # the server sends its clients the model behind an imprint block
        thresholds = brightness_thresholds(attacker_training_images(cfg.data), int(method.bins))
        model = ImprintedModel(model, image_shape(cfg), thresholds, float(method.scale)).eval().requires_grad_(False)
    model = model.to(run_device(cfg.trainer))
    locate_output_linear(model, image_shape(cfg))  # the layer labels and features are read from, declared first or not
    pool, pool_labels = private_pool(cfg)
    loggers = build_loggers(cfg)
    defense = defense_from_config(cfg, "client")  # one client defence for every client: its noise draws continue
    mean_probabilities = public_mean_probabilities(cfg, model)
    generator = image_prior(cfg, model)
    start_guess = start_guesses(cfg, model)
    finish = feature_finish(cfg, model)
    results = []
    for k in range(cfg.num_batches):
        batch = slice(k * cfg.batch_size, (k + 1) * cfg.batch_size)
        # The first client's optimisation curves go to TensorBoard (one curve per job).
        seed = derive_seed(cfg.seed, "client", k)  # the attacker's randomness for this client
        logger = loggers if k == 0 else False
        results.append(
            attack_batch(
                cfg,
                model,
                pool[batch],
                pool_labels[batch],
                seed,
                logger,
                defense,
                mean_probabilities,
                generator,
                start_guess,
                finish,
            )
        )
        log.info("client %d/%d: %.1f s", k + 1, cfg.num_batches, results[-1].seconds)
    count = cfg.num_batches * cfg.batch_size
    originals, original_labels = pool[:count], pool_labels[:count]
    images = torch.cat([r.images for r in results])
    labels = torch.cat([r.labels for r in results])
    scores = image_similarity(images, originals)
    seconds = sum(r.seconds for r in results)
    metrics = {
        "recon/psnr": scores["psnr"].mean().item(),
        "recon/psnr_median": scores["psnr"].median().item(),
        "recon/ssim": scores["ssim"].mean().item(),
        "recon/mse": scores["mse"].mean().item(),
        "recon/recovered_fraction": (scores["psnr"] >= RECOVERED_PSNR).float().mean().item(),
        "client/grad_cosine": sum(r.grad_cosine for r in results) / len(results),
        "recon/time_per_batch_s": seconds / cfg.num_batches,
        "recon/fit_time_s": seconds,
    }
    if (labels != UNKNOWN_LABEL).all():
        metrics["recon/label_acc"] = (labels == original_labels).float().mean().item()
    alone = alone_in_batch(original_labels, cfg.batch_size)
    for key, chosen in (("recon/psnr_alone", alone), ("recon/psnr_repeated", ~alone)):
        if chosen.any():  # batch 1: every image is alone, and there is no repeated one to average
            metrics[key] = scores["psnr"][chosen].mean().item()
    torch.save(
        {"images": images, "labels": labels, "originals": originals, "original_labels": original_labels},
        out / "reconstructions.pt",
    )
    shown = min(count, 16)
    titles = [
        f"{int(y)}→{int(p) if p != UNKNOWN_LABEL else '?'} {float(s):.0f}dB"
        for y, p, s in zip(original_labels[:shown], labels[:shown], scores["psnr"][:shown])
    ]
    title = (
        f"{cfg.method}, batch {cfg.batch_size}, {cfg.shared_model} ({cfg.model_state}): "
        f"PSNR {metrics['recon/psnr']:.1f} dB, {metrics['recon/recovered_fraction']:.0%} at >= {RECOVERED_PSNR:.0f} dB"
    )
    originals_figure(out / "reconstructions.png", originals[:shown], images[:shown], titles, title)
    # The originals above their reconstructions, and the swept hparams with the final metrics.
    log_image_grid(loggers, "recon/reconstructions", (originals[:shown], images[:shown]), int(cfg.steps))
    # Without a target (the shared model built from its own recipe) the target's recipe says nothing of this run.
    run_cfg = cfg if target is not None else OmegaConf.masked_copy(cfg, [key for key in cfg if key != "target"])
    finish_loggers(loggers, engine_hparams(cfg, HPARAMS), metrics, step=int(cfg.steps), cfg=run_cfg)
    log.info(
        "%s batch %d: PSNR %.2f dB (median %.2f), SSIM %.3f, %.0f%% at >= %.0f dB, label acc %s; %s",
        cfg.method,
        cfg.batch_size,
        metrics["recon/psnr"],
        metrics["recon/psnr_median"],
        metrics["recon/ssim"],
        100 * metrics["recon/recovered_fraction"],
        RECOVERED_PSNR,
        f"{metrics['recon/label_acc']:.2f}" if "recon/label_acc" in metrics else "not recovered",
        out,
    )
    return metrics
