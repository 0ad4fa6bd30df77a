"""Shared fixtures of the membership tests: a tiny recipe, a quiet trainer and an attack context on synthetic data."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from privacy_attacks.attacks.membership.base import AttackContext
from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.models import LeNet5
from tests.conftest import attack_config

RECIPE = OmegaConf.create(
    {
        "net": {"_target_": "privacy_attacks.models.LeNet5"},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.002},
        "scheduler": None,
        "max_epochs": 2,
        "batch_size": 8,
        "members": 10,
        "seed": 0,
    }
)


TRAINER = OmegaConf.create(
    {
        "_target_": "lightning.pytorch.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
)


N_EVAL, N_ATTACKER, TRAIN_SIZE = 20, 40, 10
ATTACK_FEATURES = instantiate(attack_config("membership").attack_features)  # the config's feature nodes, built


def features(*names: str) -> dict:
    """The keyword arguments of an attack classifier's ``names`` features (the proxy's, Shokri's)."""
    return {"features": list(names), "attack_features": ATTACK_FEATURES}


def untrained_target() -> LeNet5:
    """The tiny target, initialised as the target's training would be (seed 0), untrained."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LeNet5().eval().requires_grad_(False)


@pytest.fixture
def context(tmp_path) -> AttackContext:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(N_EVAL + N_ATTACKER, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (N_EVAL + N_ATTACKER,), generator=generator)
    return AttackContext(
        api=BlackBoxAPI(untrained_target(), output="probs"),
        eval_images=images[:N_EVAL],
        eval_labels=labels[:N_EVAL],
        attacker_images=images[N_EVAL:],
        attacker_labels=labels[N_EVAL:],
        recipe=RECIPE,
        train_size=TRAIN_SIZE,
        trainer=TRAINER,
        cache_dir=tmp_path,
        seed=0,
    )
