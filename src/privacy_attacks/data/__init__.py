"""The data layer: one :class:`ImageDataModule` for every dataset, fed by a source (``conf/data/<name>.yaml``)."""

from privacy_attacks.data.fashion_mnist import FashionMNISTSource
from privacy_attacks.data.folder import ImageFolderSource
from privacy_attacks.data.identity import data_identity, data_shape, data_source, is_mnist
from privacy_attacks.data.mnist import MNISTDataModule, MNISTSource, load_mnist
from privacy_attacks.data.module import ImageDataModule
from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.data.subset import ClassSubset
from privacy_attacks.data.synthetic import SyntheticSource
from privacy_attacks.data.tensors import PoissonBatches, TensorBatches
from privacy_attacks.data.torchvision_sources import CIFAR10Source, CIFAR100Source, SVHNSource, TorchvisionSource

__all__ = [
    "CIFAR100Source",
    "CIFAR10Source",
    "ClassSubset",
    "FashionMNISTSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageSource",
    "MNISTDataModule",
    "MNISTSource",
    "PoissonBatches",
    "SVHNSource",
    "SourceData",
    "SyntheticSource",
    "TensorBatches",
    "TorchvisionSource",
    "data_identity",
    "data_shape",
    "data_source",
    "is_mnist",
    "load_mnist",
]
