from privacy_attacks.data.mnist import MNISTDataModule, PoissonBatches, TensorBatches, load_mnist

__all__ = ["MNISTDataModule", "PoissonBatches", "TensorBatches", "load_mnist"]
