"""MNIST loading, the seeded split, the datamodule and its tensor batches."""

import lightning as L
import pytest
import torch

from privacy_attacks.data import MNISTDataModule, PoissonBatches, TensorBatches, load_mnist
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError, DataUnavailableError
from tests.idx import write_fake_mnist


@pytest.fixture
def fake_root(tmp_path):
    return write_fake_mnist(tmp_path / "fake", n_train=600, n_test=100)


def test_load_mnist_reads_idx_as_pixels_in_unit_range(fake_root):
    images, labels = load_mnist(fake_root, train=True)
    assert images.shape == (600, 1, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == torch.long and labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    test_images, _ = load_mnist(fake_root, train=False)
    assert len(test_images) == 100


def test_missing_data_says_what_to_set(tmp_path):
    with pytest.raises(DataUnavailableError, match="data.root=.*MNIST_ROOT"):
        load_mnist(tmp_path / "nowhere", train=True, download=False)


def test_split_is_seeded_and_disjoint():
    a = split_training_indices(5000, split_seed=0, members=1000)
    b = split_training_indices(5000, split_seed=0, members=1000)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (len(a["val"]), len(a["train"]), len(a["nonmember"])) == (5000, 1000, 54000)
    union = torch.cat([a["val"], a["train"], a["nonmember"]])
    assert len(union.unique()) == 60000
    c = split_training_indices(5000, split_seed=1, members=1000)
    assert not torch.equal(a["train"], c["train"])


@pytest.mark.parametrize(
    "kwargs", [{"members": 0}, {"members": 55001}, {"val_size": 0}, {"val_size": 60000}, {"split_seed": "abc"}]
)
def test_bad_split_sizes_are_refused(kwargs):
    with pytest.raises(ConfigError):
        MNISTDataModule(**{"root": "unused", **kwargs})


def test_datamodule_batches_tensors_on_device(fake_root):
    dm = MNISTDataModule(root=str(fake_root), download=False, val_size=100, batch_size=64, eval_batch_size=50)
    dm.setup("fit")
    assert len(dm.tensors["train"][0]) == 500 and len(dm.tensors["val"][0]) == 100 and len(dm.tensors["test"][0]) == 100
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 8
    assert sum(len(y) for _, y in batches) == 500
    assert batches[0][0].shape == (64, 1, 28, 28)
    assert len(list(dm.val_dataloader())) == 2


def test_members_subset_trains_on_fewer_images(fake_root):
    dm = MNISTDataModule(root=str(fake_root), download=False, val_size=100, members=200)
    dm.setup("fit")
    assert len(dm.tensors["train"][1]) == 200 and len(dm.indices["nonmember"]) == 300


def test_tensor_batches_shuffle_is_reproducible_and_changes_per_epoch():
    images, labels = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    first = [y.tolist() for _, y in TensorBatches(images, labels, 4, shuffle=True, seed=3)]
    again = [y.tolist() for _, y in TensorBatches(images, labels, 4, shuffle=True, seed=3)]
    assert first == again and sorted(sum(first, [])) == list(range(10))
    loader = TensorBatches(images, labels, 10, shuffle=True, seed=3)
    assert next(iter(loader))[1].tolist() != next(iter(loader))[1].tolist()


def test_a_run_seed_sets_the_batch_order(fake_root):
    dm = MNISTDataModule(root=str(fake_root), download=False, val_size=100)
    dm.setup("fit")
    L.seed_everything(1, verbose=False)
    a = next(iter(dm.train_dataloader()))[1]
    L.seed_everything(1, verbose=False)
    assert torch.equal(a, next(iter(dm.train_dataloader()))[1])


def test_poisson_batches_take_each_image_with_the_sample_rate(fake_root):
    dm = MNISTDataModule(root=str(fake_root), download=False, val_size=100, batch_size=50, poisson_sampling=True)
    dm.setup("fit")
    assert (dm.train_size, dm.steps_per_epoch, dm.sample_rate) == (500, 10, 0.1)
    loader = dm.train_dataloader()
    assert isinstance(loader, PoissonBatches) and len(loader) == 10
    first, second = [y.tolist() for _, y in loader], [y.tolist() for _, y in loader]
    assert len(first) == 10 and first != second  # a fresh draw each epoch
    assert all(len(set(y)) <= len(y) for y in first)  # an image at most once per batch

    images, labels = torch.arange(20_000.0).view(-1, 1, 1, 1), torch.arange(20_000)
    sizes = [len(y) for _, y in PoissonBatches(images, labels, sample_rate=0.01, steps=50, seed=3)]
    assert 180 < sum(sizes) / len(sizes) < 220 and len(set(sizes)) > 1  # 200 expected; sizes vary
    again = [len(y) for _, y in PoissonBatches(images, labels, sample_rate=0.01, steps=50, seed=3)]
    assert sizes == again


def test_extra_training_examples_join_the_members_and_the_sample_rate(fake_root):
    extra = torch.ones(20, 1, 28, 28), torch.full((20,), 7)
    dm = MNISTDataModule(
        root=str(fake_root), download=False, val_size=100, members=200, batch_size=50, poisson_sampling=True,
        extra_images=extra[0], extra_labels=extra[1],
    )  # fmt: skip
    dm.setup("fit")
    images, labels = dm.tensors["train"]
    assert dm.train_size == 220 and torch.equal(images[200:], extra[0]) and torch.equal(labels[200:], extra[1])
    assert dm.steps_per_epoch == 5 and dm.sample_rate == 1 / 5  # DP-SGD's accountant sees the canaries too
    with pytest.raises(ValueError, match="together"):
        MNISTDataModule(root=str(fake_root), extra_images=extra[0])
