"""The LightningModule that trains an image classifier (the target, the evaluator, shadow models)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of a plain ``nn.Module`` (Lightning's system/model split).

    Args:
        net: maps (N, 1, 28, 28) pixels in [0, 1] to logits (N, num_classes).
        optimizer: partial optimiser, called with the parameters in ``configure_optimizers``.
        scheduler: optional partial LR scheduler, called with the optimiser; stepped per epoch.
        num_classes: number of classes.

    Logs ``<stage>/loss`` and ``<stage>/acc`` for train, val and test.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.acc = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in ("train", "val", "test")}
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.hparams.scheduler(optimizer=optimizer)}

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.acc[f"{stage}_acc"](logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", on_step=False, on_epoch=True, batch_size=len(y))
        self.log(
            f"{stage}/acc",
            self.acc[f"{stage}_acc"],
            prog_bar=stage != "test",
            on_step=False,
            on_epoch=True,
            batch_size=len(y),
        )
        return loss
