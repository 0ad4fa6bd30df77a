import pytest
import torch

from privacy_attacks.errors import ConfigError
from privacy_attacks.models import ACTIVATIONS, Deskew, DeskewedLeNet5, EvaluatorCNN, LeNet5, Normalize


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


def _moments(x):
    """Centre of mass (row, col) and row shear (cov_rc / var_r) of each image of (N, 1, H, W)."""
    image = x[:, 0]
    rows = torch.arange(image.shape[1], dtype=x.dtype).view(1, -1, 1)
    cols = torch.arange(image.shape[2], dtype=x.dtype).view(1, 1, -1)
    mass = image.sum((1, 2))
    mean_r = (image * rows).sum((1, 2)) / mass
    mean_c = (image * cols).sum((1, 2)) / mass
    d_r, d_c = rows - mean_r.view(-1, 1, 1), cols - mean_c.view(-1, 1, 1)
    shear = (image * d_r * d_c).sum((1, 2)) / (image * d_r**2).sum((1, 2))
    return mean_r, mean_c, shear


def test_deskew_stands_a_slanted_stroke_upright_and_centres_it():
    slanted = torch.zeros(1, 1, 28, 28)
    for row in range(6, 22):
        slanted[0, 0, row, 4 + (21 - row) // 2] = 1.0  # a "/" leaning right, left of centre
    mean_r, mean_c, shear = _moments(slanted)
    assert shear.abs() > 0.4 and mean_c < 10
    upright = Deskew()(slanted)
    assert upright.shape == slanted.shape
    mean_r, mean_c, shear = _moments(upright)
    assert shear.abs() < 0.05
    torch.testing.assert_close(torch.cat([mean_r, mean_c]), torch.tensor([13.5, 13.5]), atol=0.05, rtol=0)


def test_deskew_leaves_an_upright_centred_image_alone_and_a_blank_one_blank():
    upright = torch.zeros(1, 1, 28, 28)
    upright[0, 0, 10:18, 12:16] = 1.0  # symmetric about the centre (13.5, 13.5): no shear, no shift
    torch.testing.assert_close(Deskew()(upright), upright)
    blank = torch.zeros(2, 1, 28, 28)
    assert torch.equal(Deskew()(blank), blank)


def test_deskewed_lenet5_is_lenet5_behind_the_layer():
    torch.manual_seed(0)
    plain = LeNet5(activation="tanh", pooling="avg")
    torch.manual_seed(0)
    deskewed = DeskewedLeNet5(activation="tanh", pooling="avg").eval()
    assert deskewed.state_dict().keys() == plain.state_dict().keys()  # no weights of its own
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(deskewed(x), plain.eval()(Deskew()(x)))
    assert list(deskewed.features(x)) == list(LeNet5.LAYERS)
