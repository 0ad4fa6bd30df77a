"""Any torchvision classifier as a model for any data: ``torchvision.models.<name>`` built untrained for the data's
classes, its first convolution re-made for the data's channels, behind the data's normalisation."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torchvision
from torch import nn

from privacy_attacks.errors import ConfigError
from privacy_attacks.models.layers import image_shape_of, input_normalize


def torchvision_classifier(
    name: str,
    image_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``torchvision.models.<name>(weights=None, num_classes=num_classes, **kwargs)`` for (N, C, H, W) images in
    [0, 1]: ``normalize`` ((x - mean) / std per channel; none without them) then ``net``, whose first convolution
    takes C channels. Its layers are observable by module path (``net.layer3.1.conv2``).

    Example:
        >>> torchvision_classifier("resnet18", (1, 28, 28), 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    channels = image_shape_of(image_shape)[0]
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise ConfigError(f"net.name={name!r} is not a torchvision classifier (e.g. {known}, ...).") from None
    net = builder(weights=None, num_classes=int(num_classes), **kwargs)
    first = next(((path, m) for path, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != channels:
        path, conv = first
        parent = net.get_submodule(path.rpartition(".")[0]) if "." in path else net
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
        setattr(parent, path.rpartition(".")[2], replacement)
    return nn.Sequential(OrderedDict(normalize=input_normalize(mean, std), net=net))
