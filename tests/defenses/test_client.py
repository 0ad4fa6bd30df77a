"""Defences of a federated client on a hand-made gradient, through the client, and against gradient inversion."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.defenses import GradientClipNoise, GradientPrune, GradientQuantize
from privacy_attacks.errors import ConfigError
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid
from privacy_attacks.pipelines import run_attack

GRADIENT = [torch.tensor([[3.0, -4.0], [0.5, 0.0]]), torch.tensor([12.0, -0.1])]  # L2 norm 13.0137...


def _norm(gradient):
    return torch.sqrt(sum(g.pow(2).sum() for g in gradient)).item()


def test_clipping_without_noise_scales_the_whole_gradient_to_the_bound():
    clipped = GradientClipNoise(max_norm=1.0, noise_multiplier=0.0)(GRADIENT)
    assert _norm(clipped) == pytest.approx(1.0)
    scale = 1.0 / _norm(GRADIENT)
    for got, g in zip(clipped, GRADIENT, strict=True):
        torch.testing.assert_close(got, g * scale)
    unchanged = GradientClipNoise(max_norm=100.0, noise_multiplier=0.0)(GRADIENT)
    assert all(torch.equal(a, b) for a, b in zip(unchanged, GRADIENT, strict=True))  # already within the bound


def test_noise_is_the_clients_own_draw_with_the_stated_scale():
    big = [torch.zeros(200_000)]
    noisy = GradientClipNoise(max_norm=2.0, noise_multiplier=0.5, seed=3)(big)[0]
    assert noisy.std().item() == pytest.approx(1.0, rel=0.02)  # 0.5 x 2.0
    assert torch.equal(noisy, GradientClipNoise(max_norm=2.0, noise_multiplier=0.5, seed=3)(big)[0])


def test_pruning_zeroes_the_smallest_magnitudes():
    pruned = GradientPrune(fraction=0.5)(GRADIENT)  # 6 entries: the 3 smallest |g| are 0.0, 0.1, 0.5
    torch.testing.assert_close(pruned[0], torch.tensor([[3.0, -4.0], [0.0, 0.0]]))
    torch.testing.assert_close(pruned[1], torch.tensor([12.0, 0.0]))


def test_pruning_zeroes_exactly_its_fraction_when_magnitudes_tie():
    # 12 entries, 4 of them 0 and 5 of magnitude 1 (a quantised gradient): half of them is 6 entries.
    gradient = [torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 1.0, 2.0, -2.0]), torch.tensor([[1.0, -1.0], [0.0, 2.0]])]
    pruned = GradientPrune(fraction=0.5)(gradient)
    assert sum(int((p == 0).sum()) for p in pruned) == 6  # the 4 zeros and 2 of the 5 tied ones, no more
    torch.testing.assert_close(pruned[0], torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, -2.0]))  # first ones
    torch.testing.assert_close(pruned[1], gradient[1])
    zeros = [torch.zeros(3, 4), torch.zeros(5)]
    assert all(p.shape == z.shape for p, z in zip(GradientPrune(0.9)(zeros), zeros, strict=True))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_pruning_without_ties_zeroes_what_a_magnitude_threshold_zeroes(fraction):
    generator = torch.Generator().manual_seed(0)
    gradient = [torch.randn(6, 1, 5, 5, generator=generator), torch.randn(6, generator=generator)]
    flat = torch.cat([g.flatten() for g in gradient])
    threshold = flat.abs().kthvalue(int(fraction * flat.numel())).values  # the threshold rule, exact without ties
    expected = [torch.where(g.abs() <= threshold, torch.zeros_like(g), g) for g in gradient]
    for got, want in zip(GradientPrune(fraction)(gradient), expected, strict=True):
        assert torch.equal(got, want)


def test_quantising_puts_every_entry_on_its_tensors_grid():
    quantised = GradientQuantize(bits=2)(GRADIENT)  # levels -max, 0, +max
    torch.testing.assert_close(quantised[0], torch.tensor([[4.0, -4.0], [0.0, 0.0]]))
    torch.testing.assert_close(quantised[1], torch.tensor([12.0, 0.0]))


def test_the_client_shares_the_defended_gradient():
    torch.manual_seed(0)
    model = LeNetSigmoid().eval().requires_grad_(False)
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    raw = SimulatedClient(model, images, labels).shared_gradient()
    shared = SimulatedClient(model, images, labels, defense=GradientPrune(0.9)).shared_gradient()
    for got, want in zip(shared, GradientPrune(0.9)(raw), strict=True):
        torch.testing.assert_close(got, want)
    assert sum(int((g == 0).sum()) for g in shared) >= 0.9 * sum(g.numel() for g in shared) - 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attack=distillation", "defense=grad_prune"], "does not meet"),
        (["attack=gradient_inversion", "defense=topk"], "does not meet"),
        (["attack=gradient_inversion", "defense=grad_clip_noise", "defense.max_norm=0"], "defense.max_norm"),
        (["attack=gradient_inversion", "defense=grad_prune", "defense.fraction=1.5"], "defense.fraction"),
        (["attack=gradient_inversion", "defense=grad_quantize", "defense.bits=1"], "defense.bits"),
    ],
)
def test_a_client_defense_that_does_not_apply_or_a_bad_strength_stops_before_any_work(
    compose_attack, tmp_path, overrides, message
):
    cfg = compose_attack([*overrides, f"paths.cache_dir={tmp_path}/empty_cache"])
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()


@pytest.mark.mnist
def test_pruning_the_shared_gradient_costs_idlg_its_reconstruction(compose_attack):
    plain = run_attack(compose_attack(["attack=gradient_inversion", "method=idlg", "steps=60"]))
    pruned = run_attack(
        compose_attack(
            ["attack=gradient_inversion", "method=idlg", "steps=60", "defense=grad_prune", "defense.fraction=0.99"]
        )
    )
    assert pruned["recon/psnr"] < plain["recon/psnr"] - 5
