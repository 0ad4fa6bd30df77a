from privacy_attacks.data.mnist import MNISTDataModule, TensorBatches, load_mnist

__all__ = ["MNISTDataModule", "TensorBatches", "load_mnist"]
