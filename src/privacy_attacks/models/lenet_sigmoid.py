"""The sigmoid LeNet of Deep Leakage from Gradients (Zhu, Liu & Han, NeurIPS 2019) and iDLG (Zhao, Mopuri & Bilen,
2020).

Three 5x5 convolutions of 12 channels with sigmoid activations (strides 2, 2, 1) and one linear
layer, weights and biases drawn uniformly from [-0.5, 0.5] as in the papers' code: a smooth,
twice-differentiable network whose gradients leak their input almost exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class LeNetSigmoid(nn.Module):
    """DLG's LeNet: (N, C, H, W) in [0, 1] -> logits (N, classes); no input normalisation, as in the papers.

    Built for ``image_shape`` (C, H, W) (MNIST's (1, 28, 28) by default; ``image_size`` S: (1, S, S)). Named
    blocks, for MNIST: ``conv1`` (N, 12, 14, 14), ``conv2`` (N, 12, 7, 7), ``conv3`` (N, 12, 7, 7), ``logits``.

    Example:
        >>> LeNetSigmoid()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("conv1", "conv2", "conv3", "logits")

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 12,
        image_size: int = 28,
        init_range: float = 0.5,
        image_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.init_range = init_range
        in_channels, height, width = (1, image_size, image_size) if image_shape is None else map(int, image_shape)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, channels, 5, padding=2, stride=2), nn.Sigmoid())
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 5, padding=2, stride=2), nn.Sigmoid())
        self.conv3 = nn.Sequential(nn.Conv2d(channels, channels, 5, padding=2, stride=1), nn.Sigmoid())
        # two stride-2 convolutions with padding 2 and kernel 5: ceil(side / 4) per side
        self.logits = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * ((height + 3) // 4) * ((width + 3) // 4), num_classes)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-init_range, init_range) (DLG's ``weights_init``); PyTorch's default if 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if self.init_range > 0:
                    nn.init.uniform_(module.weight, -self.init_range, self.init_range)
                    nn.init.uniform_(module.bias, -self.init_range, self.init_range)
                else:
                    module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.conv3(self.conv2(self.conv1(x))))

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Every named block's output for ``x``: {layer name: activation}, in forward order."""
        out, h = {}, x
        for name in self.LAYERS:
            h = getattr(self, name)(h)
            out[name] = h
        return out
