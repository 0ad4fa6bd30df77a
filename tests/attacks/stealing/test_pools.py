"""Query pools: disjoint from both evaluation sets, seeded, budget-checked; Fashion-MNIST."""

import pytest
import torch

from privacy_attacks.attacks.stealing import MNISTPool, NoisePool
from privacy_attacks.attacks.stealing.pools import EVALUATION_SIZE, FashionMNISTPool, evaluation_split
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
