"""Membership attacks in-process on tiny synthetic data: each method runs, and none is fitted on evaluation images."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from privacy_attacks.attacks.membership import lira, proxy, shadow
from privacy_attacks.attacks.membership.base import AttackContext
from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.proxy import ProxyAttack
from privacy_attacks.attacks.membership.shadow import ShadowAttack
from privacy_attacks.attacks.membership.shadows import balanced_in_masks, provision_shadow_models, subset_indices
from privacy_attacks.attacks.membership.threshold import ThresholdAttack
from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5

RECIPE = OmegaConf.create({
    "net": {"_target_": "privacy_attacks.models.LeNet5"},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.002},
    "scheduler": None,
    "max_epochs": 2,
    "batch_size": 8,
    "members": 10,
    "seed": 0,
})
TRAINER = OmegaConf.create({
    "_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1, "logger": False,
    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
})
N_EVAL, N_ATTACKER, TRAIN_SIZE = 20, 40, 10


@pytest.fixture
def context(tmp_path) -> AttackContext:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(N_EVAL + N_ATTACKER, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (N_EVAL + N_ATTACKER,), generator=generator)
    indices = torch.arange(1000, 1000 + N_EVAL + N_ATTACKER)
    torch.manual_seed(0)
    target = LeNet5().eval().requires_grad_(False)
    return AttackContext(
        api=BlackBoxAPI(target, output="probs"),
        eval_images=images[:N_EVAL], eval_labels=labels[:N_EVAL], eval_indices=indices[:N_EVAL],
        attacker_images=images[N_EVAL:], attacker_labels=labels[N_EVAL:], attacker_indices=indices[N_EVAL:],
        recipe=RECIPE, train_size=TRAIN_SIZE, trainer=TRAINER, cache_dir=tmp_path, seed=0,
    )


def _contains_any(images, candidates) -> bool:
    return bool((images[:, None] == candidates[None]).flatten(2).all(dim=2).any())


def test_context_holds_no_membership_labels():
    names = {f.name for f in dataclasses.fields(AttackContext)}
    assert not any("member" in name for name in names)


METHODS = {
    "loss": lambda: ThresholdAttack("loss", reference_size=20),
    "confidence": lambda: ThresholdAttack("confidence", reference_size=20),
    "entropy": lambda: ThresholdAttack("entropy", reference_size=20),
    "modified_entropy": lambda: ThresholdAttack("modified_entropy", reference_size=20),
    "proxy": lambda: ProxyAttack(features=["sorted", "label", "loss"], epochs=2, reference=True),
    "shadow": lambda: ShadowAttack(num_shadows=2, epochs=2, per_class=True),
    "lira": lambda: LiRA(num_shadows=4, online=True),
    "lira_fixed": lambda: LiRA(num_shadows=2, online=True, fixed_variance=True),
    "lira_offline": lambda: LiRA(num_shadows=2, online=False),
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_scores_every_evaluation_image(method, context):
    output = METHODS[method]()(context)
    assert output.scores.shape == (N_EVAL,) and torch.isfinite(output.scores).all()
    assert set(output.predictions.tolist()) <= {0, 1}
    assert context.api.queries_used >= N_EVAL


def test_trained_attacks_are_never_fitted_on_evaluation_images(context, monkeypatch):
    fitted_images, shadow_populations = [], []
    real_distil, real_provision = proxy.distil, provision_shadow_models

    def spy_distil(api, images, *args, **kwargs):
        fitted_images.append(images)
        return real_distil(api, images, *args, **kwargs)

    def spy_provision(recipe, population, images, labels, train_indices, *args):
        shadow_populations.append(population)
        fitted_images.append(images[train_indices.unique()])
        return real_provision(recipe, population, images, labels, train_indices, *args)

    monkeypatch.setattr(proxy, "distil", spy_distil)
    monkeypatch.setattr(shadow, "provision_shadow_models", spy_provision)
    ProxyAttack(epochs=1)(context)
    ShadowAttack(num_shadows=2, epochs=1)(context)
    LiRA(num_shadows=2, online=False)(context)
    assert len(fitted_images) == 2 + 1 + 1  # proxy + reference, Shokri's shadows, offline LiRA's shadows
    for images in fitted_images:
        assert not _contains_any(images, context.eval_images)
    for population in shadow_populations:
        assert not set(population.tolist()) & set(context.eval_indices.tolist())


def test_online_lira_puts_each_evaluation_image_in_half_the_shadow_models(context, monkeypatch):
    masks = []
    real_provision = provision_shadow_models

    def spy_provision(recipe, population, images, labels, train_indices, *args):
        shadows, cached = real_provision(recipe, population, images, labels, train_indices, *args)
        masks.append(shadows.in_mask[:, :N_EVAL])
        return shadows, cached

    monkeypatch.setattr(lira, "provision_shadow_models", spy_provision)
    LiRA(num_shadows=4, online=True)(context)
    assert (masks[0].sum(dim=0) == 2).all()  # IN for exactly 2 of 4 models, membership never used


def test_shadow_models_are_cached_by_config(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_indices[:20], context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks))
    first, cached_first = provision_shadow_models(*args, 0, context.cache_dir)
    second, cached_second = provision_shadow_models(*args, 0, context.cache_dir)
    assert not cached_first and cached_second
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    _, other_seed_cached = provision_shadow_models(*args, 1, context.cache_dir)
    assert not other_seed_cached


def test_balanced_masks_have_each_image_in_half_the_models():
    masks = balanced_in_masks(30, 8, torch.Generator().manual_seed(0))
    assert (masks.sum(dim=0) == 4).all() and (masks.sum(dim=1) == 15).all()


@pytest.mark.parametrize("make", [lambda: LiRA(num_shadows=3), lambda: ShadowAttack(num_shadows=0)])
def test_odd_shadow_counts_are_config_errors(make):
    with pytest.raises(ConfigError, match="even"):
        make()


def test_attackers_data_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="attacker_size"):
        ProxyAttack().check_sizes(1000, 2000, 2500)
    with pytest.raises(ConfigError, match="attacker_size"):
        LiRA(online=False).check_sizes(1000, 2000, 1000)
