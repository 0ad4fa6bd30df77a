"""A small VGG-style convolutional network for images of any shape (Simonyan & Zisserman 2015, "Very deep
convolutional networks for large-scale image recognition": stacks of 3x3 convolutions between 2x2 poolings)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.models.layers import NamedBlocks, image_shape_of, input_normalize, norm2d


class SmallVGG(NamedBlocks):
    """``stages`` stages of ``convs`` 3x3 convolutions (norm, ReLU) and a 2x2 max pooling, channels ``width``,
    2 ``width``, 4 ``width`` ...; global average pooling, dropout and a linear layer to the logits.
    (N, C, H, W) in [0, 1] -> (N, classes); H and W at least 2^stages.

    Args:
        image_shape: (C, H, W) of the inputs.
        num_classes: outputs.
        mean, std: per-channel pixel statistics the inputs are normalised with (None: none).
        width: channels of the first stage (doubled at each next stage).
        stages: stages (each halves the resolution).
        convs: 3x3 convolutions per stage.
        norm: ``batch``, ``group`` (for DP-SGD: per example) or ``none``.
        dropout: dropout before the last layer.

    Named blocks ``body`` (the last stage's feature maps) and ``logits`` (:meth:`features`).

    Example:
        >>> SmallVGG((3, 32, 32), 10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("body", "logits")

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        width: int = 32,
        stages: int = 3,
        convs: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        channels, height, width_px = image_shape_of(image_shape)
        require_int(num_classes, "num_classes")
        require_int(width, "width")
        require_int(stages, "stages")
        require_int(convs, "convs")
        require_positive(dropout, "dropout", allow_zero=True)
        if min(height, width_px) < 2**stages:
            raise ConfigError(
                f"stages={stages} halve the resolution {stages} times, more than images of {height}x{width_px} allow: "
                f"lower stages (at most {max(min(height, width_px).bit_length() - 1, 0)})."
            )
        self.normalize = input_normalize(mean, std)
        blocks: list[tuple[str, nn.Module]] = []
        cin = channels
        for index in range(stages):
            cout = width * 2**index
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"), norm2d(norm, cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
            blocks.append((f"stage{index + 1}", nn.Sequential(*layers)))
        self.body = nn.Sequential(OrderedDict(blocks))
        self.logits = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
        )
