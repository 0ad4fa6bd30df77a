"""The state of a cached classifier's fit, kept while it trains, so that an interrupted fit goes on where it was.

A target, judge, evaluator or canary target that is not cached yet trains once (:mod:`privacy_attacks.targets`);
on a CPU a ResNet on CIFAR-10 takes hours. :class:`PartialFitCheckpoint` writes the fit's Lightning checkpoint
beside the file it will be cached as (:func:`privacy_attacks.cache.partial_path`) after an epoch; the same command,
run again, resumes from it (:func:`resumable_partial_fit`) to the weights of the uninterrupted fit: the checkpoint
holds the weights, the optimiser and schedule, the epoch (which seeds the batch order), the RNG state (dropout,
DP-SGD's noise), the accountant and every callback's state.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from privacy_attacks import cache
from privacy_attacks.training import STAMP_KEY

log = logging.getLogger(__name__)


class PartialFitCheckpoint(Checkpoint):
    """After an epoch (its validation included), saves the fit's Lightning checkpoint to ``path`` when ``every_s``
    seconds have passed since the fit started or last saved; never after the last epoch nor once the fit is to stop.
    The file is written under another name and renamed, so an interruption while it is written leaves the previous
    one whole. A :class:`~lightning.pytorch.callbacks.Checkpoint`, so that Lightning runs it after the callbacks
    that watch the epoch (early stopping): the state it saves has seen the epoch whole."""

    def __init__(self, path: Path, every_s: float = 60.0):
        self.path, self.every_s = Path(path), float(every_s)
        self.last = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if last_epoch or trainer.should_stop or time.monotonic() - self.last < self.every_s:
            return
        written = self.path.with_name(f"{self.path.name}.tmp")
        trainer.save_checkpoint(written)
        os.replace(written, self.path)
        self.last = time.monotonic()


def resumable_partial_fit(path: Path, spec: dict[str, Any]) -> str | None:
    """``path`` (as ``ckpt_path`` for :func:`~privacy_attacks.training.fit_classifier`) when it holds the
    checkpoint of an interrupted fit of ``spec`` under the installed library versions (its
    :class:`~privacy_attacks.training.RunStamp`); else None, and a file that is there but of other settings or
    unreadable is removed with a warning (the fit starts from the beginning)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        stamp = checkpoint[STAMP_KEY]
        usable = stamp["spec"] == spec and stamp.get("versions") == cache.library_versions()
        epochs = int(checkpoint["epoch"]) + 1
    except Exception as error:  # noqa: BLE001 - any unreadable file: start again
        log.warning("Could not read the interrupted fit's state %s (%s): training from the start.", path, error)
        usable = False
    else:
        if not usable:
            log.warning("%s was left by a fit of other settings or library versions: training from the start.", path)
    if not usable:
        path.unlink(missing_ok=True)
        return None
    log.info("Going on from epoch %d of an interrupted fit (%s).", epochs, path)
    return str(path)
