"""Model stealing by distillation through a black-box API (the lecture's "模型蒸馏").

The attacker queries the deployed target ("teacher", f) on unlabeled images, caches the answers
and trains a local student g so that g(x) imitates f(x) (Hinton et al. 2015; as an attack,
Tramèr et al. 2016 and Orekondy et al. 2019, "Knockoff Nets"). Reusable from code:

    >>> api = BlackBoxAPI(target.net, output="probs", budget=1000)
    >>> student = distil(api, pool.take(1000), LeNet5(), loss=LectureKL(temperature=4.0), steps=1500)

:func:`distil` queries each image once (``api.queries_used`` grows by ``len(images)``) and trains
with :class:`StudentDistillation`; :func:`fit_student` does the training from answers already
bought. Local augmentation (random shifts of the student's input, ``shift`` pixels) reuses the
cached answer of the unshifted image: nothing augmented is sent to the target, so it costs no query.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from privacy_attacks.blackbox import BlackBoxAPI, OutputMode, output_mode
from privacy_attacks.callbacks.epoch_log import StepLog
from privacy_attacks.errors import require_positive
from privacy_attacks.harness import build_trainer, writes_this_step
from privacy_attacks.seeding import generator, seeded

from .losses import DistillationLoss, scalar_loss


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image of ``x`` (N, C, H, W) by its own integer offset in [-max_shift, max_shift]² (all its channels
    alike), zero fill."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    images = torch.arange(n, device=x.device)[:, None, None, None]  # (N, 1, 1, 1)
    channels = torch.arange(c, device=x.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[images, channels, rows, cols]


class StudentEnsemble(nn.Module):
    """Students bought with the same answers, their probabilities averaged: ``forward`` gives the log of the mean of
    the members' softmax (N, K), so its softmax is that mean and its argmax the ensemble's answer (an ensemble of
    students, each from its own initial weights and batch order; Lakshminarayanan et al. 2017's deep ensembles).

        >>> student = StudentEnsemble([cnn_a, cnn_b, cnn_c])   # student(x): (N, K) log mean probabilities
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("A student ensemble needs at least one member.")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        log_probs = torch.stack([member(x).log_softmax(dim=-1) for member in self.members])  # (M, N, K)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


class ResampledBatches:
    """Exactly ``steps`` batches of ``(images, answers)``, cycling through seeded reshuffles of the data.

    One "epoch" of the Trainer is the whole schedule, so tiny query sets (100 images, one batch per
    pass) do not pay Lightning's per-epoch overhead on every step.
    """

    def __init__(self, images: Tensor, answers: Tensor, batch_size: int, steps: int, seed: int = 0):
        self.images, self.answers = images, answers
        self.batch_size, self.steps, self.seed = min(batch_size, len(images)), steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        n, done = len(self.images), 0
        while True:
            order = torch.randperm(n, generator=generator).to(self.images.device)
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                if done == self.steps:
                    return
                index = order[start : start + self.batch_size]
                yield self.images[index], self.answers[index]
                done += 1


class StudentDistillation(L.LightningModule):
    """Train a student ``net`` to imitate cached black-box answers under a distillation ``loss``.

    Args:
        net: the student, (N, C, H, W) pixels in [0, 1] -> logits (N, classes).
        loss: a :class:`~privacy_attacks.attacks.stealing.losses.DistillationLoss`,
            called as ``loss(student_logits, answers, mode)``.
        mode: the API's output mode (how to read the answers).
        optimizer: partial optimiser, called with the parameters.
        scheduler: optional partial LR scheduler, called with the optimiser and ``T_max`` = the
            Trainer's ``max_steps``; stepped every step.
        shift: random-shift augmentation of the student's inputs, in pixels (0: none); costs no query.
        unlabelled: (M, C, H, W) images the attacker holds but did not query, learnt from by ``consistency``
            (a :class:`~.semi_supervised.FixMatch`), with draws from ``seed``'s ``unlabelled`` generator; no query.

    Logs ``train/loss`` (and ``train/lr`` through the scheduler's optimiser; with unlabelled images
    ``train/unlabelled_loss`` and ``train/pseudo_kept``, the share of them whose pseudo-label was kept).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: DistillationLoss,
        mode: OutputMode,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        shift: int = 1,
        unlabelled: Tensor | None = None,
        consistency: Any = None,
        seed: int = 0,
    ):
        super().__init__()
        ignore = ["net", "loss", "mode", "optimizer", "scheduler", "unlabelled", "consistency"]
        self.save_hyperparameters(ignore=ignore, logger=False)
        self.net, self.loss, self.mode = net, loss, mode
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.shift = shift
        self.unlabelled = unlabelled if consistency is not None and consistency.active else None
        self.consistency, self.draws = consistency, generator(seed, "unlabelled")

    def on_train_start(self) -> None:
        if self.unlabelled is not None:
            self.unlabelled = self.unlabelled.to(self.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, answers = batch
        loss = scalar_loss(self.loss(self(random_shift(x, self.shift)), answers, self.mode), self.loss)
        # The steps Lightning writes, and the last, whose loss the progress line shows; the rest skipped.
        logged = writes_this_step(self.trainer) or self.trainer.global_step + 1 == self.trainer.max_steps
        if logged:
            self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(x))
        if self.unlabelled is not None:
            extra = self.consistency.batch(self.unlabelled, len(x), self.draws)
            unlabelled_loss, kept = self.consistency.loss(self.net, extra, self.draws)
            loss = loss + unlabelled_loss
            if logged:
                self.log("train/unlabelled_loss", unlabelled_loss, on_step=True, on_epoch=False, batch_size=len(extra))
                self.log("train/pseudo_kept", kept, on_step=True, on_epoch=False, batch_size=len(extra))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, T_max=max(1, self.trainer.max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def steps_for_budget(budget: int, per_sqrt_query: float, min_steps: int, max_steps: int) -> int:
    """Optimisation steps for ``budget`` cached answers: ``per_sqrt_query * sqrt(budget)``, clamped to
    [min_steps, max_steps].

    Growing with the square root gives small budgets many passes over their few images (100 queries:
    hundreds of epochs) and large ones fewer (10,000 queries at batch 128: about 40 epochs).
    """
    return int(min(max(round(per_sqrt_query * math.sqrt(budget)), min_steps), max_steps))


def fit_student(
    net: nn.Module,
    images: Tensor,
    answers: Tensor,
    mode: OutputMode | str,
    loss: DistillationLoss,
    steps: int = 1000,
    trainer_cfg: DictConfig | None = None,
    *,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    scheduler: Callable[..., Any] | None = None,
    batch_size: int = 128,
    shift: int = 1,
    seed: int = 0,
    logger: Any = False,
    callbacks: list[L.Callback] | None = None,
    unlabelled: Tensor | None = None,
    consistency: Any = None,
    name: str = "student",
) -> nn.Module:
    """Train ``net`` on answers already bought: ``images`` (N, C, H, W) and their ``answers``.

    Returns ``net`` trained, in eval mode. ``trainer_cfg`` is a Lightning Trainer config
    (``conf/trainer/*.yaml``; ``trainer=gpu`` works); without it a quiet CPU Trainer is used.
    ``optimizer`` defaults to Adam(lr=5e-3), ``scheduler`` to cosine annealing over ``steps``.
    ``seed`` fixes the batch order and the random shifts (run under its own RNG state, which the
    caller's is neither read nor moved by); the student's initial weights are the caller's. ``unlabelled`` images
    with a ``consistency`` loss (:class:`~.semi_supervised.FixMatch`) add what the student learns from images it
    did not query (their draws from ``seed`` too). ``name`` heads its progress lines.
    """
    require_positive(steps, "steps")
    require_positive(batch_size, "batch_size")
    if len(images) != len(answers):
        raise ValueError(f"{len(images)} images but {len(answers)} answers.")
    mode = output_mode(mode)
    optimizer = optimizer or functools.partial(torch.optim.Adam, lr=5e-3)
    if scheduler is None:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR
    system = StudentDistillation(net, loss, mode, optimizer, scheduler, shift, unlabelled, consistency, seed)
    trainer = build_trainer(
        trainer_cfg,
        max_steps=steps,
        max_epochs=1,
        logger=logger,
        callbacks=[*(callbacks or []), StepLog(name)],
        limit_val_batches=0,
    )
    batches = ResampledBatches(images, answers, batch_size, steps, seed)
    with seeded(seed, "shifts"):
        trainer.fit(system, train_dataloaders=batches)
    return net.eval()


def distil(
    api: BlackBoxAPI,
    images: Tensor,
    net: nn.Module,
    loss: DistillationLoss,
    steps: int = 1000,
    trainer_cfg: DictConfig | None = None,
    **fit_options: Any,
) -> nn.Module:
    """Steal a model: query ``api`` once on each of ``images`` (N, C, H, W), train ``net`` on the answers.

    Costs exactly N queries (:class:`~privacy_attacks.blackbox.QueryBudgetExceeded` if the budget
    has fewer left). ``fit_options`` go to :func:`fit_student` (``optimizer``,
    ``scheduler``, ``batch_size``, ``shift``, ``seed``, ``logger``, ``callbacks``). Returns the
    trained student in eval mode.
    """
    answers = api.query(images)
    return fit_student(net, images, answers, api.output, loss, steps, trainer_cfg, **fit_options)


@torch.no_grad()
def fidelity_metrics(
    student: nn.Module, target: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 2500
) -> dict[str, float]:
    """Score a student against the target on labelled evaluation images (not queries: the experimenter's view).

    Returns ``student/acc`` (student's accuracy), ``student/agreement`` (fraction where the student's
    and the target's top-1 agree: fidelity), ``student/kl`` (mean KL(target probs || student probs))
    and ``target/acc`` (the target's own accuracy on the same images).
    """
    student.eval(), target.eval()
    device = next(target.parameters()).device  # the run's device (a Lightning fit leaves the student on the CPU)
    student.to(device)
    correct = agree = target_correct = 0
    kl_sum = 0.0
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
        s_log = student(x).log_softmax(dim=-1)
        t_log = target(x).log_softmax(dim=-1)
        s_pred, t_pred = s_log.argmax(-1), t_log.argmax(-1)
        correct += (s_pred == y).sum().item()
        target_correct += (t_pred == y).sum().item()
        agree += (s_pred == t_pred).sum().item()
        kl_sum += (t_log.exp() * (t_log - s_log)).sum().item()
    n = len(images)
    return {
        "student/acc": correct / n,
        "student/agreement": agree / n,
        "student/kl": kl_sum / n,
        "target/acc": target_correct / n,
    }
