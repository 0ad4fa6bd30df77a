"""LiRA (Carlini et al. 2022): its Gaussian fits and its online shadow models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch

from privacy_attacks.attacks.membership import lira
from privacy_attacks.attacks.membership.lira import LiRA, likelihood_ratio
from privacy_attacks.attacks.membership.shadow_models import (
    provision_shadow_models,
)
from privacy_attacks.errors import ConfigError
from tests.attacks.membership.conftest import N_EVAL


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


def test_online_lira_on_many_nonmembers_trains_each_model_on_a_target_sized_subset_of_the_evaluation_images(
    context, monkeypatch
):
    # 20 evaluation images, models of 4 images (the target's size): more than twice that, so each model trains on 4
    # evaluation images alone (none of the attacker's), every image IN for exactly 2 of 10 models (groups of 5
    # disjoint subsets), and the attack scores every evaluation image.
    seen = []
    real_provision = provision_shadow_models

    def spy_provision(recipe, images, labels, train_indices, *args):
        shadows, cached = real_provision(recipe, images, labels, train_indices, *args)
        seen.append((images, train_indices, shadows.in_mask))
        return shadows, cached

    monkeypatch.setattr(lira, "provision_shadow_models", spy_provision)
    small = dataclasses.replace(context, train_size=4)
    attack = LiRA(num_shadows=10, online=True)
    attack.check_sizes(4, N_EVAL, 0)  # needs none of the attacker's images
    output = attack(small)
    images, train_indices, in_mask = seen[0]
    assert torch.equal(images, context.eval_images) and train_indices.shape == (10, 4)
    assert (in_mask.sum(dim=0) == 2).all() and (in_mask.sum(dim=1) == 4).all()
    assert output.scores.shape == (N_EVAL,) and torch.isfinite(output.scores).all()


@pytest.mark.parametrize("online", [True, False])
def test_query_augmentations_average_each_copys_score_and_count_every_copy(context, online):
    plain = LiRA(num_shadows=4, online=online)(context)
    queried_before = context.api.queries_used
    augmented = LiRA(num_shadows=4, online=online, query_shift=1)
    output = augmented(context)
    assert context.api.queries_used - queried_before == 5 * N_EVAL == augmented.queries_needed(10, N_EVAL, 40)
    shadows = lira.online_shadow_models(context, 4)[0] if online else lira.offline_shadow_models(context, 4)
    in_mask = shadows.in_mask[:, :N_EVAL] if online else torch.zeros(4, N_EVAL, dtype=torch.bool)
    copies = [
        augmented.copy_scores(context, shadows, in_mask, shift) for shift in [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0)]
    ]
    assert torch.allclose(output.scores, torch.stack(copies).mean(0))
    assert torch.equal(copies[0], plain.scores)  # the identity copy is the attack without augmentations
    assert output.info["lira/query_copies"] == 5.0


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


@pytest.mark.parametrize(
    ("value", "num_shadows", "expected"),
    [
        (True, 256, True),
        (False, 4, False),
        ("auto", 16, True),
        ("auto", 62, True),
        ("auto", 64, False),
        ("auto", 256, False),
    ],
)
def test_fixed_variance_auto_shares_one_variance_below_64_shadow_models(value, num_shadows, expected):
    assert lira.resolve_fixed_variance(value, num_shadows) is expected
    assert LiRA(num_shadows=num_shadows, fixed_variance=value).fixed_variance is expected


@pytest.mark.parametrize("value", ["yes", "false", 1, None])
def test_fixed_variance_refuses_anything_but_a_bool_or_auto(value):
    with pytest.raises(ConfigError, match=r"^fixed_variance=.* boolean, true .*false .*auto"):
        LiRA(num_shadows=16, fixed_variance=value)


def test_lira_records_which_variance_it_fitted(context):
    assert LiRA(num_shadows=4, fixed_variance="auto")(context).info["lira/fixed_variance"] == 1.0
    assert LiRA(num_shadows=4, fixed_variance=False)(context).info["lira/fixed_variance"] == 0.0


def test_likelihood_ratio_is_the_gaussian_log_ratio_online_and_the_out_z_score_offline():
    shadow = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]], dtype=torch.float64)  # (S=4, N=2)
    in_mask = torch.tensor([[True, False], [True, False], [False, True], [False, True]])
    target = torch.tensor([4.0, 1.0], dtype=torch.float64)
    in_mean, in_std = torch.tensor([2.0, 5.0]), torch.tensor([1.0, 1.0])  # each column's IN values, std over them
    out_mean, out_std = torch.tensor([6.0, 1.0]), torch.tensor([1.0, 1.0])
    normal = torch.distributions.Normal
    expected = normal(in_mean, in_std).log_prob(target) - normal(out_mean, out_std).log_prob(target)
    online = likelihood_ratio(target, shadow, in_mask, fixed_variance=False, online=True)
    torch.testing.assert_close(online.float(), expected.float())
    offline = likelihood_ratio(target, shadow, in_mask, fixed_variance=False, online=False)
    torch.testing.assert_close(offline.float(), ((target - out_mean) / out_std).float())
