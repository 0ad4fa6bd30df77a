"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-based learning applied to document recognition")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.models.layers import MNIST_MEAN, MNIST_STD, NamedBlocks, image_shape_of, input_normalize

MNIST_SHAPE = (1, 28, 28)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
POOLINGS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5(NamedBlocks):
    """Classic LeNet5: conv 6@5x5 pad 2 -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> classes.

    Input (N, C, H, W) in [0, 1] pixel space (normalised inside; MNIST's (1, 28, 28) by default); output logits
    (N, classes). The blocks are named so attacks can read intermediate features; on MNIST:
    ``conv1`` (N, 6, 14, 14), ``conv2`` (N, 16, 5, 5), ``fc1`` (N, 120), ``fc2`` (N, 84), ``logits``.

    Args:
        num_classes: outputs.
        activation, pooling: one of :data:`ACTIVATIONS`, :data:`POOLINGS`.
        image_shape: (C, H, W) of the inputs (H and W at least 12): sizes the first convolution and ``fc1``.
        mean, std: per-channel pixel statistics the inputs are normalised with (MNIST's by default).

    Example:
        >>> LeNet5(activation="relu")(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> LeNet5(image_shape=(3, 32, 32))(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("conv1", "conv2", "fc1", "fc2", "logits")

    def __init__(
        self,
        num_classes: int = 10,
        activation: str = "relu",
        pooling: str = "max",
        image_shape: Sequence[int] = MNIST_SHAPE,
        mean: float | Sequence[float] = MNIST_MEAN,
        std: float | Sequence[float] = MNIST_STD,
    ):
        super().__init__()
        require_choice(activation, ACTIVATIONS, "activation")
        require_choice(pooling, POOLINGS, "pooling")
        channels, height, width = image_shape_of(image_shape)
        if min(height, width) < 12:
            raise ConfigError(
                f"LeNet5 takes images of at least 12x12, not {height}x{width} (data.image_shape): choose a network "
                "for smaller images (model=mlp, or net@<recipe>.net=mlp)."
            )
        act, pool = ACTIVATIONS[activation], POOLINGS[pooling]
        self.normalize = input_normalize(mean, std)
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2), act(), pool(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), act(), pool(2))
        fc1_inputs = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(fc1_inputs, 120), act())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), act())
        self.logits = nn.Linear(84, num_classes)


class Deskew(nn.Module):
    """Moment-based deskewing of each image on its own, the "deslanted" inputs of LeCun et al. (1998)'s baselines.

    From an image's intensity moments (centre of mass ``(m_r, m_c)``, row variance ``v_r``, row-column covariance
    ``v_rc``) it shears the rows by ``alpha = v_rc / v_r`` so the strokes stand upright, and moves the centre of
    mass to the image's centre; bilinear resampling (``grid_sample``), zeros outside. It has no parameters and reads
    one image only, so under DP-SGD it is part of the per-example function and costs no privacy.
    Input (N, C, H, W) pixels in [0, 1] (the moments are those of the channels' mean); output the same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
        cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
        image = x.mean(dim=1)
        mass = image.sum((1, 2)).clamp_min(1e-6)
        mean_r = ((image * rows).sum((1, 2)) / mass).view(n, 1, 1)
        mean_c = ((image * cols).sum((1, 2)) / mass).view(n, 1, 1)
        from_mean_r = rows - mean_r
        var_r = (image * from_mean_r**2).sum((1, 2)) / mass
        cov_rc = (image * from_mean_r * (cols - mean_c)).sum((1, 2)) / mass
        alpha = (cov_rc / var_r.clamp_min(1e-6)).view(n, 1, 1)
        centred_r = rows - (h - 1) / 2  # output pixel (r, c) reads the input at these source coordinates
        source_r = (centred_r + mean_r).expand(n, h, w)
        source_c = alpha * centred_r + (cols - (w - 1) / 2) + mean_c
        grid = torch.stack(((2 * source_c + 1) / w - 1, (2 * source_r + 1) / h - 1), dim=-1)  # (N, H, W, 2): x, y
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DeskewedLeNet5(LeNet5):
    """:class:`LeNet5` behind a fixed :class:`Deskew` layer: the same blocks and weights, fed upright, centred digits.

    Input (N, C, H, W) in [0, 1]; output logits (N, classes); arguments and :meth:`features` as :class:`LeNet5`'s,
    of the deskewed input.
    """

    def __init__(
        self,
        num_classes: int = 10,
        activation: str = "relu",
        pooling: str = "max",
        image_shape: Sequence[int] = MNIST_SHAPE,
        mean: float | Sequence[float] = MNIST_MEAN,
        std: float | Sequence[float] = MNIST_STD,
    ):
        super().__init__(num_classes, activation, pooling, image_shape, mean, std)
        self.deskew = Deskew()

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.deskew(x))

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return super().features(self.deskew(x))
