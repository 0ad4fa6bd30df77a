"""A multilayer perceptron for images of any shape."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from privacy_attacks.errors import require_choice, require_int, require_positive
from privacy_attacks.models.layers import image_shape_of, input_normalize
from privacy_attacks.models.lenet5 import ACTIVATIONS, NamedBlocks


class MLP(NamedBlocks):
    """Flattened pixels -> ``depth`` hidden layers of ``width`` units -> logits: (N, C, H, W) in [0, 1] -> (N, classes).

    Args:
        image_shape: (C, H, W) of the inputs.
        num_classes: outputs.
        mean, std: per-channel pixel statistics the inputs are normalised with (None: none).
        width: units per hidden layer.
        depth: hidden layers (>= 1).
        activation: one of :data:`~privacy_attacks.models.lenet5.ACTIVATIONS`.
        dropout: dropout after each hidden layer (0: none).

    Named blocks ``hidden`` (the last hidden layer's output) and ``logits`` (:meth:`features`).

    Example:
        >>> MLP((3, 32, 32), 10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("hidden", "logits")

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        width: int = 256,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        channels, height, width_px = image_shape_of(image_shape)
        require_int(num_classes, "num_classes")
        require_int(width, "width")
        require_int(depth, "depth")
        require_choice(activation, ACTIVATIONS, "activation")
        require_positive(dropout, "dropout", allow_zero=True)
        self.normalize = input_normalize(mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        inputs = channels * height * width_px
        for _ in range(depth):
            layers += [nn.Linear(inputs, width), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            inputs = width
        self.hidden = nn.Sequential(*layers)
        self.logits = nn.Linear(inputs, num_classes)
