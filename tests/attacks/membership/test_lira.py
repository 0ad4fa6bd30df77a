"""LiRA (Carlini et al. 2022): its Gaussian fits and its online shadow models."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from privacy_attacks.attacks.membership import lira
from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.shadow_models import (
    provision_shadow_models,
)
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
