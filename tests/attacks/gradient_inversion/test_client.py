"""The simulated federated client's shared gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid


def _model(seed: int = 0) -> LeNetSigmoid:
    torch.manual_seed(seed)
    return LeNetSigmoid().eval().requires_grad_(False)


def test_shared_gradient_equals_autograd_of_the_clients_loss():
    model = _model()
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 7, 7])
    shared = SimulatedClient(model, images, labels).shared_gradient()
    reference = LeNetSigmoid()
    reference.load_state_dict(model.state_dict())
    expected = torch.autograd.grad(F.cross_entropy(reference(images), labels), list(reference.parameters()))
    assert len(shared) == len(expected)
    for got, want in zip(shared, expected):
        assert not got.requires_grad
        torch.testing.assert_close(got, want)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())  # the shared model is untouched
