"""The engine's priors: the lecture's total-variation prior ℓ_TV against a hand computation, jitter, the random
affine augmentation, the coarse-to-fine projection and the guess prior."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.engine import TotalVariation, total_variation
from privacy_attacks.engine.priors import CoarseToFine, GuessDistance, Jitter, PixelEnergy, RandomAffine
from privacy_attacks.errors import ConfigError


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


def test_jitter_moves_each_image_by_its_own_offset():
    jitter = Jitter(2)
    jitter.use_generator(torch.Generator().manual_seed(0))
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 14, 14] = 1.0
    moved = jitter.transform(images)
    positions = {tuple(torch.nonzero(m[0]).flatten().tolist()) for m in moved}
    assert len(positions) > 5 and all(12 <= r <= 16 and 12 <= c <= 16 for r, c in positions)
    assert torch.equal(moved.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # a translation: nothing lost


def test_guess_prior_is_zero_at_the_guess_and_follows_the_restart_major_order():
    guess = torch.rand(3, 1, 28, 28)
    prior = GuessDistance(weight=1.0, guess=guess)
    images = torch.cat([guess, torch.zeros(3, 1, 28, 28)])  # restart 0 at the guess, restart 1 black
    penalty = prior.penalty(images)
    assert penalty.shape == (6,) and penalty[:3].abs().max() == 0
    torch.testing.assert_close(penalty[3:], guess.pow(2).flatten(1).mean(1))
    assert not GuessDistance(weight=0.0).active


def _bar() -> torch.Tensor:
    """A 28 x 28 image of a bright horizontal bar through the centre, (1, 1, 28, 28)."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 13:15, 4:24] = 1.0
    return image


def test_random_affine_rotates_and_rescales_each_image_by_its_own_draw_within_its_range():
    augment = RandomAffine(weight=30, scale=0.2)
    augment.use_generator(torch.Generator().manual_seed(0))
    images = _bar().expand(32, 1, 28, 28).clone().requires_grad_(True)
    moved = augment.transform(images)
    assert moved.shape == images.shape and len({m.sum().item() for m in moved}) > 20  # its own draw per image
    rows = moved.detach()[:, 0].sum(dim=2)  # light per row: a rotated bar leaves rows 13-14
    assert (rows[:, :10].sum(dim=1) > 0.1).any()  # some bars tilted off the centre rows
    mass = moved.detach().sum(dim=(1, 2, 3)) / images.detach().sum(dim=(1, 2, 3))
    assert bool((mass > 0.5).all() and (mass < 1.6).all())  # within (1 ± 0.2)² of the area, bilinear aside
    moved.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0  # differentiable: the optimiser sees through it


def test_random_affine_is_the_identity_without_rotation_or_rescaling_and_draws_only_from_its_generator():
    images = torch.rand(4, 1, 28, 28)
    still = RandomAffine(weight=1e-9, scale=0.0)
    still.use_generator(torch.Generator().manual_seed(0))
    torch.testing.assert_close(still.transform(images), images, atol=1e-5, rtol=0)
    draws = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        augment = RandomAffine(weight=20, scale=0.1)
        augment.use_generator(torch.Generator().manual_seed(7))
        draws.append(augment.transform(images))
    assert torch.equal(draws[0], draws[1])
    assert not RandomAffine(0.0).active


def test_random_affine_refuses_a_scale_outside_zero_to_one():
    with pytest.raises(ConfigError, match="scale"):
        RandomAffine(weight=10, scale=1.0)


def test_coarse_to_fine_averages_blocks_whose_side_halves_every_stage():
    prior = CoarseToFine(weight=4, stage_steps=3)
    assert [prior.block(step) for step in range(8)] == [4, 4, 4, 2, 2, 2, 1, 1]
    images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    coarse = prior.project(images, 0)
    by_hand = images.view(2, 3, 7, 4, 7, 4).mean(dim=(3, 5))  # 7 x 7 blocks of 4 x 4 pixels
    assert torch.allclose(coarse, by_hand.repeat_interleave(4, -2).repeat_interleave(4, -1), atol=1e-6)
    assert torch.allclose(prior.project(coarse, 0), coarse, atol=1e-6)  # a projection: twice is once
    assert torch.allclose(
        prior.project(images, 3),
        images.view(2, 3, 14, 2, 14, 2).mean(dim=(3, 5)).repeat_interleave(2, -2).repeat_interleave(2, -1),
        atol=1e-6,
    )
    assert torch.equal(prior.project(images, 6), images)


def test_coarse_to_fine_keeps_each_blocks_mean_where_the_side_does_not_divide_the_image():
    images = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    coarse = CoarseToFine(weight=8).project(images, 0)  # 4 x 4 blocks of 8, the last row and column 4 wide
    assert coarse.shape == images.shape
    assert torch.allclose(coarse[..., 24:, 24:], images[..., 24:, 24:].mean().expand(1, 1, 4, 4), atol=1e-6)
    assert torch.allclose(coarse.mean(), images.mean(), atol=1e-6)


def test_coarse_to_fine_is_off_below_two_and_refuses_a_fractional_side():
    assert not CoarseToFine(0).active and not CoarseToFine(1).active and CoarseToFine(2).active
    with pytest.raises(ConfigError, match="whole number"):
        CoarseToFine(2.5)


def test_pixel_energy_is_the_mean_square_and_its_border_weight_grows_with_the_distance_from_the_centre():
    images = torch.rand(3, 1, 28, 28)
    assert torch.allclose(PixelEnergy(1.0).penalty(images), images.pow(2).flatten(1).mean(1))
    prior = PixelEnergy(1.0, border=2.0, border_power=4)
    weights = prior.pixel_weights(28, 28)
    # Distance in half-sides from the centre (13.5, 13.5): pixel (0, 13) is 13.5 / 14 up and 0.5 / 14 left of it.
    radius = ((13.5 / 14) ** 2 + (0.5 / 14) ** 2) ** 0.5
    assert weights[0, 13].item() == pytest.approx(1 + 2 * radius**4, rel=1e-5)
    assert weights[13:15, 13:15].max().item() == pytest.approx(1 + 2 * (2 * (0.5 / 14) ** 2) ** 2, rel=1e-5)
    assert weights[0, 0] == weights.max() and torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.T)
    assert torch.allclose(prior.penalty(images), (images.pow(2) * weights).flatten(1).mean(1))
    centre, corner = torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)
    centre[..., 13, 13], corner[..., 0, 0] = 1, 1
    assert PixelEnergy(1.0).penalty(centre).equal(PixelEnergy(1.0).penalty(corner))
    assert (prior.penalty(corner) > 5 * prior.penalty(centre)).all()


@pytest.mark.parametrize(("border", "power"), [(-1.0, 4.0), (1.0, 0.0), (float("nan"), 4.0)])
def test_pixel_energy_refuses_a_negative_border_weight_or_a_power_not_above_zero(border, power):
    with pytest.raises(ConfigError, match="l2_border"):
        PixelEnergy(1.0, border=border, border_power=power)
