"""Analytic label recovery from the last layer's gradient (iDLG, its batch extension, the bias counts), and DLG's dummy
labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from privacy_attacks.attacks.gradient_inversion.attack import build_module
from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.attacks.gradient_inversion.labels import recover_label_counts, recover_labels
from privacy_attacks.attacks.gradient_inversion.last_layer import last_linear
from privacy_attacks.models import LeNet5
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid
from privacy_attacks.seeding import derive_seed


def _model(seed: int = 0) -> LeNetSigmoid:
    torch.manual_seed(seed)
    return LeNetSigmoid().eval().requires_grad_(False)


@pytest.mark.parametrize("net", [LeNetSigmoid, LeNet5])
def test_idlg_label_recovery_is_exact_for_every_class_on_a_batch_of_one(net):
    torch.manual_seed(0)
    model = net().eval().requires_grad_(False)
    for label in range(10):
        image = torch.rand(1, 1, 28, 28)
        gradient = SimulatedClient(model, image, torch.tensor([label])).shared_gradient()
        weight, bias = last_linear(model, gradient)
        assert recover_labels(weight, 1, bias).tolist() == [label]
        assert recover_labels(weight, 1).tolist() == [label]  # iDLG's rule uses the weights alone


@pytest.mark.parametrize("classes", [2, 5, 100])
def test_idlg_label_recovery_is_exact_for_any_class_count_and_shape(classes):
    torch.manual_seed(0)
    model = LeNetSigmoid(num_classes=classes, image_shape=(3, 32, 32)).eval().requires_grad_(False)
    for label in sorted({0, classes // 2, classes - 1}):
        gradient = SimulatedClient(model, torch.rand(1, 3, 32, 32), torch.tensor([label])).shared_gradient()
        weight, bias = last_linear(model, gradient)
        assert weight.shape[0] == classes
        assert recover_labels(weight, 1, bias).tolist() == recover_labels(weight, 1).tolist() == [label]
    gradient = SimulatedClient(model, torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 1])).shared_gradient()
    recovered = recover_labels(*last_linear(model, gradient)[:1], 3)
    assert len(recovered) == 3 and 0 <= int(recovered.min()) <= int(recovered.max()) < classes  # B labels of C


def test_batch_label_recovery_finds_distinct_labels_and_counts():
    model = _model()
    labels = torch.tensor([2, 5, 9, 0])
    gradient = SimulatedClient(model, torch.rand(4, 1, 28, 28), labels).shared_gradient()
    weight, bias = last_linear(model, gradient)
    assert recover_labels(weight, 4, bias).tolist() == sorted(labels.tolist())
    assert len(recover_labels(weight, 7, bias)) == 7  # always B labels


@pytest.mark.parametrize("labels", [[3, 3, 7, 1], [2, 2, 2, 5], [0, 0, 9, 9], [6, 6, 6, 6], [1, 4, 4, 8]])
def test_batch_label_recovery_counts_repeated_labels_when_mean_predictions_are_alike(labels):
    # The last layer's gradient of a batch whose softmax outputs are all uniform (p = 1/C), features h_i >= 0:
    # dL/dW = 1/B sum_i (p - y_i) h_i^T, dL/db = p - counts / B: the rule's assumption holds exactly.
    generator = torch.Generator().manual_seed(sum(labels))
    batch, classes = len(labels), 10
    features = torch.rand(batch, 16, generator=generator) + 0.1
    error = torch.full((batch, classes), 1 / classes) - F.one_hot(torch.tensor(labels), classes).float()
    weight, bias = error.T @ features / batch, error.mean(dim=0)
    assert recover_labels(weight, batch, bias).tolist() == sorted(labels)


@pytest.mark.parametrize("labels", [[3, 3, 7, 1], [2, 2, 2, 5], [1, 4, 4, 8], [5, 5, 5, 5, 0, 0, 2, 9]])
def test_batch_label_recovery_finds_every_present_class_of_a_real_gradient(labels):
    model = _model()
    gradient = SimulatedClient(model, torch.rand(len(labels), 1, 28, 28), torch.tensor(labels)).shared_gradient()
    recovered = recover_labels(*last_linear(model, gradient)[:1], len(labels), last_linear(model, gradient)[1])
    assert set(recovered.tolist()) == set(labels) and len(recovered) == len(labels)


def test_dlg_dummy_labels_come_from_the_attackers_seed_not_the_global_rng(compose_attack):
    cfg = compose_attack(["attack=gradient_inversion", "method=dlg", "batch_size=2", "restarts=2"])
    model = _model()
    gradient = SimulatedClient(model, torch.rand(2, 1, 28, 28), torch.tensor([3, 4])).shared_gradient()

    def dummy_labels(attack_seed: int, client: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)  # whatever the global RNG holds (the target's training left it anywhere)
        seed = derive_seed(attack_seed, "client", client)  # as the attack seeds each client
        return build_module(cfg, model, gradient, None, seed, cfg.restarts).objective.soft_labels.detach().clone()

    labels = dummy_labels(0, 0, global_seed=0)
    assert labels.shape == (2, 2, 10)
    assert torch.equal(labels, dummy_labels(0, 0, global_seed=1234))
    assert not torch.equal(labels, dummy_labels(1, 0, global_seed=0))  # another attacker seed
    assert not torch.equal(labels, dummy_labels(0, 1, global_seed=0))  # another client


@pytest.mark.parametrize("labels", [[3, 3, 7, 1], [6, 6, 6, 6], [0] * 5 + [1] * 3 + [2, 2, 4, 4, 4, 7, 7, 9]])
def test_bias_counts_are_exact_where_every_image_has_the_mean_output(labels):
    # dL/db = p - counts / B when every output is p: n_c = B (p_c - dL/db_c) recovers each count, repeats included.
    batch, classes = len(labels), 10
    p = torch.softmax(torch.randn(classes, generator=torch.Generator().manual_seed(batch)), dim=0)
    bias = p - torch.bincount(torch.tensor(labels), minlength=classes).float() / batch
    assert recover_label_counts(bias, batch, p).tolist() == sorted(labels)


def test_bias_counts_always_give_batch_size_labels_even_from_a_wrong_mean():
    bias = torch.tensor([0.3, -0.5, 0.1, 0.1])
    for wrong in (torch.zeros(4), torch.ones(4), torch.tensor([0.9, 0.0, 0.05, 0.05])):
        recovered = recover_label_counts(bias, 6, wrong)
        assert len(recovered) == 6 and bool((recovered >= 0).all() and (recovered < 4).all())


def test_bias_counts_recover_repeated_labels_of_an_untrained_network_the_row_signs_miss():
    # An untrained sigmoid LeNet's outputs vary little between inputs: its mean output on other images (the
    # attacker's) counts a batch of 16 with repeated labels exactly, where the row-sign rule (equal means assumed)
    # does not.
    model = _model()
    generator = torch.Generator().manual_seed(0)
    public = torch.rand(256, 1, 28, 28, generator=generator)
    with torch.no_grad():
        mean = model(public).softmax(dim=-1).mean(dim=0)
    labels = torch.tensor([0, 0, 0, 3, 3, 7, 7, 7, 7, 1, 2, 5, 5, 8, 9, 9])
    gradient = SimulatedClient(model, torch.rand(16, 1, 28, 28, generator=generator), labels).shared_gradient()
    weight, bias = last_linear(model, gradient)
    assert recover_label_counts(bias, 16, mean).tolist() == sorted(labels.tolist())
    assert recover_labels(weight, 16, bias).tolist() != sorted(labels.tolist())


class HeadDeclaredFirst(torch.nn.Module):
    """A classifier whose output layer is declared before its hidden one (``named_modules`` order is not the order
    they run in), and one whose outputs are not a linear layer's."""

    def __init__(self, squash: bool = False):
        super().__init__()
        self.head = torch.nn.Linear(16, 10)
        self.hidden = torch.nn.Linear(28 * 28, 16)
        self.squash = squash

    def forward(self, x):
        logits = self.head(torch.relu(self.hidden(x.flatten(1))))
        return torch.tanh(logits) * 5 if self.squash else logits


class TupleOutputs(torch.nn.Module):
    """Logits and features: not one tensor of logits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)), x


def test_the_layer_labels_are_read_from_is_the_one_giving_the_outputs_whatever_its_place_in_the_code():
    from privacy_attacks.attacks.gradient_inversion.last_layer import last_linear_named, locate_output_linear
    from privacy_attacks.errors import ConfigError

    torch.manual_seed(0)
    model = HeadDeclaredFirst().eval().requires_grad_(False)
    assert last_linear_named(model)[0] == "hidden"  # unlocated: the last declared, the wrong one here
    assert locate_output_linear(model, (1, 28, 28)) == "head"
    for label in (0, 4, 9):
        gradient = SimulatedClient(model, torch.rand(1, 1, 28, 28), torch.tensor([label])).shared_gradient()
        weight, bias = last_linear(model, gradient)
        assert weight.shape == (10, 16) and recover_labels(weight, 1, bias).tolist() == [label]
    squashed = HeadDeclaredFirst(squash=True).eval().requires_grad_(False)
    assert locate_output_linear(squashed, (1, 28, 28)) == "head"  # the last run, with as many outputs
    squeezed = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Flatten(0))  # (N * 10,)
    assert locate_output_linear(squeezed, (1, 28, 28)) is None
    assert locate_output_linear(TupleOutputs(), (1, 28, 28)) is None
    hidden_last = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.ReLU(), torch.nn.Unflatten(1, (2, 5))
    )
    assert locate_output_linear(hidden_last, (1, 28, 28)) is None
    with pytest.raises(ConfigError, match="whose outputs are an nn.Linear layer's .*method=dlg"):
        last_linear_named(hidden_last)
