"""A simulated federated-learning client: it shares the gradient of its loss on a private batch.

In FedSGD (McMahan et al. 2017) each participant sends the server the gradient of the shared
model's loss on its own data; gradient-inversion attacks (Zhu et al. 2019, "Deep Leakage from
Gradients") recover the data from that gradient alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Loss = Callable[[Tensor, Tensor], Tensor]


def trainable_leaves(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters as fresh leaf tensors that require grad (same storage, model untouched).

    The shared model may be frozen (``requires_grad=False``); these leaves let us differentiate
    with respect to its weights through :func:`torch.func.functional_call` without changing it.
    """
    return {name: p.detach().requires_grad_(True) for name, p in model.named_parameters()}


def model_loss(model: nn.Module, params: dict[str, Tensor], images: Tensor, labels: Tensor, loss: Loss) -> Tensor:
    """``loss(model_params(images), labels)``: images (B, C, H, W), labels (B,) long or (B, K) soft."""
    return loss(torch.func.functional_call(model, params, (images,)), labels)


def parameter_gradient(
    model: nn.Module, images: Tensor, labels: Tensor, loss: Loss = F.cross_entropy, create_graph: bool = False
) -> list[Tensor]:
    """d loss(model(images), labels) / d weights, one tensor per parameter in ``named_parameters`` order.

    With ``create_graph=True`` the result stays differentiable with respect to ``images`` (and
    soft ``labels``), which is what gradient matching optimises.
    """
    params = trainable_leaves(model)
    value = model_loss(model, params, images, labels, loss)
    return list(torch.autograd.grad(value, list(params.values()), create_graph=create_graph))


class SimulatedClient:
    """A FedSGD participant holding a private batch; :meth:`shared_gradient` is what it sends.

    Args:
        model: the shared model (its weights are read, never changed).
        images: the private batch, (B, C, H, W) in [0, 1].
        labels: its labels, (B,) long.
        loss: the training loss, mean over the batch (cross-entropy, as in DLG/iDLG/IG).
        defense: a client defence (:mod:`privacy_attacks.defenses.client`) applied to the gradient before it is
            shared; None: the raw gradient.

    Example:
        >>> client = SimulatedClient(LeNetSigmoid(), images, labels)
        >>> gradient = client.shared_gradient()  # list of tensors shaped like model.parameters()
    """

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        loss: Loss = F.cross_entropy,
        defense: Callable[[list[Tensor]], list[Tensor]] | None = None,
    ):
        self.model, self.images, self.labels, self.loss, self.defense = model, images, labels, loss, defense

    def gradients(self) -> tuple[list[Tensor], list[Tensor]]:
        """``(raw, shared)``: the gradient of the client's loss on its private batch, detached, and what leaves the
        client after its defence (the raw gradient itself without one)."""
        was_training = self.model.training
        self.model.eval()
        try:
            raw = [g.detach() for g in parameter_gradient(self.model, self.images, self.labels, self.loss)]
        finally:
            self.model.train(was_training)
        return raw, raw if self.defense is None else [g.detach() for g in self.defense(raw)]

    def shared_gradient(self) -> list[Tensor]:
        """The gradient of the client's loss on its private batch, detached and defended: what leaves the client."""
        return self.gradients()[1]
