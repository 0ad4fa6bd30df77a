"""The canaries of the one-run audit and the one target that trains on them.

``canaries`` images are drawn from the non-member pool of the target's split of the configured dataset's training
images (``data=``; images its recipe never trains on), relabelled at random with a wrong class among the data's
``num_classes`` for ``canary_kind=mislabelled`` (``clean``: their own label), and each
joins the target's training set by its own fair coin. Every draw comes from the audit's ``seed``
(:func:`privacy_attacks.seeding.derive_seed`): the canaries (``"canaries"``), their labels (``"canary_labels"``)
and the coins (``"canary_inclusion"``). The target recipe (with ``defense=dpsgd``: its DP-SGD) then trains once on
its members plus the canaries that came up IN, and is cached like any target, keyed by its recipe and the content of
those canaries.

``canary_kind=crafted`` (:mod:`.crafted`): the canaries are images the auditor crafts, sparse random patterns where
its own images vary least (optionally optimised against a reference model of its own, ``craft.steps``); they are
crafted once and cached (``canaries-<hash>.pt``), and the target trains on the IN ones as on image canaries.

``canary_kind=dirac`` (white-box, :mod:`.dirac`): the canaries are gradients, not images; the target trains on its
members alone under DP-SGD, the canaries inserted into each step's clipped sum, and what the auditor observed is
cached with the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from privacy_attacks import cache
from privacy_attacks.attacks.membership.attack import training_set_size
from privacy_attacks.data.identity import data_identity, data_shape, data_source
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.defenses import DPSGD, defense_from_config, recipe_with_defense
from privacy_attacks.errors import ConfigError
from privacy_attacks.harness import run_device
from privacy_attacks.seeding import derive_seed, generator
from privacy_attacks.targets import Target, provision_classifier

from .crafted import craft_images, least_variance_mask, random_patterns
from .dirac import DiracCanaries, draw_dirac_canaries

log = logging.getLogger(__name__)
CANARY_KINDS = ("mislabelled", "clean", "crafted", "dirac")


@dataclass(frozen=True)
class CanarySet:
    """The audit's canaries.

    Attributes:
        indices: (m,) long, their positions in the dataset's training set (non-members of the target's recipe).
        labels: (m,) long, the labels they are trained and scored with (wrong ones for mislabelled canaries).
        included: (m,) bool, the coins: True for the canaries the target trains on.
    """

    indices: Tensor
    labels: Tensor
    included: Tensor


def nonmember_pool(cfg: DictConfig, total: int | None = None) -> Tensor:
    """Positions of the ``total`` training images (None: the configured dataset's) the target's recipe never trains
    on (its split's non-members)."""
    if cfg.target.get("members") is None:
        raise ConfigError(
            "attack=audit draws its canaries from the images the target never trains on: set target.members "
            "(e.g. 1000)."
        )
    if total is None:
        total = training_set_size(cfg.data)
    offset = cfg.target.get("member_offset", 0) or 0  # where the target's members start, as its data module takes them
    split = split_indices(cfg.data.val_size, cfg.data.split_seed, cfg.target.members, total, offset, key="target")
    return split["nonmember"]


def draw_canaries(cfg: DictConfig, labels: Tensor) -> CanarySet:
    """The canaries of ``cfg`` (``canaries``, ``canary_kind``, ``seed``), given the training set's labels (N,); the
    wrong labels are drawn among ``data.num_classes`` (the labels' largest + 1 where the config leaves it to the
    data)."""
    pool = nonmember_pool(cfg, len(labels))
    _, declared = data_shape(cfg.data)
    m, classes = int(cfg.canaries), declared if declared is not None else int(labels.max()) + 1
    indices = pool[torch.randperm(len(pool), generator=generator(cfg.seed, "canaries"))[:m]]
    canary_labels = labels[indices].clone()
    if cfg.canary_kind == "mislabelled":  # a uniformly drawn wrong class
        shift = torch.randint(1, classes, (m,), generator=generator(cfg.seed, "canary_labels"))
        canary_labels = (canary_labels + shift) % classes
    included = torch.rand(m, generator=generator(cfg.seed, "canary_inclusion")) < 0.5
    return CanarySet(indices, canary_labels, included)


def reference_recipe(cfg: DictConfig) -> DictConfig:
    """The auditor's reference model for crafting canaries: the target's recipe (``cfg.target``, no defence) with a
    seed of its own, derived from the audit's (``"canary_reference"``)."""
    recipe = OmegaConf.create(OmegaConf.to_container(cfg.target, resolve=True))
    recipe.seed = derive_seed(int(cfg.seed), "canary_reference") % 2**31
    return recipe


def crafted_canaries(cfg: DictConfig) -> tuple[CanarySet, Tensor]:
    """The crafted canaries of ``cfg`` (:mod:`.crafted`; ``canaries``, ``craft``, ``seed``) and their images
    (m, C, H, W), cached as ``canaries-<hash>.pt`` keyed by the settings (and, with ``craft.steps`` > 0, by the
    auditor's reference model they were optimised against: :func:`reference_recipe`, trained and cached as
    ``canary-reference-<hash>.pt``). Their ``indices`` are 0 … m − 1 (they are not images of the dataset)."""
    m, craft = int(cfg.canaries), cfg.craft
    data = data_source(cfg.data).load()  # the configured dataset's training images
    _, declared = data_shape(cfg.data)
    classes = declared if declared is not None else int(data.train_labels.max()) + 1
    labels = torch.randint(0, classes, (m,), generator=generator(cfg.seed, "canary_labels"))
    included = torch.rand(m, generator=generator(cfg.seed, "canary_inclusion")) < 0.5
    spec = {
        "data": data_identity(cfg.data),
        "split": {"val_size": int(cfg.data.val_size), "split_seed": int(cfg.data.split_seed)},
        "members": int(cfg.target.members),
        "seed": int(cfg.seed),
        "canaries": m,
        "classes": classes,
        "craft": {key: craft[key] for key in ("pixels", "density", "steps", "lr")},
    }
    reference = None
    if craft.steps > 0:
        recipe, cache_dir = reference_recipe(cfg), cfg.paths.cache_dir
        reference = provision_classifier(recipe, cfg.data, cfg.trainer, cache_dir, "canary-reference")
        spec["reference"] = reference.checkpoint.name

    def create(path):
        mask = least_variance_mask(data.train_images[nonmember_pool(cfg, len(data.train_labels))], craft.pixels)
        patterns = random_patterns(mask, m, int(cfg.seed), float(craft.density))
        log.info("Crafting %d canaries on %d low-variance positions.", m, int(mask.sum()))
        images = patterns
        if reference is not None:
            net = reference.net.to(run_device(cfg.trainer))
            images = craft_images(net, patterns, labels, mask, int(craft.steps), float(craft.lr))
        cache.save(path, {"images": images, "spec": spec})
        return images

    path = cache.cache_path(cfg.paths.cache_dir, "canaries", spec)
    images = cache.provision(path, create=create, load=lambda path: cache.read(path)["images"])[0]
    return CanarySet(torch.arange(m), labels, included), images


def canaries_with_images(cfg: DictConfig) -> tuple[CanarySet, Tensor]:
    """The image canaries of ``cfg`` and their images (m, C, H, W): the dataset's own non-member images for
    ``mislabelled`` and ``clean`` (:func:`draw_canaries`), the auditor's for ``crafted`` (:func:`crafted_canaries`)."""
    if cfg.canary_kind == "crafted":
        return crafted_canaries(cfg)
    data = data_source(cfg.data).load()  # the configured dataset's training images
    canaries = draw_canaries(cfg, data.train_labels)
    return canaries, data.train_images[canaries.indices]


def trainable_parameters(recipe: DictConfig) -> int:
    """How many trainable parameters the recipe's network has (the coordinates Dirac canaries can take)."""
    return sum(p.numel() for p in instantiate(recipe.net).parameters() if p.requires_grad)


def check_dirac(cfg: DictConfig) -> int:
    """:class:`ConfigError` unless ``canary_kind=dirac`` meets DP-SGD (its canaries join the clipped sum) and the
    network has at least ``canaries`` parameters; returns that parameter count."""
    if not isinstance(defense_from_config(cfg), DPSGD):
        raise ConfigError(
            "canary_kind=dirac inserts its canaries into DP-SGD's clipped sum: set defense=dpsgd (a grid point such "
            "as defense=grid/dpsgd_eps8, or defense=grid/dpsgd_no_noise for clipping and sampling without noise)."
        )
    parameters = trainable_parameters(recipe_with_defense(cfg, "target"))
    if cfg.canaries > parameters:
        raise ConfigError(
            f"canaries={cfg.canaries} Dirac canaries need as many coordinates, but the target's network has "
            f"{parameters} trainable parameters: lower canaries."
        )
    return parameters


def dirac_canaries(cfg: DictConfig) -> DiracCanaries:
    """The audit's Dirac canaries (:class:`~.dirac.DiracCanaries`) for the target recipe of ``cfg``."""
    coordinates, included = draw_dirac_canaries(int(cfg.seed), int(cfg.canaries), check_dirac(cfg))
    return DiracCanaries(coordinates, included, int(cfg.seed))


def provision_canary_target(cfg: DictConfig) -> Target:
    """The target recipe (``cfg.target`` with ``cfg.defense``'s training defence) trained on its members and the
    canaries of ``cfg`` that came up IN (:func:`~privacy_attacks.targets.provision_classifier` with them as
    ``extra_train``); trained once and cached as ``canary-target-<hash>.pt`` under ``cfg.paths.cache_dir``, on the
    run's device. Its ``metrics`` are the recipe's own (``test/acc``, and with DP-SGD the accountant's
    ``privacy/epsilon`` for this training set). ``canary_kind=dirac``: trained on its members alone, the canaries in
    its clipped sums (:func:`dirac_canaries`); the auditor's observations are its ``recorded``."""
    recipe = recipe_with_defense(cfg, "target")
    if cfg.canary_kind == "dirac":
        recorder = dirac_canaries(cfg)
        count = int(recorder.included.sum())
        log.info("The canary target trains on its members, %d Dirac canaries in its clipped sums.", count)
        target = provision_classifier(
            recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "canary-target", recorder=recorder
        )
        target.net.to(run_device(cfg.trainer))
        return target
    canaries, images = canaries_with_images(cfg)
    extra = images[canaries.included], canaries.labels[canaries.included]
    log.info("The canary target trains on its members + %d canaries.", len(extra[1]))
    target = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "canary-target", extra)
    target.net.to(run_device(cfg.trainer))
    return target
