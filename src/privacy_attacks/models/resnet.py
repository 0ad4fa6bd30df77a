"""The CIFAR ResNet of He, Zhang, Ren & Sun (CVPR 2016, "Deep residual learning for image recognition", section 4.2),
for images of any shape: depth 6n + 2, three stages of n basic blocks of ``width``, 2 ``width`` and 4 ``width``
channels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from privacy_attacks.errors import ConfigError, is_integer, require_int
from privacy_attacks.models.layers import NamedBlocks, image_shape_of, input_normalize, norm2d


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a strided 1x1 convolution where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = norm2d(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.norm2 = norm2d(norm, cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), norm2d(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        return self.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class ResNet(NamedBlocks):
    """CIFAR-style ResNet: 3x3 stem, three stages of (depth - 2) / 6 basic blocks (the second and third halve the
    resolution), global average pooling, a linear layer: (N, C, H, W) in [0, 1] -> (N, classes).

    Args:
        image_shape: (C, H, W) of the inputs.
        num_classes: outputs.
        mean, std: per-channel pixel statistics the inputs are normalised with (None: none).
        depth: 6n + 2 layers with weights (8, 14, 20, 32, 44, 56, 110; ResNet-20 has 0.27M weights at width 16).
        width: channels of the first stage (16 in the paper).
        norm: ``batch`` (the paper's), ``group`` (per example: DP-SGD can train it) or ``none``.

    Named blocks ``stem``, ``stage1``, ``stage2``, ``stage3`` and ``logits`` (:meth:`features`).

    Example:
        >>> ResNet((3, 32, 32), 10, depth=8)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    LAYERS = ("stem", "stage1", "stage2", "stage3", "logits")

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        depth: int = 20,
        width: int = 16,
        norm: str = "batch",
    ):
        super().__init__()
        channels, _, _ = image_shape_of(image_shape)
        require_int(num_classes, "num_classes")
        require_int(width, "width")
        if not is_integer(depth) or depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"depth={depth!r} is not allowed: it must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56).")
        blocks = (depth - 2) // 6
        self.normalize = input_normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=norm == "none"), norm2d(norm, width), nn.ReLU()
        )
        cin = width
        for index in range(3):
            cout = width * 2**index
            stage = []
            for block in range(blocks):
                stage.append(BasicBlock(cin, cout, 2 if index > 0 and block == 0 else 1, norm))
                cin = cout
            setattr(self, f"stage{index + 1}", nn.Sequential(*stage))
        self.logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
