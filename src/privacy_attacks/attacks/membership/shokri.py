"""Shadow-model membership attack: Shokri, Stronati, Song & Shmatikov 2017, "Membership inference
attacks against machine learning models".

The attacker trains ``num_shadows`` shadow models like the target (same recipe, same training-set
size) on its own labelled images; each image is IN for half of the shadows and OUT for the other
half. An attack classifier learns shadow outputs on IN (member = 1) versus OUT (0) images; Shokri
et al. train one per class (``per_class=true``), one for all classes is the default. It is then
applied to the target's answers on the evaluation set.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch

from privacy_attacks.errors import ConfigError, is_integer
from privacy_attacks.seeding import derive_seed, generator

from .base import AttackContext, AttackOutput, MembershipAttack, config_key
from .classifier import fit_attack_classifier
from .scores import FeatureFunction, attack_features, chosen_features
from .shadow_models import ShadowModels, balanced_in_masks, provision_shadow_models, subset_indices


def check_shadow_count(count: int, key: str = "num_shadows") -> None:
    """:class:`ConfigError` unless ``count`` is an even integer >= 2 (IN/OUT pairs); the message names ``key``, the
    config key the user set it with (``num_shadows``, ``num_ref_models``, ``methods.shadow.num_shadows``)."""
    if not is_integer(count) or count < 2 or count % 2:
        raise ConfigError(f"{key}={count!r} is not allowed: it must be an even integer >= 2 (IN/OUT pairs).")


def shadow_seeds(seed: int, num_shadows: int) -> list[int]:
    """Shadow model ``s``'s own seed, derived from the attack's ``seed`` (never the target's)."""
    return [derive_seed(seed, "shadow", s) for s in range(num_shadows)]


def offline_shadow_models(context: AttackContext, num_shadows: int) -> ShadowModels:
    """Shadow models on the attacker's own images only: the first 2 x ``train_size`` of them, each
    model on a random half (balanced: every image IN for half the models). Cached on disk; Shokri's
    attack and offline LiRA with the same count share them."""
    population = 2 * context.train_size
    masks = balanced_in_masks(population, num_shadows, generator(context.seed, "shadow_masks", "offline"))
    return provision_shadow_models(
        context.recipe,
        context.attacker_images[:population],
        context.attacker_labels[:population],
        subset_indices(masks),
        shadow_seeds(context.seed, num_shadows),
        context.cache_dir,
        context.device,
    )[0]


class ShadowAttack(MembershipAttack):
    """Shokri et al. 2017 shadow-model attack.

    Args:
        num_shadows: shadow models (even).
        features: attack-classifier features, names of ``attack_features``.
        attack_features: name -> feature function, (log_probs (N, C), labels (N,)) -> (N, d): the config's
            ``attack_features`` (conf/attack/membership.yaml), built.
        per_class: one attack classifier per true class (Shokri et al.) instead of one for all.
        hidden, epochs, lr: the attack classifiers' MLP widths, epochs and learning rate.
        keys: the config key of an argument, named in its errors, where it is not the argument's own name
            (``{"num_shadows": "methods.shadow.num_shadows"}``); see :func:`~.base.config_key`.
    """

    shadow_answers = True

    def __init__(
        self,
        features: Sequence[str],
        attack_features: Mapping[str, FeatureFunction],
        num_shadows: int = 8,
        per_class: bool = False,
        hidden: Sequence[int] = (64,),
        epochs: int = 30,
        lr: float = 1e-3,
        keys: Mapping[str, str] | None = None,
    ):
        check_shadow_count(num_shadows, config_key(keys, "num_shadows"))
        self.features = list(features)
        self.feature_functions = chosen_features(attack_features, self.features, config_key(keys, "features"))
        self.num_shadows, self.per_class = num_shadows, per_class
        self.hidden, self.epochs, self.lr = list(hidden), epochs, lr

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """:class:`ConfigError` unless the attacker holds 2 x ``train_size`` images for the shadows."""
        if attacker_size < 2 * train_size:
            raise ConfigError(
                f"attacker_size={attacker_size} is too small for shadow models: each trains on "
                f"shadow_train_size={train_size} images out of a population of {2 * train_size}."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: the evaluation set only (shadow models answer the rest)."""
        return eval_size

    def __call__(self, context: AttackContext) -> AttackOutput:
        shadows = offline_shadow_models(context, self.num_shadows)
        population = 2 * context.train_size
        labels = context.attacker_labels[:population]
        log_probs = context.shadow_log_probs(shadows.logits(context.attacker_images[:population]))  # (S, P, C)
        features = torch.cat([attack_features(lp, labels, self.feature_functions) for lp in log_probs])
        membership = shadows.in_mask.flatten().long()
        class_of = labels.repeat(len(shadows))
        eval_features = attack_features(
            context.query_log_probs(context.eval_images), context.eval_labels, self.feature_functions
        )
        fit = functools.partial(
            fit_attack_classifier,
            trainer_cfg=context.trainer,
            hidden=self.hidden,
            epochs=self.epochs,
            lr=self.lr,
            seed=context.seed,
        )
        probability = torch.zeros(len(eval_features), dtype=torch.float64)
        if not self.per_class:
            probability[:] = fit(features, membership).member_probability(eval_features).double()
        for group in context.eval_labels.unique().tolist() if self.per_class else []:
            fit_rows, eval_rows = class_of == group, context.eval_labels == group
            if fit_rows.sum() < 2 or membership[fit_rows].unique().numel() < 2:  # too few rows: all classes
                fit_rows = torch.ones_like(class_of, dtype=torch.bool)
            classifier = fit(features[fit_rows], membership[fit_rows])
            probability[eval_rows] = classifier.member_probability(eval_features[eval_rows]).double()
        return AttackOutput(probability, (probability > 0.5).long(), {"shadow/num_models": float(len(shadows))})
