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
from privacy_attacks.attacks.membership.scores import chosen_score
from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.data.identity import data_identity, data_shape, data_source, training_set_size
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.defenses import DPSGD, defense_from_config, recipe_with_defense
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_node, run_device
from privacy_attacks.seeding import derive_seed, generator
from privacy_attacks.targets import Target, provision_classifier

from .crafted import craft_images, least_variance_mask, random_patterns
from .dirac import DiracCanaries, draw_dirac_canaries

log = logging.getLogger(__name__)


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
    """The dataset canaries of ``cfg`` (``canary_kind``: a :class:`DatasetCanaries` node), given the training set's
    labels (N,) (:meth:`DatasetCanaries.draw`)."""
    kind = canary_kind(cfg)
    if not isinstance(kind, DatasetCanaries):
        raise ConfigError(f"canary_kind={cfg.canary_kind} draws no canaries from the dataset's images.")
    return kind.draw(cfg, labels)


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
    """The image canaries of ``cfg`` and their images (m, C, H, W) (:meth:`ImageCanaries.images`)."""
    kind = canary_kind(cfg)
    if not isinstance(kind, ImageCanaries):
        raise ConfigError(f"canary_kind={cfg.canary_kind} has no images.")
    return kind.images(cfg)


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
    """The target recipe (``cfg.target`` with ``cfg.defense``'s training defence) trained on its members with the
    canaries of ``cfg`` (:meth:`CanaryKind.provision`); trained once and cached as ``canary-target-<hash>.pt`` under
    ``cfg.paths.cache_dir``, on the run's device. Its ``metrics`` are the recipe's own (``test/acc``, and with DP-SGD
    the accountant's ``privacy/epsilon`` for this training set)."""
    return canary_kind(cfg).provision(cfg)


def canary_kind(cfg: DictConfig) -> CanaryKind:
    """The kind of canary ``cfg.canary_kind`` names, built from its node under ``cfg.canary_kinds``;
    :class:`ConfigError` naming the choices for a name that is not there."""
    require_choice(cfg.canary_kind, list(cfg.canary_kinds), "canary_kind")
    name = cfg.canary_kind
    return build_node(cfg.canary_kinds[name], f"canary_kinds.{name}", kind=CanaryKind, what="a kind of canary")


Scored = tuple[Tensor, Tensor, Tensor, dict[str, float]]


class CanaryKind:
    """A kind of canary of the one-run audit: what joins the target's training with each canary that comes up IN,
    and what the auditor reads of each afterwards. A new kind is a subclass and a node under ``canary_kinds``
    (conf/attack/audit.yaml), chosen by ``canary_kind=<name>``."""

    def check(self, cfg: DictConfig, total: int | None) -> None:
        """:class:`ConfigError` before any work for settings this kind cannot run (``total``: the training set's
        size, None: the configured dataset's)."""

    def provision(self, cfg: DictConfig) -> Target:
        """The target recipe of ``cfg`` trained with the canaries (cached), on the run's device."""
        raise NotImplementedError

    def scores(self, cfg: DictConfig, target: Target) -> Scored:
        """Each canary's score, higher = IN, read on the trained ``target``: (scores (m,), coins (m,) bool,
        positions (m,), extra metrics)."""
        raise NotImplementedError


class ImageCanaries(CanaryKind):
    """Canaries that are labelled images: the target trains on its members plus the IN ones, and each canary is
    scored by the trained model's answer to it (``score``, a node of ``scores``, with the canary's label)."""

    def images(self, cfg: DictConfig) -> tuple[CanarySet, Tensor]:
        """The canaries of ``cfg`` and their images (m, C, H, W)."""
        raise NotImplementedError

    def provision(self, cfg: DictConfig) -> Target:
        canaries, images = self.images(cfg)
        extra = images[canaries.included], canaries.labels[canaries.included]
        log.info("The canary target trains on its members + %d canaries.", len(extra[1]))
        recipe = recipe_with_defense(cfg, "target")
        target = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "canary-target", extra)
        target.net.to(run_device(cfg.trainer))
        return target

    def scores(self, cfg: DictConfig, target: Target) -> Scored:
        canaries, images = self.images(cfg)
        log_probs = (
            in_batches(
                lambda chunk: target.net(chunk).double(),
                images,
                batch_size=int(cfg.data.eval_batch_size),
                device=net_device(target.net),
                out=None,
            )
            .log_softmax(dim=-1)
            .cpu()
        )
        scores = chosen_score(cfg.scores, cfg.score, "score")(log_probs, canaries.labels)
        fits = log_probs.argmax(dim=-1) == canaries.labels  # the canary's own label predicted
        included = canaries.included
        extra = {
            "audit/canary_fit_in": float(fits[included].float().mean()) if included.any() else 0.0,
            "audit/canary_fit_out": float(fits[~included].float().mean()) if (~included).any() else 0.0,
        }
        return scores, included, canaries.indices, extra


class DatasetCanaries(ImageCanaries):
    """Canaries drawn from the images the target's recipe never trains on (:func:`draw_canaries`), with a uniformly
    drawn wrong label (``wrong_labels``: a model must memorise it) or their own."""

    def __init__(self, wrong_labels: bool):
        self.wrong_labels = bool(wrong_labels)

    def check(self, cfg: DictConfig, total: int | None) -> None:
        pool = len(nonmember_pool(cfg, total))
        if cfg.canaries > pool:
            raise ConfigError(
                f"canaries={cfg.canaries} is more than the {pool} images target.members={cfg.target.members} leaves "
                f"outside the target's training set: lower canaries."
            )

    def draw(self, cfg: DictConfig, labels: Tensor) -> CanarySet:
        """The canaries of ``cfg`` (``canaries``, ``seed``), given the training set's labels (N,); the wrong labels
        are drawn among ``data.num_classes`` (the labels' largest + 1 where the config leaves it to the data)."""
        pool = nonmember_pool(cfg, len(labels))
        _, declared = data_shape(cfg.data)
        m, classes = int(cfg.canaries), declared if declared is not None else int(labels.max()) + 1
        indices = pool[torch.randperm(len(pool), generator=generator(cfg.seed, "canaries"))[:m]]
        canary_labels = labels[indices].clone()
        if self.wrong_labels:  # a uniformly drawn wrong class
            shift = torch.randint(1, classes, (m,), generator=generator(cfg.seed, "canary_labels"))
            canary_labels = (canary_labels + shift) % classes
        included = torch.rand(m, generator=generator(cfg.seed, "canary_inclusion")) < 0.5
        return CanarySet(indices, canary_labels, included)

    def images(self, cfg: DictConfig) -> tuple[CanarySet, Tensor]:
        data = data_source(cfg.data).load()  # the configured dataset's training images
        canaries = self.draw(cfg, data.train_labels)
        return canaries, data.train_images[canaries.indices]


class CraftedCanaries(ImageCanaries):
    """Images the auditor crafts (:func:`crafted_canaries`, :mod:`.crafted`; settings ``craft``)."""

    def check(self, cfg: DictConfig, total: int | None) -> None:
        craft = cfg.craft
        for key in ("pixels", "density"):
            value = craft[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
                raise ConfigError(f"craft.{key}={value!r} is not allowed: it must be a fraction in (0, 1].")
        require_int(craft.steps, "craft.steps", minimum=0)
        require_positive(craft.lr, "craft.lr")
        nonmember_pool(cfg, total)  # its images give the low-variance positions

    def images(self, cfg: DictConfig) -> tuple[CanarySet, Tensor]:
        return crafted_canaries(cfg)


class GradientCanaries(CanaryKind):
    """White-box Dirac canaries (:mod:`.dirac`): gradients inserted into DP-SGD's clipped sums, the target trained on
    its members alone; each is scored by what the auditor observed while it trained (``observation``: every iterate,
    read by ``dirac_score``, or the last), cached with the weights as the target's ``recorded``."""

    def check(self, cfg: DictConfig, total: int | None) -> None:
        check_dirac(cfg)

    def provision(self, cfg: DictConfig) -> Target:
        recorder = dirac_canaries(cfg)
        count = int(recorder.included.sum())
        log.info("The canary target trains on its members, %d Dirac canaries in its clipped sums.", count)
        recipe = recipe_with_defense(cfg, "target")
        target = provision_classifier(
            recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "canary-target", recorder=recorder
        )
        target.net.to(run_device(cfg.trainer))
        return target

    def scores(self, cfg: DictConfig, target: Target) -> Scored:
        recorded = target.recorded
        coordinates, included = draw_dirac_canaries(int(cfg.seed), int(cfg.canaries), check_dirac(cfg))
        recorded_coordinates = recorded.get("coordinates", coordinates)  # (the key holds their digest too)
        if "last_iterate" not in recorded or not torch.equal(recorded_coordinates, coordinates):
            raise cache.unusable(target.checkpoint, "holds no observations of this audit's Dirac canaries")
        key = "last_iterate" if cfg.observation == "last_iterate" else cfg.dirac_score
        extra = {"audit/canary_steps": float(recorded["steps"])}
        return recorded[key], included, coordinates, extra
