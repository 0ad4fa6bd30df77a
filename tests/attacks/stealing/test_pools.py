"""Query pools: disjoint from both evaluation sets, seeded, budget-checked, of the data's shape; any dataset's own
pool; Fashion-MNIST."""

import pytest
import torch

from privacy_attacks.attacks.stealing import DatasetPool, MNISTPool, NoisePool, data_pool, dataset_evaluation_split
from privacy_attacks.attacks.stealing.pools import EVALUATION_SIZE, FashionMNISTPool, evaluation_split, shared_images
from privacy_attacks.data import SyntheticSource
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError, DataUnavailableError


def test_mnist_pool_and_both_evaluation_sets_are_disjoint_by_construction():
    pool = MNISTPool(val_size=5000, split_seed=0)
    sources = pool.sources()
    validation = set(split_training_indices(5000, 0)["val"].tolist())
    assert not set(range(EVALUATION_SIZE)) & set(sources["test"].tolist())  # the report set: test images 0-4,999
    assert not validation & set(sources["train"].tolist())  # the tune set: the validation split
    assert len(sources["train"]) + len(sources["test"]) == pool.size == 60_000


@pytest.mark.mnist
def test_mnist_pool_holds_no_evaluation_image():
    from tests.conftest import mnist_root

    pool = MNISTPool(mnist_root()).load()
    pool_keys = {bytes(img.mul(255).round().to(torch.uint8).numpy()) for img in pool}
    assert len(pool) == 60_000
    for which in ("report", "tune"):
        eval_images, _ = evaluation_split(mnist_root(), which=which)
        assert len(eval_images) == EVALUATION_SIZE
        eval_keys = [bytes(img.mul(255).round().to(torch.uint8).numpy()) for img in eval_images]
        # MNIST has a few exact duplicate digits across files; none of the evaluation images is queried by index.
        assert sum(k in pool_keys for k in eval_keys) <= 5


def test_pool_take_is_seeded_prefix_and_budget_is_checked():
    pool = NoisePool(size=1000)
    assert torch.equal(pool.take(10, seed=3), pool.take(10, seed=3))
    assert not torch.equal(pool.take(10, seed=3), pool.take(10, seed=4))
    for bad in (0, -5, 1001):
        with pytest.raises(ConfigError, match="query_budget"):
            pool.take(bad)


def test_missing_fashion_mnist_says_what_to_set(tmp_path):
    pool = FashionMNISTPool(root=str(tmp_path))
    with pytest.raises(
        DataUnavailableError, match="dataset-fashion-mnist.*pools.fashion_mnist.root=.*FASHION_MNIST_ROOT="
    ):
        pool.load()


@pytest.mark.skipif(
    not FashionMNISTPool().available(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_pool_reads_the_debian_package():
    images = FashionMNISTPool().take(20, seed=0)
    assert images.shape == (20, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def synthetic_pool(val_size: int = 40, shape: tuple[int, ...] = (3, 16, 16)) -> tuple[DatasetPool, SyntheticSource]:
    source = SyntheticSource(image_shape=shape, num_classes=4, train_size=200, test_size=51)
    return DatasetPool(source, val_size=val_size, split_seed=0, name="synthetic"), source


def test_a_datasets_pool_holds_its_images_outside_both_evaluation_sets():
    pool, source = synthetic_pool()
    data = source.load()
    assert pool.size == 200 - 40 + 51 - 25 and pool.image_shape == (3, 16, 16)
    images = pool.load()
    assert images.shape == (pool.size, 3, 16, 16)
    keys = {bytes(image.numpy()) for image in images}
    for which, expected in (("report", 25), ("tune", 40)):
        eval_images, eval_labels = dataset_evaluation_split(data, which, val_size=40, split_seed=0)
        assert len(eval_images) == len(eval_labels) == expected
        assert not any(bytes(image.numpy()) in keys for image in eval_images)
    sources = pool.sources()
    assert torch.equal(images[: len(sources["train"])], data.train_images[sources["train"]])
    assert torch.equal(images[len(sources["train"]) :], data.test_images[25:])


def test_mnists_pool_is_the_dataset_pool_of_its_config(compose_attack):
    """``data_pool`` of MNIST's config is the ``mnist`` pool of before: same indices, same size, known unread."""
    cfg = compose_attack(["attack=distillation", "data.root=/nowhere", "data.val_size=4000", "data.split_seed=3"])
    pool = data_pool(cfg.data)
    assert isinstance(pool, MNISTPool) and pool.size == 61_000 and pool.image_shape == (1, 28, 28)
    before = split_training_indices(4000, 3)
    assert torch.equal(pool.sources()["train"], torch.cat([before["train"], before["nonmember"]]).sort().values)
    assert torch.equal(pool.sources()["test"], torch.arange(5000, 10_000))


def test_noise_takes_the_datas_shape_and_mnists_by_default():
    assert NoisePool(size=10).take(2).shape == (2, 1, 28, 28)
    noise = NoisePool(size=10, image_shape=[3, 8, 8])
    assert noise.take(4, seed=1).shape == (4, 3, 8, 8) and noise.image_shape == (3, 8, 8)
    with pytest.raises(ConfigError, match=r"pools.noise.image_shape=\[3, 8\] is not allowed"):
        NoisePool(image_shape=[3, 8])


def test_a_pool_of_another_shape_is_one_line_naming_both():
    pool, _ = synthetic_pool()
    pool.check_shape((3, 16, 16), "synthetic")
    with pytest.raises(
        ConfigError, match=r"queries=mnist gives 1x28x28 images, but .*data=synthetic's 3x16x16"
    ) as error:
        MNISTPool().check_shape((3, 16, 16), "synthetic")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"queries=synthetic gives 3x16x16 images, but .*data=cifar10's 3x32x32"):
        pool.check_shape((3, 32, 32), "cifar10")


def test_shared_images_counts_exact_copies_at_8_bits():
    pool = torch.randint(0, 255, (50, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / 255
    images = torch.cat([pool[[3, 7]], pool[[3]] + 0.4 / 255, torch.ones(4, 1, 4, 4)])
    assert shared_images(pool, images) == 3  # two copies, one within the 8-bit rounding; the others are not there
    assert shared_images(pool, torch.zeros(0, 1, 4, 4)) == 0
