"""Progress of long fits in the run's log, where no progress bar shows (log files, joblib workers, SLURM)::

    target: epoch 3/30, train/loss 0.1234, val/acc 0.9812; 1m10s, about 10m30s left
    student: step 1200/3000, train/loss 0.0412; 2m0s, about 3m0s left

:class:`EpochLog` writes such a line after an epoch of a Lightning fit, at most one every ``every_s`` seconds (and
the last epoch's); :class:`StepLog` after its steps, for fits of one long epoch (the stolen students');
:class:`ProgressLog` does the same for a loop of the framework's own (the shadow models' epochs, stacked students'
steps). The time left is the mean time of a unit so far times the units left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning as L

from privacy_attacks.callbacks.progress import format_duration

log = logging.getLogger(__name__)
SHOWN = ("train/loss", "train/acc", "val/loss", "val/acc")


class ProgressLog:
    """``step(done, values)`` after each of ``total`` units of ``what``: a log line when ``every_s`` seconds have
    passed since the last (or the first unit), and after the last unit."""

    def __init__(
        self,
        what: str,
        total: int | None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "epoch",
        already_done: int = 0,
    ):
        self.what, self.total, self.every_s, self.clock, self.unit = what, total, float(every_s), clock, unit
        self.start = self.last = clock()
        self.already_done = self.logged = already_done  # units done before the clock started (a resumed fit)

    def line(self, done: int, values: dict[str, float] | None = None) -> str:
        """``<what>: <unit> <done>/<total>, <name> <value>...; <elapsed>, about <left> left``."""
        elapsed = self.clock() - self.start
        text = f"{self.what}: {self.unit} {done}" + (f"/{self.total}" if self.total else "")
        text += "".join(f", {name} {value:.4f}" for name, value in (values or {}).items())
        text += f"; {format_duration(elapsed)}"
        if self.total and done < self.total:
            text += f", about {format_duration(elapsed / max(1, done - self.already_done) * (self.total - done))} left"
        return text

    def due(self, done: int) -> bool:
        """Whether :meth:`step` would write a line now (to compute its values only then)."""
        return self.clock() - self.last >= self.every_s or (self.total is not None and done >= self.total)

    def step(self, done: int, values: dict[str, float] | None = None) -> None:
        if self.due(done):
            self.write(done, values)

    def write(self, done: int, values: dict[str, float] | None = None) -> None:
        """A line now (a fit that stops early ends with one)."""
        self.last, self.logged = self.clock(), done
        log.info(self.line(done, values))


class EpochLog(L.Callback):
    """A :class:`ProgressLog` line after epochs of a Lightning fit, with the epoch's ``train/*`` and ``val/*``
    loss and accuracy as logged, or the metrics named in ``shown`` (``what`` names the fit: ``target``,
    ``decoder``...)."""

    def __init__(
        self,
        what: str = "fit",
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        shown: tuple[str, ...] = SHOWN,
    ):
        self.what, self.every_s, self.clock, self.shown = what, every_s, clock, tuple(shown)
        self.progress: ProgressLog | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.progress = ProgressLog(self.what, total, self.every_s, self.clock, already_done=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None or trainer.sanity_checking:
            return
        done = trainer.current_epoch + 1
        if self.progress.due(done):  # reads the metrics (a device sync) only when a line is written
            self.progress.step(done, self.values(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The last epoch's line when the fit stopped before ``max_epochs`` (early stopping) between two lines."""
        done = trainer.current_epoch
        if self.progress is not None and done != self.progress.logged:
            self.progress.write(done, self.values(trainer))

    def values(self, trainer: L.Trainer) -> dict[str, float]:
        metrics = trainer.callback_metrics
        return {name: float(metrics[name]) for name in self.shown if name in metrics}


class StepLog(L.Callback):
    """A :class:`ProgressLog` line after the training batches of a fit of one long epoch (a stolen student's steps,
    the data-free game's iterations), out of ``max_steps`` or else the epoch's batches, with ``train/loss`` where
    it is logged."""

    def __init__(
        self,
        what: str = "fit",
        unit: str = "step",
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.unit, self.every_s, self.clock = what, unit, every_s, clock
        self.progress: ProgressLog | None = None
        self.done = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.num_training_batches
        total = int(total) if total and total != float("inf") else None
        self.progress = ProgressLog(self.what, total, self.every_s, self.clock, unit=self.unit)
        self.done = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if self.progress is None:
            return
        self.done += 1
        if self.progress.due(self.done):
            self.progress.step(self.done, self.values(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The last step's line when the fit ended between two lines (no ``max_steps``, or stopped early)."""
        if self.progress is not None and self.done != self.progress.logged:
            self.progress.write(self.done, self.values(trainer))

    @staticmethod
    def values(trainer: L.Trainer) -> dict[str, float]:
        """The last logged ``train/loss`` (a student logs it every ``log_every_n_steps`` steps)."""
        metrics = trainer.callback_metrics
        return {"train/loss": float(metrics["train/loss"])} if "train/loss" in metrics else {}
