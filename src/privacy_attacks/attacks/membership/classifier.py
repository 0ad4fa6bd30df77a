"""The attack classifier of trained membership attacks (Shokri et al. 2017): features -> P(member)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC

from privacy_attacks.callbacks.epoch_log import EpochLog
from privacy_attacks.data.tensors import TensorBatches
from privacy_attacks.harness import build_trainer
from privacy_attacks.seeding import derive_seed, seeded


class AttackClassifier(L.LightningModule):
    """A small MLP on standardised features (N, d) -> member logit (N,); ``hidden=()`` is logistic regression.

    Args:
        mean, std: (d,) feature standardisation, from the training features.
        hidden: widths of the hidden layers.
        lr, weight_decay: Adam settings.

    Logs ``attack_train/loss`` and ``attack_train/auc`` (on the attacker's own data).
    """

    def __init__(
        self, mean: Tensor, std: Tensor, hidden: Sequence[int] = (64,), lr: float = 1e-3, weight_decay: float = 1e-4
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["mean", "std"], logger=False)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        layers: list[nn.Module] = []
        width = len(mean)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        self.auc = BinaryAUROC()

    def forward(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, membership = batch
        logits = self(features)
        loss = F.binary_cross_entropy_with_logits(logits, membership.float())
        self.auc(logits.sigmoid(), membership.long())
        self.log("attack_train/loss", loss, on_step=False, on_epoch=True, batch_size=len(membership))
        self.log("attack_train/auc", self.auc, on_step=False, on_epoch=True, batch_size=len(membership))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def member_probability(self, features: Tensor) -> Tensor:
        """P(member) (N,) for features (N, d)."""
        self.eval()
        return self(features.to(self.mean.device)).sigmoid().cpu()


def fit_attack_classifier(
    features: Tensor,
    membership: Tensor,
    trainer_cfg: DictConfig,
    hidden: Sequence[int] = (64,),
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> AttackClassifier:
    """Fit an :class:`AttackClassifier` on features (N, d) with membership (N,) (1 = member) of the attacker's own data.

    Its initial weights and batch order come from seeds derived from the attack's ``seed`` alone; its epochs show in
    the log as ``attack classifier: epoch 20/60, attack_train/loss ...``.
    """
    std = features.std(dim=0).clamp_min(1e-6)
    with seeded(seed, "attack_classifier"):
        model = AttackClassifier(features.mean(dim=0), std, tuple(hidden), lr, weight_decay)
        progress = EpochLog("attack classifier", shown=("attack_train/loss", "attack_train/auc"))
        trainer = build_trainer(
            trainer_cfg, max_epochs=epochs, enable_progress_bar=False, limit_val_batches=0, callbacks=[progress]
        )
        batches = TensorBatches(
            features,
            membership,
            batch_size,
            shuffle=True,
            seed=derive_seed(seed, "attack_classifier", "batches") % 2**31,
        )
        trainer.fit(model, train_dataloaders=batches)
    return model.cpu()
