"""Scores of reconstructions: the nearest private image, in pixels and in a network's features."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from privacy_attacks.engine.metrics import embedded_pool, nearest_distance, nearest_ssim, penultimate_features
from privacy_attacks.models import LeNet5
from privacy_attacks.models.evaluator import AllConvNet


def test_nearest_distance_finds_the_closest_image_of_the_same_class_only():
    images = torch.zeros(5, 1, 2, 2)
    images[1] += 0.5  # class 0, the nearest to a 0.4 image
    images[2] += 0.4  # class 1: nearer, but of the other class
    images[3] += 1.0
    image_labels = torch.tensor([0, 0, 1, 0, 1])
    preds = torch.full((2, 1, 2, 2), 0.4)
    distance, where = nearest_distance(preds, torch.tensor([0, 1]), images, image_labels, chunk=2)
    torch.testing.assert_close(distance, torch.tensor([0.2, 0.0]))  # sqrt(4 x 0.1^2); the identical class-1 image
    assert where.tolist() == [1, 2]


def test_nearest_distance_in_feature_space_uses_the_embedding():
    images, labels = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    distance, _ = nearest_distance(images[:2], labels[:2], images, labels, embed=lambda x: 2 * x.flatten(1))
    assert torch.equal(distance, torch.zeros(2))  # each reconstruction is one of the images
    moved, _ = nearest_distance(images[:1] + 0.1, labels[:1], images[:1], labels[:1], embed=lambda x: 2 * x.flatten(1))
    torch.testing.assert_close(moved, torch.tensor([2 * 0.1 * 4.0]))


def test_penultimate_features_read_the_last_layers_input_whatever_the_architecture():
    x = torch.rand(3, 1, 28, 28)
    assert penultimate_features(LeNet5())(x).shape == (3, 84)
    assert penultimate_features(AllConvNet())(x).shape == (3, 128 * 7 * 7)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 24, 30)])
def test_nearest_ssim_is_torchmetrics_ssim_to_the_most_similar_image_of_the_class(shape):
    torch.manual_seed(0)
    preds, labels = torch.rand(6, *shape), torch.tensor([0, 1, 2, 0, 1, 2])
    images, image_labels = torch.rand(300, *shape), torch.randint(0, 3, (300,))
    images[:3] = preds[:3] * 0.9 + 0.05  # a near copy for some of them
    image_labels[:3] = labels[:3]
    expected = torch.stack(
        [
            structural_similarity_index_measure(
                pred.expand_as(pool := images[image_labels == label]), pool, data_range=1.0, reduction="none"
            ).max()
            for pred, label in zip(preds, labels, strict=True)
        ]
    )
    torch.testing.assert_close(nearest_ssim(preds, labels, images, image_labels, chunk=64), expected, atol=1e-5, rtol=0)
    assert bool((expected[:3] > 0.9).all())


def test_a_pool_embedded_once_gives_the_distances_of_embedding_it_each_time():
    torch.manual_seed(0)
    judge = AllConvNet().eval()
    pool, pool_labels = torch.rand(50, 1, 28, 28), torch.arange(50) % 10
    preds, labels = torch.rand(6, 1, 28, 28), torch.arange(6)
    calls = []

    def embed(images):
        calls.append(len(images))
        return penultimate_features(judge)(images)

    direct = nearest_distance(preds, labels, pool, pool_labels, embed, chunk=16)
    calls.clear()
    features = embedded_pool(pool, embed, key=("judge", 1), chunk=16)
    assert calls == [16, 16, 16, 2] and features.shape == (50, 128 * 7 * 7)
    assert embedded_pool(pool, embed, key=("judge", 1), chunk=16) is features and len(calls) == 4  # kept, not redone
    cached = nearest_distance(preds, labels, pool, pool_labels, embed, chunk=16, image_features=features)
    assert torch.equal(cached[0], direct[0]) and torch.equal(cached[1], direct[1])
    assert embedded_pool(pool[:20], embed, key=("judge", 2), chunk=16).shape == (20, 128 * 7 * 7)  # another key
