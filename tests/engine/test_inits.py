"""The engine's initialisations: every init of the config in the unit range, the mean image, the guess."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from privacy_attacks.engine.inits import GuessInit
from tests.conftest import attack_config

INITS = [name for name in attack_config("inversion").inits if name != "mean"]  # "mean" needs MNIST: tested below


@pytest.mark.parametrize("init", INITS)
def test_each_init_is_in_unit_range(compose_attack, init):
    cfg = compose_attack(["attack=inversion", f"init={init}"])
    images = instantiate(cfg.inits[cfg.init])((4, 1, 28, 28), torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    expected = {"zeros": 0.0, "constant": 0.5}
    if init in expected:
        assert torch.equal(images, torch.full_like(images, expected[init]))


@pytest.mark.mnist
def test_mean_init_is_the_mean_training_image(compose_attack):
    cfg = compose_attack(["attack=inversion", "init=mean"])
    images = instantiate(cfg.inits.mean, noise=0.0)((2, 1, 28, 28), torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 28, 28) and 0.05 < images.mean() < 0.25  # MNIST's mean pixel is 0.13
    assert images[0, 0, 14, 14] > images[0, 0, 0, 0]  # bright centre, black border


def test_guess_init_starts_every_restart_at_the_guess():
    guess = torch.rand(2, 1, 28, 28)
    start = GuessInit(guess, noise=0.0)((6, 1, 28, 28), torch.Generator().manual_seed(0))
    torch.testing.assert_close(start, guess.repeat(3, 1, 1, 1))
    noisy = GuessInit(guess, noise=0.1)((4, 1, 28, 28), torch.Generator().manual_seed(0))
    assert not torch.equal(noisy[:2], noisy[2:]) and 0 <= noisy.min() <= noisy.max() <= 1
