"""An independent evaluation classifier, of a different architecture than the target.

The model-inversion literature scores a reconstruction by whether a classifier the
attacker did not invert recognises it (e.g. Zhang et al. 2020, "The Secret Revealer").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from privacy_attacks.errors import ConfigError
from privacy_attacks.models.layers import MNIST_MEAN, MNIST_STD, image_shape_of, input_normalize

MNIST_SHAPE = (1, 28, 28)


class EvaluatorCNN(nn.Module):
    """3x3-conv network with batch norm and dropout: (N, C, H, W) in [0, 1] -> logits (N, classes) (MNIST's
    (1, 28, 28) by default; H and W at least 4).

    conv 32 -> conv 32 -> pool -> conv 64 -> conv 64 -> pool -> 256 -> dropout -> classes; ``mean``, ``std``: the
    per-channel statistics inputs are normalised with (MNIST's by default).
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 32,
        dropout: float = 0.3,
        image_shape: Sequence[int] = MNIST_SHAPE,
        mean: float | Sequence[float] = MNIST_MEAN,
        std: float | Sequence[float] = MNIST_STD,
    ):
        super().__init__()
        channels, height, width_px = image_shape_of(image_shape)
        if min(height, width_px) < 4:
            raise ConfigError(
                f"EvaluatorCNN takes images of at least 4x4, not {height}x{width_px} (data.image_shape): choose "
                "another network for the evaluator (net@evaluator.net=mlp)."
            )

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            input_normalize(mean, std),
            *block(channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (width_px // 4), 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AllConvNet(nn.Module):
    """All-convolutional judge (Springenberg et al. 2015, "Striving for Simplicity"): strided 3x3 convs with
    GELU, no pooling layer, no batch norm, global average pooling: (N, C, H, W) in [0, 1] -> logits (N, classes)
    (MNIST's (1, 28, 28) by default; ``mean``, ``std`` as :class:`EvaluatorCNN`'s).

    conv 32 -> conv 32 /2 -> conv 64 -> conv 64 /2 -> conv 128 -> 1x1 conv classes -> global mean.
    Shares nothing with LeNet5 or :class:`EvaluatorCNN` but the task: a second, independent judge.
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 32,
        image_shape: Sequence[int] = MNIST_SHAPE,
        mean: float | Sequence[float] = MNIST_MEAN,
        std: float | Sequence[float] = MNIST_STD,
    ):
        super().__init__()
        channels = image_shape_of(image_shape)[0]

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU()]

        self.net = nn.Sequential(
            input_normalize(mean, std),
            *conv(channels, width),
            *conv(width, width, 2),
            *conv(width, 2 * width),
            *conv(2 * width, 2 * width, 2),
            *conv(2 * width, 4 * width),
            nn.Conv2d(4 * width, num_classes, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
