"""A folder of images, one subfolder per class (torchvision's ``ImageFolder`` layout), as a dataset: every image
resized to one shape and converted to tensors once.

    train_dir/cat/001.jpg, train_dir/dog/002.png, ...   test_dir/cat/..., test_dir/dog/...
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.errors import ConfigError, DataUnavailableError, is_integer


class ImageFolderSource(ImageSource):
    """The images under ``train_dir`` and ``test_dir``, one subfolder per class (the same classes in both; the
    subfolders' names, sorted, are the class names and give the labels 0, 1, ...).

    Args:
        train_dir, test_dir: the training and test folders.
        image_shape: (C, H, W) every image is converted to: resized to H x W (bilinear, aspect ratio not kept),
            C = 1 (greyscale) or 3 (RGB).
    """

    name = "image_folder"

    def __init__(self, train_dir: str, test_dir: str, image_shape: Sequence[int] = (3, 32, 32)):
        shape = tuple(image_shape)
        if len(shape) != 3 or shape[0] not in (1, 3) or not all(is_integer(s) and s > 0 for s in shape):
            raise ConfigError(
                f"data.image_shape={list(shape)!r} is not allowed for a folder of images: it must be "
                "[1 or 3 channels, height, width]."
            )
        self.train_dir, self.test_dir = Path(train_dir).expanduser(), Path(test_dir).expanduser()
        self.image_shape = shape

    def identity(self) -> tuple:
        return (str(self.train_dir.resolve()), str(self.test_dir.resolve()), self.image_shape)

    def _read(self, folder: Path, key: str) -> tuple[Tensor, Tensor, list[str]]:
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        channels, height, width = self.image_shape
        steps = [transforms.Resize((height, width))]
        if channels == 1:
            steps.append(transforms.Grayscale(num_output_channels=1))
        transform = transforms.Compose([*steps, transforms.ToTensor()])
        try:
            dataset = ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, OSError) as error:
            reason = (str(error).splitlines() or [""])[0]
            raise DataUnavailableError(
                f"No folder of images at {folder} ({reason}): set data.source.{key}=/path/to/folder, a folder with "
                "one subfolder of images per class."
            ) from error
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return images, torch.tensor(dataset.targets, dtype=torch.long), list(dataset.classes)

    def read(self) -> SourceData:
        train_images, train_labels, classes = self._read(self.train_dir, "train_dir")
        test_images, test_labels, test_classes = self._read(self.test_dir, "test_dir")
        if test_classes != classes:
            raise ConfigError(
                f"The class subfolders of {self.test_dir} ({', '.join(test_classes)}) are not those of "
                f"{self.train_dir} ({', '.join(classes)}): both folders need the same classes."
            )
        return SourceData(train_images, train_labels, test_images, test_labels, tuple(classes))
