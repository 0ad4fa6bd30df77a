import pytest
import torch

from privacy_attacks.errors import ConfigError
from privacy_attacks.models import ACTIVATIONS, EvaluatorCNN, LeNet5, Normalize


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_lenet5_maps_pixels_to_logits(activation):
    net = LeNet5(activation=activation)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_lenet5_has_the_classic_architecture():
    net = LeNet5()
    assert net.conv1[0].out_channels == 6 and net.conv1[0].kernel_size == (5, 5) and net.conv1[0].padding == (2, 2)
    assert net.conv2[0].out_channels == 16 and net.conv2[0].padding == (0, 0)
    assert [m.out_features for m in (net.fc1[1], net.fc2[0], net.logits)] == [120, 84, 10]
    assert sum(p.numel() for p in net.parameters()) == 61_706


def test_lenet5_features_are_named_and_end_in_the_logits():
    net = LeNet5().eval()
    x = torch.rand(2, 1, 28, 28)
    features = net.features(x)
    assert list(features) == list(LeNet5.LAYERS)
    shapes = {name: tuple(f.shape[1:]) for name, f in features.items()}
    assert shapes == {"conv1": (6, 14, 14), "conv2": (16, 5, 5), "fc1": (120,), "fc2": (84,), "logits": (10,)}
    torch.testing.assert_close(features["logits"], net(x))


def test_models_normalise_inside_so_inputs_are_pixels():
    normalize = Normalize(0.1307, 0.3081)
    torch.testing.assert_close(normalize(torch.full((1, 1, 2, 2), 0.1307)), torch.zeros(1, 1, 2, 2))
    assert isinstance(LeNet5().normalize, Normalize)


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ConfigError, match="relu.*tanh"):
        LeNet5(activation="swish")


def test_evaluator_is_a_different_architecture_with_the_same_interface():
    net = EvaluatorCNN()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert not isinstance(net, LeNet5)
