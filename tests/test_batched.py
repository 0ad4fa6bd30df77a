import pytest
import torch
from torch import nn

from privacy_attacks.batched import in_batches, net_device


def test_in_batches_gives_the_numbers_of_one_call_in_chunks():
    net = nn.Linear(4, 3)
    images = torch.randn(10, 4)
    out = in_batches(net, images, batch_size=3)
    assert out.shape == (10, 3) and not out.requires_grad
    torch.testing.assert_close(out, net(images).detach())


def test_in_batches_chunks_several_inputs_alike_and_concatenates_along_dim():
    a, b = torch.arange(7.0), torch.arange(7.0) * 10
    out = in_batches(lambda x, y: torch.stack([x, y]), a, b, batch_size=2, dim=1)
    torch.testing.assert_close(out, torch.stack([a, b]))


def test_in_batches_keeps_the_output_shape_for_no_rows():
    out = in_batches(nn.Linear(4, 3), torch.empty(0, 4), batch_size=5)
    assert out.shape == (0, 3)


@pytest.mark.parametrize("chunks", [1, 4, 100])
def test_in_batches_calls_fn_once_per_chunk(chunks):
    calls = []
    in_batches(lambda x: calls.append(len(x)) or x, torch.zeros(9), batch_size=chunks)
    assert sum(calls) == 9 and len(calls) == -(-9 // chunks)


def test_net_device_of_a_network_without_parameters_is_the_cpu():
    assert net_device(nn.ReLU()) == torch.device("cpu")
    assert net_device(nn.Linear(2, 2)) == torch.device("cpu")


def test_a_network_that_branches_on_its_tensors_values_is_named_as_one_vmap_cannot_stack():
    from privacy_attacks.batched import vmap_refusal
    from privacy_attacks.models import LeNet5
    from tests.nets import Branchy

    images, branchy, lenet = torch.rand(3, 1, 28, 28), Branchy(), LeNet5()
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, 10)).train()  # draws from the global RNG
    state = torch.get_rng_state()
    refusal = vmap_refusal(branchy, images)
    assert refusal.startswith("Branchy cannot run as a stack of models under torch.vmap (") and "\n" not in refusal
    assert vmap_refusal(lenet, images) is None and vmap_refusal(dropout, images) is None
    assert torch.equal(torch.get_rng_state(), state)
    wrong_shape = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))  # fails alone too: not called vmap's doing
    assert vmap_refusal(wrong_shape, images) is None
