"""The LightningModule that trains an image classifier (the target, the evaluator, shadow models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

if TYPE_CHECKING:
    from privacy_attacks.defenses import DPSGD, PrivateTraining


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of a plain ``nn.Module`` (Lightning's system/model split).

    Args:
        net: maps (N, C, H, W) pixels in [0, 1] to logits (N, num_classes).
        optimizer: partial optimiser, called with the parameters in ``configure_optimizers``.
        scheduler: optional partial LR scheduler, called with the optimiser; stepped per epoch.
        num_classes: number of classes.
        label_smoothing: label smoothing of the training loss (0: plain cross-entropy); val and test losses are
            plain cross-entropy.
        privacy: train with DP-SGD (:class:`privacy_attacks.defenses.DPSGD`): the optimiser becomes Opacus's
            ``DPOptimizer`` over per-example gradients; the data module must sample by Poisson
            (``ImageDataModule(poisson_sampling=True)``) and tell ``train_size`` and ``sample_rate``.

    Logs ``<stage>/loss`` and ``<stage>/acc`` for train, val and test; with ``privacy``, also ``privacy/epsilon``
    (spent so far) after each training epoch.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        privacy: DPSGD | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.private: PrivateTraining | None = None  # DP-SGD attached to net and the optimiser (configure_optimizers)
        self._accountant_state: dict[str, Any] | None = None  # from a checkpoint, until the accountant exists
        # Accumulated on the device and computed once per epoch (update(), not a per-step value); the labels are the
        # data module's, checked when it loads them, so the per-step argument check (a host sync) is off.
        self.acc = nn.ModuleDict(
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                for stage in ("train", "val", "test")
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        if self.private is not None:
            self.log("privacy/epsilon", self.private.epsilon(), prog_bar=True)

    def on_fit_end(self) -> None:
        if self.private is not None:
            self.private.close()  # the network predicts without per-example hooks from here on

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.privacy is not None:
            optimizer = self._make_private(optimizer)
        if self.hparams.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.hparams.scheduler(optimizer=optimizer)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The global RNG state too: DP-SGD's noise (Opacus draws it from the global generator) and any other draw of
        # the next epoch continue from it, so a resumed fit equals the uninterrupted one.
        checkpoint["rng_state"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.private is not None:
            checkpoint["privacy_accountant"] = self.private.accountant.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
        # A resumed private fit keeps counting from the steps it had taken.
        self._accountant_state = checkpoint.get("privacy_accountant")
        if self.private is not None and self._accountant_state is not None:
            self.private.accountant.load_state_dict(self._accountant_state)

    def _make_private(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        data = self.trainer.datamodule
        if self.private is not None:
            self.private.close()
        self.private = self.hparams.privacy.make_private(
            self.net, optimizer, data.sample_rate, data.sample_rate * data.train_size, self.trainer.max_epochs
        )
        if self._accountant_state is not None:
            self.private.accountant.load_state_dict(self._accountant_state)
        return self.private.optimizer

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        self.acc[f"{stage}_acc"].update(logits, y)
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
