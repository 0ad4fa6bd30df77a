"""The canaries of the one-run audit and the one target that trains on them.

``canaries`` images are drawn from the non-member pool of the target's split of the configured dataset's training
images (``data=``; images its recipe never trains on), relabelled at random with a wrong class among the data's
``num_classes`` for ``canary_kind=mislabelled`` (``clean``: their own label), and each
joins the target's training set by its own fair coin. Every draw comes from the audit's ``seed``
(:func:`privacy_attacks.seeding.derive_seed`): the canaries (``"canaries"``), their labels (``"canary_labels"``)
and the coins (``"canary_inclusion"``). The target recipe (with ``defense=dpsgd``: its DP-SGD) then trains once on
its members plus the canaries that came up IN, and is cached like any target, keyed by its recipe and the content of
those canaries.

``canary_kind=dirac`` (white-box, :mod:`.dirac`): the canaries are gradients, not images; the target trains on its
members alone under DP-SGD, the canaries inserted into each step's clipped sum, and what the auditor observed is
cached with the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks.attacks.membership.attack import training_set_size
from privacy_attacks.data.identity import data_shape, data_source
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.defenses import DPSGD, defense_from_config, recipe_with_defense
from privacy_attacks.errors import ConfigError
from privacy_attacks.harness import run_device
from privacy_attacks.seeding import generator
from privacy_attacks.targets import Target, provision_classifier

from .dirac import DiracCanaries, draw_dirac_canaries

log = logging.getLogger(__name__)
CANARY_KINDS = ("mislabelled", "clean", "dirac")


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
    return split_indices(cfg.data.val_size, cfg.data.split_seed, cfg.target.members, total)["nonmember"]


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
    data = data_source(cfg.data).load()  # the configured dataset's training images
    images, labels = data.train_images, data.train_labels
    canaries = draw_canaries(cfg, labels)
    extra = images[canaries.indices[canaries.included]], canaries.labels[canaries.included]
    log.info("The canary target trains on its members + %d canaries.", len(extra[1]))
    target = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "canary-target", extra)
    target.net.to(run_device(cfg.trainer))
    return target
