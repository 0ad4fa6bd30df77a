"""The data module of any dataset: the split contract of MNIST's for every source, the declared shape, classes and
statistics checked against the data, and MNIST's tensors unchanged."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.data import ImageDataModule, MNISTDataModule, PoissonBatches, SyntheticSource, load_mnist
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError
from tests.idx import write_fake_mnist


def synthetic(**kwargs) -> SyntheticSource:
    return SyntheticSource(image_shape=(3, 8, 8), num_classes=4, train_size=300, test_size=50, **kwargs)


def module(**kwargs) -> ImageDataModule:
    defaults = {"image_shape": (3, 8, 8), "num_classes": 4, "mean": (0.5,), "std": (0.3,), "val_size": 50}
    return ImageDataModule(synthetic(), **{**defaults, **kwargs})


def test_any_source_is_split_and_batched_as_mnist_is():
    dm = module(members=100, member_offset=20, batch_size=32, eval_batch_size=25, name="synthetic")
    dm.setup("fit")
    assert (len(dm.indices["val"]), len(dm.indices["train"]), len(dm.indices["nonmember"])) == (50, 100, 150)
    assert len(torch.cat(list(dm.indices.values())).unique()) == 300
    expected = split_training_indices(50, 0, 100, 300, 20)
    assert all(torch.equal(dm.indices[k], expected[k]) for k in expected)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 3, 8, 8) and labels.dtype == torch.long
    assert len(list(dm.val_dataloader())) == 2 and len(dm.tensors["test"][1]) == 50
    assert (dm.image_shape, dm.num_classes, dm.mean, dm.std) == ((3, 8, 8), 4, (0.5,), (0.3,))
    assert dm.class_names == ("class0", "class1", "class2", "class3") and dm.name == "synthetic"


def test_poisson_batches_and_extra_examples_work_for_any_source():
    extra = torch.ones(10, 3, 8, 8), torch.full((10,), 2)
    dm = module(batch_size=50, poisson_sampling=True, extra_images=extra[0], extra_labels=extra[1])
    dm.setup("fit")
    assert (dm.train_size, dm.steps_per_epoch) == (260, 6)
    assert isinstance(dm.train_dataloader(), PoissonBatches)
    with pytest.raises(ConfigError, match="extra training images of shape"):
        module(extra_images=torch.ones(2, 1, 8, 8), extra_labels=torch.zeros(2)).setup("fit")


def test_val_size_is_checked_against_the_training_set_before_anything_is_read():
    with pytest.raises(ConfigError, match=r"data.val_size=300 .*between 1 and 299 \(the training set has 300 images\)"):
        module(val_size=300)
    with pytest.raises(ConfigError, match="members=251"):
        module(members=251)


@pytest.mark.parametrize(
    ("declared", "match"),
    [
        (
            {"image_shape": (1, 8, 8)},
            r"data.image_shape=\[1, 8, 8\] does not match .* set data.image_shape=\[3, 8, 8\]",
        ),
        ({"num_classes": 3}, "data.num_classes=3 does not match .*4 classes"),
    ],
)
def test_what_the_config_declares_is_checked_against_the_data(declared, match):
    with pytest.raises(ConfigError, match=match):
        module(**declared).setup("fit")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"image_shape": (3, 8)}, "data.image_shape"),
        ({"mean": (0.5, 0.5)}, "data.mean"),
        ({"std": (0.0,)}, "data.std"),
        ({"num_classes": 1}, "data.num_classes"),
    ],
)
def test_bad_metadata_is_refused_at_construction(bad, match):
    with pytest.raises(ConfigError, match=match):
        module(**bad)


def test_channels_last_images_against_a_declared_shape_are_named_as_such():
    class ChannelsLast(SyntheticSource):
        def read(self):
            data = super().read()
            data.train_images, data.test_images = (
                data.train_images.permute(0, 2, 3, 1),
                data.test_images.permute(0, 2, 3, 1),
            )
            return data

    source = ChannelsLast(image_shape=(3, 16, 16), num_classes=4, train_size=300, test_size=50)
    dm = ImageDataModule(source, image_shape=(3, 16, 16), num_classes=4, val_size=50)
    with pytest.raises(ConfigError, match=r"channels-last, \[16, 16, 3\] \(H, W, C\): .*permute\(0, 3, 1, 2\)"):
        dm.setup("fit")


def test_undeclared_shape_and_classes_are_read_from_the_data():
    dm = ImageDataModule(synthetic(), val_size=50)
    dm.setup("fit")
    assert (dm.image_shape, dm.num_classes, dm.mean) == ((3, 8, 8), 4, None)


def test_mnist_data_module_is_the_generic_one_with_mnists_tensors(tmp_path):
    """MNIST's numbers must not move: the module's tensors are load_mnist's, split as before."""
    root = write_fake_mnist(tmp_path, n_train=600, n_test=100)
    dm = MNISTDataModule(root=str(root), download=False, val_size=100, members=300, member_offset=50)
    assert isinstance(dm, ImageDataModule)
    dm.setup("fit")
    images, labels = load_mnist(root, train=True)
    split = split_training_indices(100, 0, 300, 600, 50)
    for name in ("train", "val"):
        assert torch.equal(dm.tensors[name][0], images[split[name]])
        assert torch.equal(dm.tensors[name][1], labels[split[name]])
    assert torch.equal(dm.tensors["test"][0], load_mnist(root, train=False)[0])
    assert (dm.image_shape, dm.num_classes, dm.mean, dm.std, dm.name) == (
        (1, 28, 28),
        10,
        (0.1307,),
        (0.3081,),
        "mnist",
    )
