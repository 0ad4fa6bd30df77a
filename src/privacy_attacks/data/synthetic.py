"""Synthetic images of any shape and class count, generated from a seed: for tests, and to try a model or a shape in
seconds (``python train.py data=synthetic data.image_shape=[3,32,32] model=resnet``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from privacy_attacks.data.module import checked_shape
from privacy_attacks.data.source import ImageSource, SourceData, balanced_labels
from privacy_attacks.errors import require_int, require_positive


class SyntheticSource(ImageSource):
    """Each class is a smooth random pattern (uniform noise at a quarter of the resolution, upsampled bilinearly);
    an image is its class's pattern plus Gaussian pixel noise, clamped to [0, 1]. Learnable (the nearest pattern
    classifies almost every image at the default noise), so a model can beat chance; labels balanced, in a seeded
    order; training and test images drawn independently.

    Args:
        image_shape: (C, H, W) of the images.
        num_classes: the number of classes (patterns).
        train_size, test_size: images in the training and test sets.
        noise: standard deviation of the pixel noise.
        seed: seed of the patterns, labels and noise.
    """

    name = "synthetic"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        train_size: int = 1000,
        test_size: int = 200,
        noise: float = 0.25,
        seed: int = 0,
    ):
        shape = checked_shape(image_shape)
        require_int(num_classes, "data.num_classes", minimum=2)
        require_int(train_size, "data.source.train_size", minimum=2)
        require_int(test_size, "data.source.test_size")
        require_positive(noise, "data.source.noise", allow_zero=True)
        require_int(seed, "data.source.seed", minimum=None)
        self.image_shape, self.num_classes = shape, num_classes
        self.train_size, self.test_size, self.noise, self.seed = train_size, test_size, float(noise), seed

    def identity(self) -> tuple:
        return (self.image_shape, self.num_classes, self.train_size, self.test_size, self.noise, self.seed)

    def _images(self, patterns: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = balanced_labels(count, self.num_classes, generator)
        noise = torch.randn((count, *self.image_shape), generator=generator) * self.noise
        return (patterns[labels] + noise).clamp_(0, 1), labels

    def read(self) -> SourceData:
        channels, height, width = self.image_shape
        generator = torch.Generator().manual_seed(self.seed)
        coarse = torch.rand((self.num_classes, channels, max(2, height // 4), max(2, width // 4)), generator=generator)
        patterns = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        train_images, train_labels = self._images(patterns, self.train_size, generator)
        test_images, test_labels = self._images(patterns, self.test_size, generator)
        names = tuple(f"class{c}" for c in range(self.num_classes))
        return SourceData(train_images, train_labels, test_images, test_labels, names)
