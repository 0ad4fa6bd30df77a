"""Output-based model inversion of every class (the lecture's first lab; Fredrikson et al., CCS 2015).

For each class ỹ an image x in [0, 1]^{C×H×W} (the configured data's shape; 1×28×28 on MNIST) is optimised to minimise
ℓ(f(x), ỹ) + λ · ℓ_TV(x) + the other priors, with the target f frozen. All classes (× restarts) are
one batch of the reconstruction engine (:mod:`privacy_attacks.engine.module`). ``python attack.py attack=inversion``.

Two independent judges score the reconstructions: the tuning judge (``evaluator``, whose accuracy the
defaults were chosen by) and the reporting judge (``judge``: another architecture, trained on the half
of the training pool the tuning judge never saw, from another seed), whose accuracy is the reported number. Both
are recipes trained on the same dataset as the target, built for its shape and classes.

``prior=gan`` searches the codes of a conditional generator trained on the attacker's public images instead of the
pixels (GMI, Zhang et al. 2020; the generator of PLG-MI, Yuan et al. 2023: :mod:`.gan`).

Writes ``reconstructions.pt`` ({"images": (K, C, H, W) in [0, 1], "labels": (K,), "class_names": the data's}),
``reconstructions.png`` and TensorBoard events; returns the ``inversion/*`` metrics.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torchmetrics.functional.classification import multiclass_accuracy

from privacy_attacks import cache
from privacy_attacks.attacks.inversion.figures import reconstruction_figure
from privacy_attacks.attacks.inversion.gan import GeneratedImages, check_gan, provision_generator, public_images
from privacy_attacks.attacks.inversion.objectives import ClassInversion
from privacy_attacks.attacks.inversion.selection import check_selection, select_restarts
from privacy_attacks.data.identity import data_identity, data_shape, data_source, recipe_members
from privacy_attacks.engine.metrics import (
    class_means,
    embedded_pool,
    image_similarity,
    nearest_distance,
    nearest_ssim,
    penultimate_features,
)
from privacy_attacks.engine.module import (
    ReconstructionModule,
    engine_from_config,
    engine_hparams,
    penalty_weights,
    validate_engine_config,
)
from privacy_attacks.engine.sweep import batch_note, fit_engine
from privacy_attacks.errors import ConfigError, require_choice, require_fraction, require_int, require_positive
from privacy_attacks.harness import build_loggers, finish_loggers, log_image_grid
from privacy_attacks.io import output_dir
from privacy_attacks.targets import Target, provision_classifier
from privacy_attacks.training import validate_recipe

log = logging.getLogger(__name__)
# The attack's own swept keys, logged as TensorBoard hparams with the engine's (:func:`engine_hparams`).
HPARAMS = ("loss", "prior", "gan.public", "selection", "weight_noise", "feature_dropout")
PRIORS = ("pixels", "gan")


def validate(cfg: DictConfig) -> None:
    """ConfigError for an unknown loss, a bad ``samples_per_class``, or a bad engine setting
    (:func:`validate_engine_config`: init, optimizer, prior weights, steps), before any work."""
    require_choice(cfg.loss, cfg.losses, "loss")
    require_int(cfg.samples_per_class, "samples_per_class")
    require_positive(cfg.weight_noise, "weight_noise", allow_zero=True)
    require_fraction(cfg.feature_dropout, "feature_dropout")
    require_choice(cfg.prior, PRIORS, "prior")
    if cfg.prior == "gan":
        check_gan(cfg.gan, data_source(cfg.data))
    check_selection(cfg.selection, cfg.selection_views, cfg.selection_degrees, cfg.selection_scale)
    check_panel(cfg.get("panel") or {}, cfg.judge)
    check_judge_seeds(cfg.judge_seeds, cfg.judge.seed)
    validate_engine_config(cfg)
    # The judges' windows of the training pool and networks fit the data (a small pool needs smaller halves).
    judges = {
        "evaluator": cfg.evaluator,
        "judge": cfg.judge,
        **{f"panel.{n}": r for n, r in (cfg.get("panel") or {}).items()},
    }
    for key, recipe in judges.items():
        validate_recipe(recipe, key, cfg.data)


def check_judge_seeds(seeds: ListConfig | list, judge_seed: int) -> None:
    """ConfigError for ``judge_seeds`` that are not a list of distinct whole numbers other than the reporting judge's
    own seed, before any work."""
    if not isinstance(seeds, (list, ListConfig)):
        raise ConfigError(f"judge_seeds must be a list of seeds, e.g. [3,4], got {seeds!r}.")
    for seed in seeds:
        require_int(seed, "judge_seeds", minimum=0)
    if len(set(seeds)) < len(seeds) or judge_seed in seeds:
        raise ConfigError(
            f"judge_seeds must be distinct seeds other than the reporting judge's own ({judge_seed}), "
            f"got {list(seeds)}."
        )


def check_panel(panel: DictConfig | dict, judge: DictConfig) -> None:
    """ConfigError for a tuning-panel judge that trains on any image of the reporting judge's window of the training
    pool (``members`` from ``member_offset``; every image from it when ``members`` is null), before any work."""
    for name, recipe in panel.items():
        if _windows_overlap(recipe, judge):
            raise ConfigError(
                f"panel.{name} trains on images the reporting judge trains on (members={recipe.get('members')}, "
                f"member_offset={recipe.get('member_offset', 0)} against the judge's {judge.get('members')}, "
                f"{judge.get('member_offset', 0)}): a tuning judge must never see the reporting judge's half."
            )


def _windows_overlap(first: DictConfig, second: DictConfig) -> bool:
    """Whether two recipes' windows of the training pool, [offset, offset + members), share an image."""
    windows = []
    for recipe in (first, second):
        start = int(recipe.get("member_offset", 0) or 0)
        members = recipe.get("members")
        windows.append((start, float("inf") if members is None else start + int(members)))
    return max(start for start, _ in windows) < min(end for _, end in windows)


def build_module(
    cfg: DictConfig, net: torch.nn.Module, labels: torch.Tensor, parameterisation: torch.nn.Module | None = None
) -> ReconstructionModule:
    """The engine for ``cfg`` (loss, priors, init, optimizer, steps, restarts) inverting ``net`` for ``labels``, over
    images of the data's shape (``parameterisation``: over a generator's codes instead)."""
    similarity = instantiate(cfg.losses[cfg.loss])
    augmentation = {"weight_noise": cfg.weight_noise, "feature_dropout": cfg.feature_dropout}
    objective = ClassInversion(net, labels, similarity, inverted_shape(cfg), **augmentation)
    return engine_from_config(cfg, objective, log_prefix="inversion", parameterisation=parameterisation)


def generative_prior(cfg: DictConfig, target: Target, labels: torch.Tensor, num_classes: int):
    """``prior=gan``: the codes' parameterisation (:class:`~.gan.GeneratedImages`) of the generator trained on the
    attacker's public images for ``target`` (cached), and its metrics (``inversion/public_queries``)."""
    generator, metrics = provision_generator(
        target.net,
        inverted_shape(cfg),
        num_classes,
        lambda: public_images(data_source(cfg.data), cfg.gan.public),
        {"data": cfg.data.name, "identity": data_identity(cfg.data)},
        cfg.gan,
        int(cfg.seed),
        cfg.trainer,
        cfg.paths.cache_dir,
    )
    device = next(target.net.parameters()).device
    return GeneratedImages(generator, labels, cfg.gan.latent_clip).to(device), metrics


def inverted_shape(cfg: DictConfig) -> tuple[int, ...]:
    """(C, H, W) of the reconstructions: the data's declared shape, else its images' (read once)."""
    shape, _ = data_shape(cfg.data)
    if shape is not None:
        return shape
    return tuple(data_source(cfg.data).load().train_images.shape[1:])


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Invert every class of ``target``; score with the target, the two judges and the training data."""
    out = output_dir(cfg)
    evaluator = provision_classifier(cfg.evaluator, cfg.data, cfg.trainer, cfg.paths.cache_dir, "evaluator")
    judge = provision_classifier(cfg.judge, cfg.data, cfg.trainer, cfg.paths.cache_dir, "judge")
    with torch.no_grad():  # the target's own output size: any network, however its config names its classes
        device = next(target.net.parameters()).device
        num_classes = int(target.net(torch.zeros(1, *inverted_shape(cfg), device=device)).shape[-1])
    labels = torch.arange(num_classes).repeat_interleave(int(cfg.samples_per_class))
    parameterisation, prior_metrics = None, {}
    if cfg.prior == "gan":
        parameterisation, prior_metrics = generative_prior(cfg, target, labels, num_classes)
    generators = {int(cfg.seed): parameterisation}  # each job's generator is trained from its own seed

    def parameterisation_for(job: DictConfig) -> GeneratedImages | None:
        if job.prior == "gan" and int(job.seed) not in generators:
            generators[int(job.seed)] = generative_prior(job, target, labels, num_classes)[0]
        return generators[int(job.seed)] if job.prior == "gan" else None

    loggers = build_loggers(cfg)
    # Alone, or with the other jobs of its group under hydra/launcher=vectorised; about 50 points per loss curve.
    module, fit_time, batched = fit_engine(
        cfg,
        lambda job: build_module(job, target.net, labels, parameterisation_for(job)),
        cfg.trainer,
        loggers,
        log_every=max(1, cfg.steps // 50),
    )
    candidates, losses = module.all_reconstructions()  # (R, N, C, H, W), (R, N)
    selection = (cfg.selection, cfg.selection_views, cfg.selection_degrees, cfg.selection_scale, int(cfg.seed))
    images = select_restarts(candidates, losses, target.net, labels, *selection).cpu()

    # Scored where the target runs (on a GPU, the passes over the 55,000 training images take milliseconds).
    private = private_pool(cfg, num_classes, device)
    pool, means = private["pool"], private["means"]
    pool_key = ("judge", cache.weights_digest(judge.net), private["digest"], str(device))
    on = {"images": images.to(device), "labels": labels.to(device), **private}
    target.net.to(device), evaluator.net.to(device), judge.net.to(device)  # a fit may have left the target on the CPU
    metrics, confidence = score(
        on["images"], on["labels"], target.net, evaluator.net, on["means"], on["pool"], on["pool_labels"]
    )
    metrics.update(judge_metrics(on["images"], on["labels"], judge.net))
    metrics.update(judge_draw_metrics(on["images"], on["labels"], metrics, provision_judge_draws(cfg, device)))
    metrics.update(panel_metrics(on["images"], on["labels"], provision_panel(cfg, device)))
    pixel, nearest = nearest_distance(on["images"], on["labels"], on["pool"], on["pool_labels"])
    judge_features = penultimate_features(judge.net)  # the pool's, once per sweep process (embedded_pool)
    pool_features = embedded_pool(on["pool"], judge_features, pool_key)
    feature, _ = nearest_distance(
        on["images"], on["labels"], on["pool"], on["pool_labels"], judge_features, image_features=pool_features
    )
    confidence = confidence.cpu()
    kept = with_training_images(means.cpu(), labels.cpu())  # as in score()
    metrics["inversion/knn_pixel_dist"] = pixel[kept].mean().item()
    metrics["inversion/knn_judge_dist"] = feature[kept].mean().item()
    metrics["inversion/fit_time_s"] = fit_time  # under hydra/launcher=vectorised: its share of its group's fit
    metrics.update(prior_metrics)

    class_names = data_source(cfg.data).load().class_names
    torch.save({"images": images, "labels": labels, "class_names": list(class_names or [])}, out / "reconstructions.pt")
    search = f"prior=gan ({cfg.gan.public})" if cfg.prior == "gan" else f"init={cfg.init} tv_lambda={cfg.tv_lambda}"
    if cfg.l2_border > 0 and cfg.l2_lambda > 0:
        search += f" l2_lambda={cfg.l2_lambda}·(1+{cfg.l2_border}·r^{cfg.l2_border_power})"
    if cfg.augment_degrees > 0:
        search += f" augment={cfg.augment_degrees}°/{cfg.augment_scale}"
    if cfg.coarse_block > 1 and cfg.prior == "pixels":  # a projection: pixels only
        search += f" coarse={cfg.coarse_block}px/{cfg.coarse_steps} steps"
    if cfg.selection != "loss":
        search += f" selection={cfg.selection}"
    if cfg.weight_noise > 0 or cfg.feature_dropout > 0:
        search += f" weight_noise={cfg.weight_noise} feature_dropout={cfg.feature_dropout}"
    for key in penalty_weights(cfg).values():  # any other penalty at work, a new prior's included
        weight = OmegaConf.select(cfg, key)
        if key not in search and isinstance(weight, (int, float)) and weight > 0:
            search += f" {key}={weight}"
    title = f"loss={cfg.loss} {search}: evaluator {metrics['inversion/evaluator_acc']:.0%}"
    first = first_of_each_class(labels)  # the figure shows one sample per class
    shown_means = means.cpu().nan_to_num(0.0)  # a class without a training image: a black mean and nearest image
    nearest_images = pool[nearest[first].to(pool.device)].cpu() * kept[first].view(-1, 1, 1, 1)
    reconstruction_figure(
        out / "reconstructions.png",
        images[first],
        labels[first],
        shown_means,
        confidence[first],
        title,
        class_names,
        nearest=nearest_images,
    )
    # The reconstructions, a row of classes for each of the first samples (at most 10), above the class means; the
    # swept hparams with the final metrics at the last step.
    per_class = int(cfg.samples_per_class)
    rows = [images[sample::per_class] for sample in range(min(per_class, 10))]
    log_image_grid(loggers, "inversion/reconstructions", (*rows, shown_means), int(cfg.steps))
    finish_loggers(loggers, engine_hparams(cfg, HPARAMS), metrics, step=int(cfg.steps))
    # A tuning run (with a panel) prints the panel's accuracy, not the reporting judge's.
    panel = cfg.get("panel")
    shown = ("tuning panel", "inversion/panel_acc") if panel else ("reporting judge", "inversion/report_judge_acc")
    log.info(
        "inversion: target acc %.2f, tuning judge acc %.2f, %s acc %.2f, SSIM to class mean %.3f; %s%s",
        metrics["inversion/target_acc"],
        metrics["inversion/evaluator_acc"],
        shown[0],
        metrics[shown[1]],
        metrics["inversion/ssim_class_mean"],
        out,
        batch_note(batched, "fitted"),
    )
    return metrics


def provision_panel(cfg: DictConfig, device: torch.device) -> dict[str, torch.nn.Module]:
    """The tuning panel's judges (``cfg.panel``: name -> classifier recipe, ``conf/panel/``), trained and cached like
    the tuning judge (they share its cache name), frozen, on ``device``."""
    panel = cfg.get("panel") or {}
    return {
        name: provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "evaluator").net.to(device)
        for name, recipe in panel.items()
    }


@torch.no_grad()
def panel_metrics(images: torch.Tensor, labels: torch.Tensor, panel: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Each panel judge's accuracy on reconstructions (K, C, H, W) for ``labels`` (K,), ``inversion/panel_<name>_acc``,
    and their mean, ``inversion/panel_acc`` (nothing without a panel)."""
    if not panel:
        return {}
    accuracies = {f"inversion/panel_{name}_acc": recognised(net, images, labels) for name, net in panel.items()}
    return {"inversion/panel_acc": sum(accuracies.values()) / len(accuracies), **accuracies}


@torch.no_grad()
def recognised(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of reconstructions (K, C, H, W) that the frozen ``net`` reads as their ``labels`` (K,)."""
    logits = net.eval()(images)
    return multiclass_accuracy(logits, labels, logits.shape[1], average="micro").item()


def provision_judge_draws(cfg: DictConfig, device: torch.device) -> dict[int, torch.nn.Module]:
    """More draws of the reporting judge's recipe (``judge_seeds``): its architecture and its half of the training
    pool, trained from each other seed and cached under its name, frozen, on ``device``; seed -> net."""
    draws = {}
    for seed in cfg.judge_seeds:
        recipe = cfg.judge.copy()
        with open_dict(recipe):
            recipe.seed = int(seed)
        draws[int(seed)] = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "judge").net
    return {seed: net.to(device) for seed, net in draws.items()}


@torch.no_grad()
def judge_draw_metrics(
    images: torch.Tensor, labels: torch.Tensor, metrics: dict[str, float], draws: dict[int, torch.nn.Module]
) -> dict[str, float]:
    """Each other draw's accuracy on reconstructions (K, C, H, W) for ``labels`` (K,),
    ``inversion/report_judge_seed<seed>_acc``, and ``inversion/report_judges_acc``: the mean over the reporting
    judge (its accuracy read from ``metrics``) and every draw (nothing without draws). Two draws of one recipe can
    read the same reconstructions 0.15 apart (docs/inversion.md), so the mean is the steadier number."""
    if not draws:
        return {}
    accuracies = {f"inversion/report_judge_seed{s}_acc": recognised(net, images, labels) for s, net in draws.items()}
    mean = (metrics["inversion/report_judge_acc"] + sum(accuracies.values())) / (1 + len(accuracies))
    return {"inversion/report_judges_acc": mean, **accuracies}


_PRIVATE_POOL: dict[tuple, dict] = {}


def private_pool(cfg: DictConfig, num_classes: int, device: torch.device) -> dict:
    """The target's training images and labels (M, C, H, W), (M,), its class means (num_classes, C, H, W), all on
    ``device``, and the images' digest: what scoring compares reconstructions with. The last one built stays in memory,
    so the jobs of a sweep run in one process take them once (indexing and hashing 55,000 images cost a CPU job a
    second or more)."""
    key = (
        repr(OmegaConf.to_container(cfg.data, resolve=True)),
        cfg.target.get("members"),
        cfg.target.get("member_offset", 0),
        num_classes,
        str(device),
    )
    if key not in _PRIVATE_POOL:
        _PRIVATE_POOL.clear()
        pool, pool_labels = recipe_members(cfg.data, cfg.target)
        missing = sorted(set(range(num_classes)) - set(pool_labels.unique().tolist()))
        if missing:
            log.warning(
                "class(es) %s have no image among the target's %d training images: the metrics that compare with "
                "training images (class mean, nearest image, KNN distances) leave their reconstructions out.",
                ", ".join(map(str, missing)),
                len(pool_labels),
            )
        _PRIVATE_POOL[key] = {
            "pool": pool.to(device),
            "pool_labels": pool_labels.to(device),
            "means": class_means(pool, pool_labels, num_classes).to(device),
            "digest": cache.tensor_digest(pool),
        }
    return _PRIVATE_POOL[key]


@torch.no_grad()
def score(
    images: torch.Tensor,
    labels: torch.Tensor,
    target: torch.nn.Module,
    evaluator: torch.nn.Module,
    means: torch.Tensor,
    pool: torch.Tensor,
    pool_labels: torch.Tensor,
) -> tuple[dict[str, float], torch.Tensor]:
    """The ``inversion/*`` metrics of reconstructions (K, C, H, W) for ``labels`` (K,), and the target's
    confidences (K,)."""
    num_classes = len(means)
    target_probs = target.eval()(images).softmax(dim=-1)
    evaluator_probs = evaluator.eval()(images).softmax(dim=-1)
    confidence = target_probs.gather(1, labels[:, None]).squeeze(1)
    kept = with_training_images(means, labels)
    to_mean = image_similarity(images[kept], means[labels[kept]])
    metrics = {
        "inversion/target_acc": multiclass_accuracy(target_probs, labels, num_classes, average="micro").item(),
        "inversion/target_confidence": confidence.mean().item(),
        "inversion/evaluator_acc": multiclass_accuracy(evaluator_probs, labels, num_classes, average="micro").item(),
        "inversion/evaluator_confidence": evaluator_probs.gather(1, labels[:, None]).mean().item(),
        "inversion/ssim_class_mean": to_mean["ssim"].mean().item(),
        "inversion/psnr_class_mean": to_mean["psnr"].mean().item(),
        "inversion/mse_class_mean": to_mean["mse"].mean().item(),
        "inversion/ssim_nearest_train": nearest_ssim(images[kept], labels[kept], pool, pool_labels).mean().item(),
    }
    return metrics, confidence


def with_training_images(means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which reconstructions (labels (K,)) are of a class with training images, (K,) bool: a class without one (its
    mean (num_classes, C, H, W) NaN; :func:`private_pool` warns of it) has no mean and no nearest image, so its
    reconstructions are left out of the metrics that compare with training images."""
    return ~means.isnan().flatten(1).any(dim=1)[labels]


def first_of_each_class(labels: torch.Tensor) -> torch.Tensor:
    """Positions (C,) of each class's first sample in ``labels`` (K,), in class order."""
    return torch.stack([torch.nonzero(labels == c)[0, 0] for c in labels.unique()])


@torch.no_grad()
def judge_metrics(images: torch.Tensor, labels: torch.Tensor, judge: torch.nn.Module) -> dict[str, float]:
    """The reporting judge's view of reconstructions (K, C, H, W) for ``labels`` (K,): ``inversion/report_judge_acc``
    (the fraction it recognises: the attack accuracy of model-inversion papers, over every sample of every class),
    ``inversion/report_judge_top5_acc`` (the class among its 5 most probable; left out with 5 classes or fewer, where
    it is 1 whatever the images) and ``inversion/report_judge_confidence`` (its mean probability of the class)."""
    probs = judge.eval()(images).softmax(dim=-1)
    classes = probs.shape[1]
    metrics = {
        "inversion/report_judge_acc": multiclass_accuracy(probs, labels, classes, average="micro").item(),
        "inversion/report_judge_confidence": probs.gather(1, labels[:, None]).mean().item(),
    }
    if classes > 5:
        top5 = multiclass_accuracy(probs, labels, classes, top_k=5, average="micro")
        metrics["inversion/report_judge_top5_acc"] = top5.item()
    return metrics
