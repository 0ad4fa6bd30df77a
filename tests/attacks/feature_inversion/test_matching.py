"""The feature-matching objective of feature inversion."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.feature_inversion.matching import FeatureMatching
from privacy_attacks.models import LeNet5


@pytest.mark.parametrize("layer", LeNet5.LAYERS)
def test_feature_objective_is_zero_at_the_true_image_and_positive_elsewhere(layer):
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(3, 1, 28, 28)
    objective = FeatureMatching(net, layer, net.features(images)[layer])
    assert objective.num_images == 3
    losses = objective(torch.cat([images, torch.rand(3, 1, 28, 28)]))  # restart 0: truth, restart 1: noise
    assert losses.shape == (6,)
    assert losses[:3].abs().max() < 1e-10 and (losses[3:] > 1e-6).all()


def test_feature_objective_is_normalised_by_the_target_energy():
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(2, 1, 28, 28)
    target = net.features(images)["fc1"]
    zero_features_loss = FeatureMatching(net, "fc1", target)(torch.zeros(2, 1, 28, 28))
    expected = (net.features(torch.zeros(2, 1, 28, 28))["fc1"] - target).pow(2).sum(1) / target.pow(2).sum(1)
    torch.testing.assert_close(zero_features_loss, expected)
