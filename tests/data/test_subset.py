"""A dataset kept to some of its classes (data=mnist_classes): relabelled, the rest set apart, refused when ill-set."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.data import ClassSubset, SyntheticSource
from privacy_attacks.data.identity import data_identity, data_source
from privacy_attacks.errors import ConfigError

SOURCE = SyntheticSource(image_shape=(1, 8, 8), num_classes=4, train_size=200, test_size=40)


def test_kept_classes_are_relabelled_in_order_and_the_others_set_apart():
    data, subset = SOURCE.load(), ClassSubset(SOURCE, [3, 1])
    kept, other = subset.load(), subset.excluded()
    for images, labels, original in (
        (kept.train_images, kept.train_labels, data.train_labels),
        (kept.test_images, kept.test_labels, data.test_labels),
    ):
        assert len(images) == int(((original == 3) | (original == 1)).sum()) and set(labels.tolist()) == {0, 1}
    assert torch.equal(kept.train_images[kept.train_labels == 0], data.train_images[data.train_labels == 3])
    assert set(other.train_labels.tolist()) == {0, 2} and len(other.train_labels) + len(kept.train_labels) == 200
    assert subset.digest() != SOURCE.digest() != ClassSubset(SOURCE, [1, 3]).digest()


@pytest.mark.parametrize(("classes", "message"), [([2], "two or more"), ([1, 1], "distinct"), ([0, 7], "0-3 only")])
def test_ill_set_classes_are_refused_in_one_line(classes, message):
    with pytest.raises(ConfigError, match=message):
        ClassSubset(SOURCE, classes).load()


@pytest.mark.mnist
def test_mnist_classes_keeps_digits_0_to_4_under_its_own_cache_name(compose_train):
    cfg = compose_train(["data=mnist_classes"])
    source = data_source(cfg.data)
    assert source.classes == (0, 1, 2, 3, 4) and data_identity(cfg.data)["name"] == "mnist_classes"
    assert set(source.load().test_labels.tolist()) == set(range(5)) and cfg.data.num_classes == 5
