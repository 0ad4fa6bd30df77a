"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-based learning applied to document recognition")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.errors import require_choice

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
POOLINGS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Normalize(nn.Module):
    """Maps [0, 1] pixels to zero-mean unit-variance inputs: (x - mean) / std, shapes unchanged.

    ``mean`` and ``std`` are numbers (every channel alike: MNIST's by default) or sequences of one number per channel
    (kept as buffers outside the state dict, so they move with the module and cost no weights).
    """

    def __init__(self, mean: float | Sequence[float] = MNIST_MEAN, std: float | Sequence[float] = MNIST_STD):
        super().__init__()
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
            self.mean, self.std = mean, std
        else:
            self.register_buffer("mean", torch.tensor(_floats(mean)).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_floats(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _floats(value: float | Sequence[float]) -> list[float]:
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


class NamedBlocks(nn.Module):
    """Base of the classifiers whose intermediate features attacks read: ``normalize`` (a module), then the blocks
    named in ``LAYERS``, in order, the last giving the logits. :meth:`features` returns every block's output."""

    LAYERS: tuple[str, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        h = self.normalize(x)
        for name in self.LAYERS:
            h = getattr(self, name)(h)
        return h

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Every named block's output for ``x``: {layer name: activation}, in forward order."""
        out, h = {}, self.normalize(x)
        for name in self.LAYERS:
            h = getattr(self, name)(h)
            out[name] = h
        return out


class LeNet5(NamedBlocks):
    """Classic LeNet5: conv 6@5x5 pad 2 -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> classes.

    Input (N, 1, 28, 28) in [0, 1] pixel space (normalised inside); output logits (N, classes).
    The blocks are named so attacks can read intermediate features:
    ``conv1`` (N, 6, 14, 14), ``conv2`` (N, 16, 5, 5), ``fc1`` (N, 120), ``fc2`` (N, 84), ``logits``.

    Example:
        >>> LeNet5(activation="relu")(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("conv1", "conv2", "fc1", "fc2", "logits")

    def __init__(self, num_classes: int = 10, activation: str = "relu", pooling: str = "max"):
        super().__init__()
        require_choice(activation, ACTIVATIONS, "activation")
        require_choice(pooling, POOLINGS, "pooling")
        act, pool = ACTIVATIONS[activation], POOLINGS[pooling]
        self.normalize = Normalize()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), act(), pool(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), act(), pool(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), act())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), act())
        self.logits = nn.Linear(84, num_classes)


class Deskew(nn.Module):
    """Moment-based deskewing of each image on its own, the "deslanted" inputs of LeCun et al. (1998)'s baselines.

    From an image's intensity moments (centre of mass ``(m_r, m_c)``, row variance ``v_r``, row-column covariance
    ``v_rc``) it shears the rows by ``alpha = v_rc / v_r`` so the strokes stand upright, and moves the centre of
    mass to the image's centre; bilinear resampling (``grid_sample``), zeros outside. It has no parameters and reads
    one image only, so under DP-SGD it is part of the per-example function and costs no privacy.
    Input (N, 1, H, W) pixels in [0, 1]; output the same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
        cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
        image = x[:, 0]
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

    Input (N, 1, 28, 28) in [0, 1]; output logits (N, classes); :meth:`features` as :class:`LeNet5`'s, of the
    deskewed input.
    """

    def __init__(self, num_classes: int = 10, activation: str = "relu", pooling: str = "max"):
        super().__init__(num_classes, activation, pooling)
        self.deskew = Deskew()

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.deskew(x))

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return super().features(self.deskew(x))
