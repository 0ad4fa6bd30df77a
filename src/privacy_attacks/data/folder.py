"""A folder of images, one subfolder per class (torchvision's ``ImageFolder`` layout), as a dataset: every image
resized to one shape and converted to tensors once.

    train_dir/cat/001.jpg, train_dir/dog/002.png, ...   test_dir/cat/..., test_dir/dog/...
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.errors import ConfigError, DataUnavailableError, is_integer

# PIL modes of more than 8 bits per channel and the value that maps to 1: 16-bit greyscale (PNG, TIFF), which
# torchvision's loader converts to 8-bit RGB by saturating every value above 255, and floating-point images, taken to
# hold [0, 1]. Mode "I" (32-bit integers, whose range the file does not say) keeps torchvision's conversion.
HIGH_DEPTH_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "F": 1.0}


def load_image(path: str) -> Image.Image | Tensor:
    """An image file as torchvision's ``ImageFolder`` loader reads it (RGB), except one of more than 8 bits per channel
    (:data:`HIGH_DEPTH_MODES`): a (1, H, W) float tensor in [0, 1], scaled by its bit depth."""
    with open(path, "rb") as handle:
        image = Image.open(handle)
        image.load()
    if image.mode not in HIGH_DEPTH_MODES:
        return image.convert("RGB")
    values = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (values / HIGH_DEPTH_MODES[image.mode]).clamp(0, 1)[None]


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

        if self.train_dir.resolve() == self.test_dir.resolve():
            raise ConfigError(
                f"data.source.train_dir and data.source.test_dir are the same folder ({self.train_dir}): the test "
                "images must be others than the training images (every attack's evaluation reads them)."
            )

    def identity(self) -> tuple:
        return (str(self.train_dir.resolve()), str(self.test_dir.resolve()), self.image_shape)

    def _read(self, folder: Path, key: str) -> tuple[Tensor, Tensor, list[str]]:
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        channels, height, width = self.image_shape
        steps = [transforms.Resize((height, width))]
        if channels == 1:
            steps.append(transforms.Grayscale(num_output_channels=1))
        eight_bit = transforms.Compose([*steps, transforms.ToTensor()])

        def transform(image: Image.Image | Tensor) -> Tensor:
            if isinstance(image, Image.Image):
                return eight_bit(image)
            resized = transforms.functional.resize(image, [height, width], antialias=True)  # (1, H, W) floats
            return resized.expand(channels, -1, -1).clone()

        try:
            dataset = ImageFolder(str(folder), transform=transform, loader=load_image)
        except (FileNotFoundError, OSError) as error:
            reason = (str(error).splitlines() or [""])[0]
            if "no valid file for the classes" in reason.lower():  # the folder is there, a class of it is empty
                raise DataUnavailableError(
                    f"A class subfolder of {folder} holds no image ({reason}): add its images or remove the subfolder."
                ) from error
            raise DataUnavailableError(
                f"No folder of images at {folder} ({reason}): set data.source.{key}=/path/to/folder, a folder with "
                "one subfolder of images per class."
            ) from error
        if len(dataset.classes) < 2:
            raise ConfigError(
                f"{folder} holds {len(dataset.classes)} class subfolder ({', '.join(dataset.classes)}): a dataset "
                "needs at least two classes, one subfolder of images each."
            )
        images = []
        for index, (path, _) in enumerate(dataset.samples):
            try:
                images.append(dataset[index][0])
            except OSError as error:  # PIL's UnidentifiedImageError too
                raise DataUnavailableError(
                    f"{path} is not a readable image ({type(error).__name__}): remove it from data.source.{key}."
                ) from None
        return torch.stack(images), torch.tensor(dataset.targets, dtype=torch.long), list(dataset.classes)

    def read(self) -> SourceData:
        train_images, train_labels, classes = self._read(self.train_dir, "train_dir")
        test_images, test_labels, test_classes = self._read(self.test_dir, "test_dir")
        if test_classes != classes:
            raise ConfigError(
                f"The class subfolders of {self.test_dir} ({', '.join(test_classes)}) are not those of "
                f"{self.train_dir} ({', '.join(classes)}): both folders need the same classes."
            )
        return SourceData(train_images, train_labels, test_images, test_labels, tuple(classes))
