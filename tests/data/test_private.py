"""The private image pools of feature and gradient inversion."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.data.mnist import load_mnist, split_training_indices
from privacy_attacks.data.private import private_pool


@pytest.mark.mnist
def test_tune_clients_come_from_the_validation_split_and_report_clients_from_the_test_set(compose_attack):
    tune = private_pool(compose_attack(["attack=gradient_inversion", "private_set=tune", "private_pool=50"]))[0]
    report = private_pool(compose_attack(["attack=gradient_inversion", "private_pool=50"]))[0]
    cfg = compose_attack(["attack=gradient_inversion"])
    train_images, _ = load_mnist(cfg.data.root, train=True)
    test_images, _ = load_mnist(cfg.data.root, train=False)
    validation = train_images[split_training_indices(cfg.data.val_size, cfg.data.split_seed)["val"]]

    def keys(images):
        return {img.numpy().tobytes() for img in images}

    assert keys(tune) <= keys(validation) and keys(report) <= keys(test_images)
    again = private_pool(compose_attack(["attack=gradient_inversion", "private_pool=50", "seed=3"]))[0]
    assert torch.equal(again, report)  # the attacker's seed does not choose the victims' images
