"""Quantile-regression membership inference, no shadow models (Bertran, Tang, Roth, Kearns, Morgenstern & Wu 2023,
"Scalable membership inference attacks via quantile regression", NeurIPS).

One regression model, trained on the attacker's own images (public non-members of the target) and the target's
answers on them, predicts for an image x and its label y the distribution of the target's score s(x, y) on a
non-member like it: a Gaussian with mean mu(x, y) and standard deviation sigma(x, y), fitted by its negative
log-likelihood (the paper's parametric variant: one model gives the (1 - fpr) quantile mu + sigma * z_{1 - fpr} for
every false-positive rate). An evaluation image's membership score is its score standardised by its own prediction,
(s - mu) / sigma, higher = member; the hard decision flags it above the standard normal's (1 - fpr) quantile.

The regression model is the attacker's network (``attacker_net``, by default the target's architecture) built for
the data's images with 2C outputs, (mu, log sigma) for each of the C classes, read at the image's label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.callbacks.epoch_log import EpochLog
from privacy_attacks.data.tensors import TensorBatches
from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.harness import build_trainer
from privacy_attacks.seeding import derive_seed, seeded

from .base import AttackContext, AttackOutput, MembershipAttack
from .scores import ScoreFunction, chosen_score


class ScoreRegressor(L.LightningModule):
    """``net`` (images (N, C_in, H, W) -> (N, 2C)) read as the Gaussian (mu, sigma) of the target's score per class.

    Scores are standardised by ``score_mean`` and ``score_std`` (of the training scores) inside, so the network
    predicts values of order one whatever the score's scale. Logs ``quantile_train/nll``.
    """

    def __init__(
        self, net: nn.Module, num_classes: int, score_mean: float, score_std: float, lr: float, weight_decay: float
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, sigma) (N,), (N,) in standardised score units, at each image's label."""
        out = self.net(images).view(len(images), 2, self.hparams.num_classes)
        at_label = out.gather(2, labels.view(-1, 1, 1).expand(-1, 2, 1)).squeeze(2)
        return at_label[:, 0], F.softplus(at_label[:, 1]) + 1e-3

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch  # targets (N, 2): the label, the target's score
        labels, scores = targets[:, 0].long(), targets[:, 1].float()
        mu, sigma = self(images, labels)
        standardised = (scores - self.hparams.score_mean) / self.hparams.score_std
        loss = F.gaussian_nll_loss(mu, standardised, sigma**2)
        self.log("quantile_train/nll", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def standardised_scores(self, images: Tensor, labels: Tensor, scores: Tensor, batch_size: int = 1024) -> Tensor:
        """(s - mu) / sigma (N,) in the score's own units, float64: how far above its non-member prediction each
        image's score lies."""
        self.eval()
        mu_sigma = in_batches(
            lambda x, y: torch.stack(self(x, y), 1).double(),
            images,
            labels,
            batch_size=batch_size,
            device=net_device(self),
        )
        mu, sigma = mu_sigma.unbind(1)
        mean, std = self.hparams.score_mean, self.hparams.score_std
        return (scores.double() - (mean + std * mu)) / (std * sigma)


class QuantileRegressionAttack(MembershipAttack):
    """Bertran et al. 2023: the target's score standardised by a regression model's non-member prediction.

    Args:
        score: the target's per-image score, a name of ``scores`` (``logit``, LiRA's logit-scaled confidence, by
            default as in the paper's hinge score).
        scores: name -> score function, (log_probs (N, C), labels (N,)) -> (N,), or the config's node of one
            (conf/attack/_scores.yaml), built when chosen.
        regression_size: the attacker's images the regression model trains on (each queried once); fewer when the
            attacker has fewer.
        epochs, batch_size, lr, weight_decay: the regression model's training (Adam).
        fpr: the false-positive rate of the hard decision (``mia/balanced_acc``); the scores are threshold-free.
    """

    def __init__(
        self,
        scores: Mapping[str, ScoreFunction],
        score: str = "logit",
        regression_size: int = 50000,
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        fpr: float = 0.01,
    ):
        self.score_function = chosen_score(scores, score, "methods.quantile.score")
        for value, key in ((regression_size, "regression_size"), (epochs, "epochs"), (batch_size, "batch_size")):
            require_int(value, f"methods.quantile.{key}")
        require_positive(lr, "methods.quantile.lr")
        require_positive(weight_decay, "methods.quantile.weight_decay", allow_zero=True)
        if not 0 < fpr < 1:
            raise ConfigError(f"methods.quantile.fpr={fpr!r} is not allowed: it must be in (0, 1).")
        self.score, self.regression_size, self.epochs = score, regression_size, epochs
        self.batch_size, self.lr, self.weight_decay, self.fpr = batch_size, lr, weight_decay, fpr

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """The regression model needs some of the attacker's own images (at least 2, for the scores' spread)."""
        if attacker_size < 2:
            raise ConfigError(
                f"method=quantile trains its regression model on the attacker's own images: attacker_size="
                f"{attacker_size} must be at least 2."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: the regression model's training images, then the evaluation set."""
        return min(self.regression_size, attacker_size) + eval_size

    def fit(
        self, context: AttackContext, images: Tensor, labels: Tensor, scores: Tensor, classes: int
    ) -> ScoreRegressor:
        """The regression model of ``context.recipe``'s network with 2 x ``classes`` outputs, fitted on ``images``
        (N, C, H, W), their labels and the target's scores (N,); weights and batch order from the attack's seed; its
        epochs show in the log (``quantile regressor: epoch 5/20, quantile_train/nll ...``)."""
        with seeded(context.seed, "quantile_regressor"):
            net = instantiate(context.recipe.net, num_classes=2 * classes)
            model = ScoreRegressor(
                net, classes, float(scores.mean()), max(float(scores.std()), 1e-6), self.lr, self.weight_decay
            )
        progress = EpochLog("quantile regressor", shown=("quantile_train/nll",))
        trainer = build_trainer(
            context.trainer,
            max_epochs=self.epochs,
            enable_progress_bar=False,
            limit_val_batches=0,
            callbacks=[progress],
        )
        targets = torch.stack([labels.double(), scores.double()], dim=1)
        seed = derive_seed(context.seed, "quantile_regressor", "batches") % 2**31
        trainer.fit(model, train_dataloaders=TensorBatches(images, targets, self.batch_size, shuffle=True, seed=seed))
        return model

    def __call__(self, context: AttackContext) -> AttackOutput:
        score = self.score_function
        n = min(self.regression_size, len(context.attacker_labels))
        images, labels = context.attacker_images[:n], context.attacker_labels[:n]
        log_probs = context.query_log_probs(images)
        own_scores = score(log_probs, labels)
        model = self.fit(context, images, labels, own_scores, log_probs.shape[1])
        eval_scores = score(context.query_log_probs(context.eval_images), context.eval_labels)
        standardised = model.standardised_scores(context.eval_images, context.eval_labels, eval_scores)
        threshold = math.sqrt(2) * torch.erfinv(torch.tensor(1 - 2 * self.fpr, dtype=torch.float64)).item()
        own = model.standardised_scores(images, labels, own_scores)
        info = {"attack/regression_size": float(n), "attack/own_fpr": float((own > threshold).double().mean())}
        return AttackOutput(standardised, (standardised > threshold).long(), info)
