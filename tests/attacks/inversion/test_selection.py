"""The restart each output-inversion reconstruction keeps: the engine's (lowest loss) or Plug & Play attacks' final
selection (the target's mean probability of the class over random rotations and rescalings)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privacy_attacks.attacks.inversion.objectives import ClassInversion, LogitSimilarity
from privacy_attacks.attacks.inversion.selection import augmented_confidence, check_selection, select_restarts
from privacy_attacks.engine.module import ReconstructionModule, fit_reconstruction
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5

QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


class CentreMass(nn.Module):
    """Class 1's logit is 10 x the mean brightness of the central 8 x 8 pixels, class 0's that of the rest: rotating
    or rescaling a blob well inside the centre keeps it there; a ring on the centre's border moves partly out."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        centre = images[..., 10:18, 10:18].sum(dim=(1, 2, 3))
        rest = images.sum(dim=(1, 2, 3)) - centre
        return 10 * torch.stack([rest / (28 * 28 - 64), centre / 64], dim=1)


def test_the_loss_selection_is_the_engines_own_choice():
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    objective = ClassInversion(net, torch.arange(3), LogitSimilarity(), (1, 28, 28))
    module = ReconstructionModule(objective, steps=3, restarts=4, seed=0)
    fit_reconstruction(module, QUIET)
    candidates, losses = module.all_reconstructions()
    assert torch.equal(select_restarts(candidates, losses, net, torch.arange(3)), module.reconstructions()[0])


def test_the_augmented_selection_keeps_the_restart_whose_class_survives_the_views():
    """Two candidates the target reads as class 1 equally: the blob well inside the centre keeps its class under the
    views and is chosen although its loss is the higher one; the ring on the centre's border loses it."""
    blob = torch.zeros(1, 28, 28)
    blob[:, 12:17, 12:17] = 1.0  # 25 pixels, two pixels inside the central 8 x 8
    edgy = torch.zeros(1, 28, 28)
    edgy[:, 10:18, 10:18] = 25 / 28  # the same central mass on the 28 pixels of the centre's border
    edgy[:, 11:17, 11:17] = 0.0
    candidates = torch.stack([blob, edgy])[:, None]  # (R=2, N=1, 1, 28, 28)
    labels = torch.tensor([1])
    net = CentreMass()
    confidence = augmented_confidence(net, candidates, labels, views=16, degrees=30, scale=0.3, seed=0)
    assert confidence.shape == (2, 1) and confidence[0, 0] > confidence[1, 0]
    losses = torch.tensor([[1.0], [0.0]])  # the engine would keep the second
    chosen = select_restarts(candidates, losses, net, labels, "augmented", 16, 30.0, 0.3, seed=0)
    assert torch.equal(chosen, blob[None])
    assert torch.equal(select_restarts(candidates, losses, net, labels, "loss"), edgy[None])


def test_the_views_come_from_the_attacks_seed():
    images = torch.rand(3, 2, 1, 28, 28)
    labels = torch.tensor([0, 1])
    net = CentreMass()
    first = augmented_confidence(net, images, labels, 4, 20.0, 0.2, seed=5)
    assert torch.equal(first, augmented_confidence(net, images, labels, 4, 20.0, 0.2, seed=5))
    assert not torch.equal(first, augmented_confidence(net, images, labels, 4, 20.0, 0.2, seed=6))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("best", 8, 15.0, 0.2), "selection"),
        (("augmented", 0, 15.0, 0.2), "selection_views"),
        (("augmented", 8, -1.0, 0.2), "selection_degrees"),
        (("augmented", 8, 15.0, 1.0), "selection_scale"),
    ],
)
def test_bad_selection_settings_are_refused(arguments, message):
    with pytest.raises(ConfigError, match=message):
        check_selection(*arguments)
