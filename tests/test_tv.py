"""The lecture's total-variation prior ℓ_TV, against a hand computation."""

import pytest
import torch

from privacy_attacks.attacks.reconstruction import TotalVariation, total_variation


def test_tv_matches_hand_computation():
    x = torch.tensor([[0.0, 1.0, 3.0], [2.0, 4.0, 4.0]]).view(1, 1, 2, 3)
    # horizontal: (1-0)² + (3-1)² + (4-2)² + (4-4)² = 1 + 4 + 4 + 0 = 9
    # vertical:   (2-0)² + (4-1)² + (4-3)² = 4 + 9 + 1 = 14;  M = 6 pixels
    assert total_variation(x).item() == pytest.approx((9 + 14) / 6)


def test_tv_is_per_image_and_normalised_by_784_on_mnist():
    x = torch.zeros(2, 1, 28, 28)
    x[1, 0, 10, 10] = 1.0  # one bright pixel: 4 neighbouring differences of 1
    assert torch.allclose(total_variation(x), torch.tensor([0.0, 4 / 784]))


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_tv_is_zero_on_a_constant_image(value):
    assert torch.equal(total_variation(torch.full((3, 1, 28, 28), value)), torch.zeros(3))


def test_tv_prior_is_off_at_weight_zero():
    assert not TotalVariation(0.0).active and TotalVariation(1e-3).active
