"""The private images of feature and gradient inversion: what a client holds or a query hides.

The images come from the configured dataset (``data=``; MNIST by default). ``private_set=report``: its test
images, where reported numbers are measured; ``private_set=tune``: the validation split of its training images
(``data.val_size`` drawn by ``data.split_seed``, as the data module splits them), where settings are chosen. Neither
overlaps the images an attacker trains on.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks.data.identity import data_source
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.seeding import generator

PRIVATE_SETS = ("report", "tune")


def private_pool(cfg: DictConfig) -> tuple[Tensor, Tensor]:
    """The private images: ``private_pool`` images of the ``private_set`` drawn by ``private_seed``: (P, C, H, W),
    (P,).

    ``private_set=report``: the configured dataset's test images (reported numbers); ``tune``: the validation split
    of its training images (``data.val_size`` drawn by ``data.split_seed``; settings are chosen there).
    """
    require_choice(cfg.private_set, PRIVATE_SETS, "private_set")
    data = data_source(cfg.data).load()
    if cfg.private_set == "tune":
        labels = data.train_labels
        index = split_indices(cfg.data.val_size, cfg.data.split_seed, None, len(labels))["val"]
        images, labels = data.train_images[index], labels[index]
    else:
        images, labels = data.test_images, data.test_labels
    if cfg.private_pool > len(images):
        raise ConfigError(
            f"private_pool={cfg.private_pool} is more than the {len(images)} images of private_set={cfg.private_set}."
        )
    order = torch.randperm(len(images), generator=generator(cfg.private_seed, "private_pool"))[: cfg.private_pool]
    return images[order], labels[order]
