"""The gradient-matching objectives (DLG's L2 and IG's cosine distance)."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.attacks.gradient_inversion.matching import CosineDistance, GradientMatching, SquaredL2Distance
from privacy_attacks.engine.module import ReconstructionModule, fit_reconstruction
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid


def _model(seed: int = 0) -> LeNetSigmoid:
    torch.manual_seed(seed)
    return LeNetSigmoid().eval().requires_grad_(False)


@pytest.mark.parametrize("distance", [SquaredL2Distance(), CosineDistance()])
def test_matching_objective_is_minimal_at_the_private_batch(distance):
    model = _model()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([3, 4])
    gradient = SimulatedClient(model, images, labels).shared_gradient()
    objective = GradientMatching(model, gradient, 2, distance, labels=labels, restarts=2)
    stacked = torch.cat([images, torch.rand(2, 1, 28, 28)])  # restart 0: the truth; restart 1: noise
    losses = objective(stacked)
    assert losses.shape == (4,)
    assert losses[:2].abs().max() < 1e-5 and (losses[2:] > 1e-3).all()
    assert losses[0] == losses[1]  # one batch, one distance


def test_dlg_soft_labels_are_trained_with_the_images_and_the_model_is_untouched():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, label = torch.rand(1, 1, 28, 28), torch.tensor([6])
    gradient = SimulatedClient(model, image, label).shared_gradient()
    objective = GradientMatching(model, gradient, 1, SquaredL2Distance(), labels=None)
    soft_before = objective.soft_labels.detach().clone()
    module = ReconstructionModule(objective, optimizer=torch.optim.Adam, steps=5)
    start = module()[0].detach().sum()
    fit_reconstruction(module, {"accelerator": "cpu", "devices": 1}, enable_progress_bar=False)
    assert not torch.equal(objective.soft_labels.detach(), soft_before)
    assert module.best_loss.sum() < start
    images, _ = module.reconstructions()
    assert images.min() >= 0 and images.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("network", ["lenet_sigmoid", "branchy"])
@pytest.mark.parametrize("recovered", [True, False])
def test_restarts_optimised_together_equal_each_restart_alone(recovered, network):
    """The vectorised restarts give each dummy batch the distance, and the pixel (and soft-label) gradients, it gets
    as a single restart; with a model vmap cannot run (it branches on its tensors' values), matched one by one."""
    from tests.nets import Branchy

    torch.manual_seed(0)
    model = _model() if network == "lenet_sigmoid" else Branchy().eval().requires_grad_(False)
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([1, 7])
    gradient = SimulatedClient(model, images, labels).shared_gradient()
    together = GradientMatching(model, gradient, 2, CosineDistance(), labels=labels if recovered else None, restarts=3)
    dummies = torch.rand(6, 1, 28, 28, requires_grad=True)
    together(dummies).sum().backward()
    for restart in range(3):
        alone = GradientMatching(model, gradient, 2, CosineDistance(), labels=labels if recovered else None)
        if not recovered:
            alone.soft_labels.data.copy_(together.soft_labels.data[restart : restart + 1])
        batch = dummies.detach()[2 * restart : 2 * restart + 2].requires_grad_(True)
        losses = alone(batch)
        losses.sum().backward()
        torch.testing.assert_close(losses, together(dummies)[2 * restart : 2 * restart + 2])
        torch.testing.assert_close(batch.grad, dummies.grad[2 * restart : 2 * restart + 2])
        if not recovered:
            torch.testing.assert_close(alone.soft_labels.grad[0], together.soft_labels.grad[restart])
