"""The private images of feature and gradient inversion: what a client holds or a query hides.

``private_set=report``: MNIST test images, where reported numbers are measured; ``private_set=tune``:
the validation split of the training images (``data.val_size`` drawn by ``data.split_seed``), where
settings are chosen. Neither overlaps the images an attacker trains on.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks.data.mnist import load_mnist, split_training_indices
from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.seeding import generator

PRIVATE_SETS = ("report", "tune")


def private_pool(cfg: DictConfig) -> tuple[Tensor, Tensor]:
    """The private images: ``private_pool`` images of the ``private_set`` drawn by ``private_seed``: (P, 1, 28, 28),
    (P,).

    ``private_set=report``: MNIST test images (reported numbers); ``tune``: the validation split of the
    training images (``data.val_size`` drawn by ``data.split_seed``; settings are chosen there).
    """
    require_choice(cfg.private_set, PRIVATE_SETS, "private_set")
    if cfg.private_set == "tune":
        images, labels = load_mnist(cfg.data.root, train=True, download=cfg.data.download)
        index = split_training_indices(cfg.data.val_size, cfg.data.split_seed, total=len(labels))["val"]
        images, labels = images[index], labels[index]
    else:
        images, labels = load_mnist(cfg.data.root, train=False, download=cfg.data.download)
    if cfg.private_pool > len(images):
        raise ConfigError(
            f"private_pool={cfg.private_pool} is more than the {len(images)} images of private_set={cfg.private_set}."
        )
    order = torch.randperm(len(images), generator=generator(cfg.private_seed, "private_pool"))[: cfg.private_pool]
    return images[order], labels[order]
