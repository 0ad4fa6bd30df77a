"""The class-inversion objective: every similarity loss of the config decreases."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.inversion.attack import build_module
from privacy_attacks.engine import ReconstructionModule, fit_reconstruction
from privacy_attacks.models import LeNet5
from tests.conftest import attack_config

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


LOSSES = list(attack_config("inversion").losses)  # every similarity the config offers


@pytest.fixture
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def mean_loss(module: ReconstructionModule) -> float:
    with torch.no_grad():
        return module()[0].mean().item()


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_decreases(compose_attack, frozen_net, loss):
    cfg = compose_attack(
        ["attack=inversion", f"loss={loss}", "init=noise", "steps=6", "restarts=1", "jitter=0", "blur_sigma=0"]
    )
    module = build_module(cfg, frozen_net, torch.arange(10))
    start = mean_loss(module)
    fit_reconstruction(module, TRAINER)
    assert module.reconstructions()[1].mean().item() < start
