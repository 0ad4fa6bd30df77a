"""Shadow models: vmapped training equal to independent fits, balanced masks, the cache."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.membership.shadow_models import (
    balanced_in_masks,
    provision_shadow_models,
    subset_indices,
    train_shadow_models,
)
from privacy_attacks.errors import CheckpointError
from tests.attacks.membership.conftest import RECIPE, TRAIN_SIZE


def test_shadow_models_are_cached_by_config(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks))
    first, cached_first = provision_shadow_models(*args, [3, 4], context.cache_dir)
    second, cached_second = provision_shadow_models(*args, [3, 4], context.cache_dir)
    assert not cached_first and cached_second
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    _, other_seed_cached = provision_shadow_models(*args, [3, 5], context.cache_dir)
    assert not other_seed_cached
    _, other_images_cached = provision_shadow_models(
        RECIPE, context.attacker_images[20:40], *args[2:], [3, 4], context.cache_dir
    )
    assert not other_images_cached  # keyed by the images' content


def test_a_corrupt_shadow_cache_is_a_clear_error(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks), [0, 1])
    provision_shadow_models(*args, context.cache_dir)
    for path in context.cache_dir.glob("shadows-*.pt"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete"):
        provision_shadow_models(*args, context.cache_dir)


def test_stacked_shadow_training_equals_independent_fits(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    masks = balanced_in_masks(20, 2, torch.Generator().manual_seed(0))
    indices = subset_indices(masks)
    together = train_shadow_models(RECIPE, images, labels, indices, seeds=[11, 12], progress=False)
    for s, seed in enumerate([11, 12]):
        alone = train_shadow_models(RECIPE, images, labels, indices[s : s + 1], seeds=[seed], progress=False)
        for name, value in alone.params.items():
            torch.testing.assert_close(together.params[name][s], value[0], rtol=1e-4, atol=1e-5)


def test_balanced_masks_have_each_image_in_half_the_models():
    masks = balanced_in_masks(30, 8, torch.Generator().manual_seed(0))
    assert (masks.sum(dim=0) == 4).all() and (masks.sum(dim=1) == 15).all()
