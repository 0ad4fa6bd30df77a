import copy

import pytest
import torch

from privacy_attacks.defenses import DPSGD
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import (
    ACTIVATIONS,
    MLP,
    Deskew,
    DeskewedLeNet5,
    EvaluatorCNN,
    LeNet5,
    Normalize,
    ResNet,
    SmallVGG,
)


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


# The shape-aware models, small: each is built from the data's (C, H, W) and classes, nothing of MNIST's written in.
SHAPE_AWARE = {
    "mlp": (MLP, {"width": 32}),
    "cnn": (SmallVGG, {"width": 8}),
    "resnet": (ResNet, {"depth": 8, "width": 8}),
    "resnet_group": (ResNet, {"depth": 8, "width": 8, "norm": "group"}),
}


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 17, 23)])
@pytest.mark.parametrize("name", sorted(SHAPE_AWARE))
def test_shape_aware_models_take_any_shape_and_class_count(name, shape):
    cls, kwargs = SHAPE_AWARE[name]
    torch.manual_seed(0)
    net = cls(shape, 7, mean=[0.5] * shape[0], std=[0.25] * shape[0], **kwargs)
    x = torch.rand(4, *shape)
    logits = net(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    features = net.eval().features(x)
    assert list(features)[-1] == "logits" and list(features) == list(cls.LAYERS)  # the attacks read the class's
    torch.testing.assert_close(features["logits"], net(x))


def test_per_channel_normalisation_is_not_a_weight():
    normalize = Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    x = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    torch.testing.assert_close(normalize(x), torch.zeros(2, 3, 4, 4))
    assert dict(normalize.state_dict()) == {}
    assert not any("normalize" in key for key in ResNet((3, 8, 8), 2, [0.5] * 3, [0.2] * 3, depth=8).state_dict())


def test_group_norm_variants_are_what_dpsgd_trains():
    dpsgd = DPSGD()
    dpsgd.check_network(ResNet((3, 16, 16), 10, depth=8, width=8, norm="group"))
    dpsgd.check_network(SmallVGG((3, 16, 16), 10, width=8, norm="group"))
    for net in (ResNet((3, 16, 16), 10, depth=8, width=8), SmallVGG((3, 16, 16), 10, width=8)):
        with pytest.raises(ConfigError, match=r"cannot train .* privately .*BatchNorm.*model.net.norm=group"):
            dpsgd.check_network(net)
    own = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))  # a network without a norm argument
    with pytest.raises(ConfigError, match=r"BatchNorm.*Build it with group norm \(nn.GroupNorm\)"):
        dpsgd.check_network(own)


def test_a_torchvision_network_is_told_its_group_norm_key_too():
    """Built as an nn.Sequential, it takes norm= through its factory: the hint reads the config node's target."""
    from omegaconf import OmegaConf

    from privacy_attacks.training import check_network
    from tests.conftest import attack_config

    data = attack_config("inversion", ["data=synthetic", "data.image_shape=[3,32,32]"]).data
    node = {"_target_": "privacy_attacks.models.torchvision_classifier", "name": "resnet18"}
    recipe = OmegaConf.create({"net": {**node, "image_shape": [3, 32, 32], "num_classes": 10}})
    with pytest.raises(ConfigError, match=r"cannot train resnet18 privately .*\(attacker_net.norm=group\)"):
        check_network(recipe, "shadow_recipe", data, DPSGD(), net_key="attacker_net")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ResNet((3, 32, 32), 10, depth=21), "depth=21 .*6n \\+ 2"),
        (lambda: SmallVGG((3, 4, 4), 10, stages=3), "stages=3 .*4x4.*at most 2"),
        (lambda: MLP((3, 32), 10), "image_shape"),
        (lambda: ResNet((3, 32, 32), 10, norm="layer"), "norm='layer' is not one of the choices"),
    ],
)
def test_bad_architecture_settings_stop_in_one_line(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_a_torchvision_classifier_takes_any_datas_channels_and_classes(shape):
    from privacy_attacks.models import torchvision_classifier
    from privacy_attacks.models.taps import layer_output

    net = torchvision_classifier("resnet18", shape, 7, mean=[0.5] * shape[0], std=[0.25] * shape[0])
    images = torch.rand(2, *shape, requires_grad=True)
    assert net(images).shape == (2, 7)
    features = layer_output(net, "net.layer3.1.conv2", images)
    assert features.shape[:2] == (2, 256)
    features.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_a_torchvision_classifier_with_group_norm_is_one_dp_sgd_can_train(name):
    from opacus.validators import ModuleValidator

    from privacy_attacks.errors import ConfigError
    from privacy_attacks.models import torchvision_classifier

    assert ModuleValidator.validate(torchvision_classifier(name, (3, 32, 32), 7), strict=False)  # batch norm
    net = torchvision_classifier(name, (3, 32, 32), 7, norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert ModuleValidator.validate(net, strict=False) == []
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ConfigError, match="net.norm='layer' is not one of the choices: batch, group"):
        torchvision_classifier(name, (3, 32, 32), 7, norm="layer")


def test_an_unknown_torchvision_classifier_is_one_line():
    from privacy_attacks.errors import ConfigError
    from privacy_attacks.models import torchvision_classifier

    with pytest.raises(ConfigError, match=r"net.name='lenet' is not a torchvision classifier \(e.g. alexnet"):
        torchvision_classifier("lenet", (1, 28, 28), 10)


def test_a_stacked_model_comes_back_with_its_per_channel_statistics():
    """stack_module_state returns Normalize's per-channel mean and std (buffers outside the state dict) beside the
    weights: unstacking puts both back, into a real module or a template on the meta device."""
    from torch.func import stack_module_state

    from privacy_attacks.models.layers import load_stacked

    torch.manual_seed(0)
    nets = [MLP((3, 8, 8), 4, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], width=16) for _ in range(2)]
    params, buffers = stack_module_state(nets)
    assert "normalize.mean" in buffers  # the reason this helper exists
    images = torch.rand(5, 3, 8, 8)
    for index, original in enumerate(nets):
        copy_ = load_stacked(MLP((3, 8, 8), 4, mean=[0.0] * 3, std=[1.0] * 3, width=16), {**params, **buffers}, index)
        template = load_stacked(copy.deepcopy(copy_).to("meta"), {**params, **buffers}, index, assign=True)
        for net in (copy_, template):
            assert torch.allclose(net.normalize.mean, original.normalize.mean)
            assert torch.equal(net(images), original(images))
