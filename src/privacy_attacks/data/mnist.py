"""MNIST as whole tensors on the training device.

LeNet5 on MNIST is bound by data-loading overhead when every item goes through
PIL transforms and worker processes, so the 70k images are decoded once into a
uint8 tensor, converted to float [0, 1] pixels of shape (N, 1, 28, 28), moved to
the device and sliced into batches there (:class:`TensorBatches`).

MNIST's files are read here (:func:`load_mnist`, :func:`split_training_indices`);
the split and the batches themselves are the dataset-independent ones of :mod:`privacy_attacks.data.tensors`,
re-exported here under their old names.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from privacy_attacks.data.module import ImageDataModule
from privacy_attacks.data.source import ImageSource, SourceData, fetch
from privacy_attacks.data.tensors import BATCH_ORDERS, PoissonBatches, TensorBatches, epoch_seed, split_indices
from privacy_attacks.errors import DataUnavailableError

__all__ = [
    "BATCH_ORDERS",
    "MNIST_DIGEST",
    "MNISTDataModule",
    "MNISTSource",
    "PoissonBatches",
    "TRAIN_SIZE",
    "TensorBatches",
    "data_digest",
    "epoch_seed",
    "load_mnist",
    "split_training_indices",
]

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_SIZE = 60_000
# data_digest of MNIST's own files (the md5-verified originals): the content every cached target was trained on.
MNIST_DIGEST = "55c41ac0f5a8c456"
IMAGE_SHAPE, NUM_CLASSES = (1, 28, 28), 10
CLASS_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the training images' pixel mean and standard deviation


def _has_local_copy(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in MNIST_FILES)


def _missing_message(root: Path, reason: str) -> str:
    return (
        f"MNIST is not under {root}/MNIST/raw/ and {reason}. "
        "Point the project at a local copy (a folder holding MNIST/raw/ in torchvision's layout) "
        "with the config value data.root=/path/to/folder or the environment variable "
        "MNIST_ROOT=/path/to/folder, or run once on a machine with internet and data.download=true."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(root: str, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import MNIST

    path = Path(root).expanduser()
    if not _has_local_copy(path):
        if not download:
            raise DataUnavailableError(_missing_message(path, "data.download is false"))
        fetch(lambda: MNIST(str(path), train=True, download=True), lambda why: _missing_message(path, why), root=path)
    dataset = MNIST(str(path), train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div_(255.0)
    return images, dataset.targets.long()


def load_mnist(root: str | Path, train: bool = True, download: bool = False) -> tuple[Tensor, Tensor]:
    """Return MNIST ``(images, labels)``: float (N, 1, 28, 28) in [0, 1] and long (N,).

    ``train=True`` gives the 60k training images, ``False`` the official 10k test set.
    Reads ``root/MNIST/raw``; downloads through torchvision only when ``download`` is true.
    Raises :class:`DataUnavailableError` saying what to set when neither works.
    """
    images, labels = _load_cached(str(Path(root).expanduser().resolve()), bool(train), bool(download))
    return images.clone(), labels.clone()


@functools.lru_cache(maxsize=4)
def _digest_cached(root: str, download: bool) -> str:
    digest = hashlib.sha256()
    for train in (True, False):
        images, labels = _load_cached(root, train, download)
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def data_digest(root: str | Path, download: bool = False) -> str:
    """16 hex digits of the SHA-256 of the training and test images and labels under ``root`` (as
    :func:`load_mnist` gives them): what a cache key names so that other files under the same path (another dataset
    in MNIST's layout, a changed copy) never reuse a model trained on these. MNIST's own files give
    :data:`MNIST_DIGEST`."""
    return _digest_cached(str(Path(root).expanduser().resolve()), bool(download))


def split_training_indices(
    val_size: int, split_seed: int, members: int | None = None, total: int = TRAIN_SIZE, member_offset: int = 0
) -> dict[str, Tensor]:
    """Seeded split of the ``total`` (MNIST's 60k) training indices (:func:`.tensors.split_indices`).

    Returns ``val`` (the first ``val_size`` of a seeded permutation), ``train`` (``members`` images of
    the rest, from position ``member_offset`` on; all of it when ``members`` is None) and ``nonmember``
    (the rest of the pool, never trained on). The three are disjoint.
    """
    return split_indices(val_size, split_seed, members, total, member_offset)


class MNISTSource(ImageSource):
    """MNIST (LeCun et al. 1998) read from ``root/MNIST/raw`` (torchvision's layout) by :func:`load_mnist`: 60,000
    training and 10,000 test images, (1, 28, 28), ten digits. ``download``: through torchvision when missing."""

    name = "mnist"
    train_size = TRAIN_SIZE

    def __init__(self, root: str = "data", download: bool = True):
        self.root, self.download = root, download

    def identity(self) -> tuple:
        return (str(Path(self.root).expanduser().resolve()), bool(self.download))

    def read(self) -> SourceData:
        train_images, train_labels = load_mnist(self.root, train=True, download=self.download)
        test_images, test_labels = load_mnist(self.root, train=False, download=self.download)
        return SourceData(train_images, train_labels, test_images, test_labels, CLASS_NAMES)

    def load(self) -> SourceData:
        return self.read()  # load_mnist keeps the tensors already

    def digest(self) -> str:
        return data_digest(self.root, self.download)


class MNISTDataModule(ImageDataModule):
    """MNIST with a seeded train/validation split of the 60k training images and the official test set: an
    :class:`~privacy_attacks.data.module.ImageDataModule` of :class:`MNISTSource`.

    Args:
        root: folder holding ``MNIST/raw`` (torchvision's layout).
        download: download through torchvision when the files are not under ``root``.
        name, image_shape, num_classes, mean, std: MNIST's (``conf/data/mnist.yaml`` declares them for the models).
        val_size, split_seed, batch_size, eval_batch_size, members, member_offset, poisson_sampling, extra_images,
            extra_labels, batch_order, seed: as :class:`~privacy_attacks.data.module.ImageDataModule`'s.

    After ``setup``: ``train_size``, ``steps_per_epoch`` and ``sample_rate`` (1 / steps per epoch, as Opacus's).
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 2000,
        members: int | None = None,
        member_offset: int = 0,
        poisson_sampling: bool = False,
        extra_images: Tensor | None = None,
        extra_labels: Tensor | None = None,
        batch_order: str = "hashed",
        seed: int | None = None,
        name: str = "mnist",
        image_shape: Sequence[int] = IMAGE_SHAPE,
        num_classes: int = NUM_CLASSES,
        mean: Sequence[float] = (MNIST_MEAN,),
        std: Sequence[float] = (MNIST_STD,),
    ):
        super().__init__(
            MNISTSource(root, download),
            name=name,
            image_shape=image_shape,
            num_classes=num_classes,
            mean=mean,
            std=std,
            val_size=val_size,
            split_seed=split_seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            members=members,
            member_offset=member_offset,
            poisson_sampling=poisson_sampling,
            extra_images=extra_images,
            extra_labels=extra_labels,
            batch_order=batch_order,
            seed=seed,
        )
        self.root, self.download = root, download
