"""Networks that the tests build where a researcher's own model is the point."""

from __future__ import annotations

import math

import torch
from torch import nn


class Branchy(nn.Module):
    """A classifier whose forward branches on its input's values (``if x.max() > 1.5``): it trains and predicts as any
    other, but :func:`torch.vmap` cannot run copies of it as one stacked model."""

    def __init__(self, image_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(math.prod(image_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.max() > 1.5:
            x = x / 2
        return self.fc(torch.sigmoid(x.flatten(1)))
