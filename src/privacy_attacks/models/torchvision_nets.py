"""Any torchvision classifier as a model for any data: ``torchvision.models.<name>`` built untrained for the data's
classes, its first convolution re-made for the data's channels, behind the data's normalisation."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torchvision
from torch import Tensor, nn

from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.models.layers import image_shape_of, input_normalize


def replace_module(net: nn.Module, path: str, replacement: nn.Module) -> None:
    """Put ``replacement`` at the module path ``path`` of ``net`` (``layer1.0.bn1``)."""
    parent_path, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent_path) if parent_path else net, name, replacement)


class GroupNormCopy(nn.Module):
    """``nn.GroupNorm`` whose output is a fresh tensor: torchvision's blocks add to a norm's output in place
    (``out += identity``), which the per-example gradient hooks DP-SGD puts on the norm (Opacus) refuse."""

    def __init__(self, groups: int, channels: int, affine: bool = True):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x).clone()


def torchvision_classifier(
    name: str,
    image_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm: str = "batch",
    **kwargs: Any,
) -> nn.Module:
    """``torchvision.models.<name>(weights=None, num_classes=num_classes, **kwargs)`` for (N, C, H, W) images in
    [0, 1]: ``normalize`` ((x - mean) / std per channel; none without them) then ``net``, whose first convolution
    takes C channels. Its layers are observable by module path (``net.layer3.1.conv2``). ``norm="group"`` puts a
    group norm (gcd(32, channels) groups, per example: DP-SGD can train it) in place of every batch norm; activations
    are not in place (the same values; DP-SGD's per-example hooks need them so).

    Example:
        >>> torchvision_classifier("resnet18", (1, 28, 28), 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    channels = image_shape_of(image_shape)[0]
    require_choice(norm, ("batch", "group"), "net.norm")
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise ConfigError(f"net.name={name!r} is not a torchvision classifier (e.g. {known}, ...).") from None
    net = builder(weights=None, num_classes=int(num_classes), **kwargs)
    first = next(((path, m) for path, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != channels:
        path, conv = first
        replacement = nn.Conv2d(
            channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
        )
        replace_module(net, path, replacement)
    for module in net.modules():  # in-place activations break the per-example gradient hooks of DP-SGD (Opacus)
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    if norm == "group":
        for path, module in list(net.named_modules()):
            if isinstance(module, nn.BatchNorm2d):
                groups = math.gcd(32, module.num_features)
                replace_module(net, path, GroupNormCopy(groups, module.num_features, module.affine))
    return nn.Sequential(OrderedDict(normalize=input_normalize(mean, std), net=net))
