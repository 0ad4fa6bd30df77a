"""Membership attacks in-process on tiny synthetic data: each method runs, and none is fitted on evaluation images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch
from omegaconf import OmegaConf

from privacy_attacks.attacks.membership import lira, proxy, shadow
from privacy_attacks.attacks.membership.base import AttackContext
from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.metrics import membership_metrics
from privacy_attacks.attacks.membership.proxy import ProxyAttack
from privacy_attacks.attacks.membership.shadow import ShadowAttack, shadow_seeds
from privacy_attacks.attacks.membership.shadows import (
    balanced_in_masks,
    provision_shadow_models,
    subset_indices,
    train_shadow_models,
)
from privacy_attacks.attacks.membership.threshold import ThresholdAttack
from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.seeding import seeded

RECIPE = OmegaConf.create(
    {
        "net": {"_target_": "privacy_attacks.models.LeNet5"},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.002},
        "scheduler": None,
        "max_epochs": 2,
        "batch_size": 8,
        "members": 10,
        "seed": 0,
    }
)
TRAINER = OmegaConf.create(
    {
        "_target_": "lightning.pytorch.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
)
N_EVAL, N_ATTACKER, TRAIN_SIZE = 20, 40, 10


def _target() -> LeNet5:
    """The tiny target, initialised as the target's training would be (seed 0), untrained."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LeNet5().eval().requires_grad_(False)


@pytest.fixture
def context(tmp_path) -> AttackContext:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(N_EVAL + N_ATTACKER, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (N_EVAL + N_ATTACKER,), generator=generator)
    return AttackContext(
        api=BlackBoxAPI(_target(), output="probs"),
        eval_images=images[:N_EVAL],
        eval_labels=labels[:N_EVAL],
        attacker_images=images[N_EVAL:],
        attacker_labels=labels[N_EVAL:],
        recipe=RECIPE,
        train_size=TRAIN_SIZE,
        trainer=TRAINER,
        cache_dir=tmp_path,
        seed=0,
    )


def _contains_any(images, candidates) -> bool:
    return bool((images[:, None] == candidates[None]).flatten(2).all(dim=2).any())


def test_context_holds_no_membership_labels_and_no_dataset_indices():
    names = {f.name for f in dataclasses.fields(AttackContext)}
    assert not any("member" in name or "indices" in name for name in names)


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
    fitted_images = []
    real_distil, real_provision = proxy.distil, provision_shadow_models

    def spy_distil(api, images, *args, **kwargs):
        fitted_images.append(images)
        return real_distil(api, images, *args, **kwargs)

    def spy_provision(recipe, images, labels, train_indices, *args):
        fitted_images.append(images[train_indices.unique()])
        return real_provision(recipe, images, labels, train_indices, *args)

    monkeypatch.setattr(proxy, "distil", spy_distil)
    monkeypatch.setattr(shadow, "provision_shadow_models", spy_provision)
    ProxyAttack(epochs=1)(context)
    ShadowAttack(num_shadows=2, epochs=1)(context)
    LiRA(num_shadows=2, online=False)(context)
    assert len(fitted_images) == 2 + 1 + 1  # proxy + reference, Shokri's shadows, offline LiRA's shadows
    for images in fitted_images:
        assert not _contains_any(images, context.eval_images)


def test_online_lira_puts_each_evaluation_image_in_half_the_shadow_models(context, monkeypatch):
    masks = []
    real_provision = provision_shadow_models

    def spy_provision(recipe, images, labels, train_indices, *args):
        shadows, cached = real_provision(recipe, images, labels, train_indices, *args)
        masks.append(shadows.in_mask[:, :N_EVAL])
        return shadows, cached

    monkeypatch.setattr(lira, "provision_shadow_models", spy_provision)
    LiRA(num_shadows=4, online=True)(context)
    assert (masks[0].sum(dim=0) == 2).all()  # IN for exactly 2 of 4 models, membership never used


def test_shadow_models_are_cached_by_config(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks))
    first, cached_first = provision_shadow_models(*args, [3, 4], context.cache_dir)
    second, cached_second = provision_shadow_models(*args, [3, 4], context.cache_dir)
    assert not cached_first and cached_second
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    _, other_seed_cached = provision_shadow_models(*args, [3, 5], context.cache_dir)
    assert not other_seed_cached
    _, other_images_cached = provision_shadow_models(
        RECIPE, context.attacker_images[20:40], *args[2:], [3, 4], context.cache_dir
    )
    assert not other_images_cached  # keyed by the images' content


def test_a_corrupt_shadow_cache_is_a_clear_error(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks), [0, 1])
    provision_shadow_models(*args, context.cache_dir)
    for path in context.cache_dir.glob("shadows-*.pt"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete"):
        provision_shadow_models(*args, context.cache_dir)


def test_stacked_shadow_training_equals_independent_fits(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    masks = balanced_in_masks(20, 2, torch.Generator().manual_seed(0))
    indices = subset_indices(masks)
    together = train_shadow_models(RECIPE, images, labels, indices, seeds=[11, 12], progress=False)
    for s, seed in enumerate([11, 12]):
        alone = train_shadow_models(RECIPE, images, labels, indices[s : s + 1], seeds=[seed], progress=False)
        for name, value in alone.params.items():
            torch.testing.assert_close(together.params[name][s], value[0], rtol=1e-4, atol=1e-5)


def test_no_attacker_model_starts_from_the_targets_initial_weights(context, monkeypatch):
    target_init = _target().state_dict()  # fit_classifier seeds with the recipe's seed (0), then builds the net
    started = []
    real_distil = proxy.distil

    def spy_distil(api, images, net, *args, **kwargs):
        started.append({k: v.clone() for k, v in net.state_dict().items()})
        return real_distil(api, images, net, *args, **kwargs)

    monkeypatch.setattr(proxy, "distil", spy_distil)
    ProxyAttack(epochs=1, reference=True)(context)  # context.seed == RECIPE.seed == 0
    with seeded(shadow_seeds(0, 1)[0], "init"):
        started.append(LeNet5().state_dict())  # shadow model 0, as train_shadow_models builds it
    assert len(started) == 3
    for state in started:
        assert not any(torch.equal(state[name], target_init[name]) for name in target_init if name.endswith("weight"))


def _permuted(context, order):
    return dataclasses.replace(
        context,
        eval_images=context.eval_images[order],
        eval_labels=context.eval_labels[order],
        api=BlackBoxAPI(_target(), output="probs"),
    )


@pytest.mark.parametrize("method", ["loss", "modified_entropy", "shadow", "lira_offline"])
def test_permuting_the_evaluation_set_permutes_the_scores(method, context):
    order = torch.randperm(N_EVAL, generator=torch.Generator().manual_seed(1))
    scores = METHODS[method]()(context).scores
    permuted = METHODS[method]()(_permuted(context, order)).scores
    torch.testing.assert_close(permuted, scores[order])
    membership = (torch.arange(N_EVAL) % 2).long()
    predictions = torch.zeros(N_EVAL, dtype=torch.long)
    assert membership_metrics(permuted, membership[order], predictions) == membership_metrics(
        scores, membership, predictions
    )


def test_gaussian_log_pdf_matches_scipy():
    x, mean, std = (
        torch.tensor([0.3, -2.0, 5.0]).double(),
        torch.tensor([0.0, 1.0, 4.0]).double(),
        torch.tensor([1.0, 0.5, 3.0]).double(),
    )
    expected = scipy.stats.norm.logpdf(x.numpy(), mean.numpy(), std.numpy())
    torch.testing.assert_close(lira.gaussian_log_pdf(x, mean, std), torch.from_numpy(expected))


@pytest.mark.parametrize("fixed_variance", [False, True])
def test_masked_mean_std_matches_numpy(fixed_variance):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=generator) > 0.4
    mask[0] = True  # every column has a masked row
    mean, std = lira.masked_mean_std(values, mask, fixed_variance)
    data, keep = values.numpy(), mask.numpy()
    expected_mean = np.array([data[keep[:, j], j].mean() for j in range(5)])
    if fixed_variance:
        deviations = np.concatenate([data[keep[:, j], j] - expected_mean[j] for j in range(5)])
        expected_std = np.full(5, np.sqrt((deviations**2).mean()))
    else:
        expected_std = np.array([data[keep[:, j], j].std() for j in range(5)])
    np.testing.assert_allclose(mean.numpy(), expected_mean)
    np.testing.assert_allclose(std.numpy(), np.maximum(expected_std, 1e-6))


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
