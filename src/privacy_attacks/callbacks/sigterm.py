"""SIGTERM stops a run wherever it is: at once outside Lightning's calls, at the next batch's end within them.

Lightning stops a fit at the end of the step in which SIGTERM arrives, but lets a SIGTERM pass that arrives in the
last batch of a validation or test, after the last training step or in a predict: that call finishes, and the next
one forgets it. :func:`sigterm_raises` (around a run) raises Lightning's ``SIGTERMException`` where the signal
arrives outside Lightning's calls, and notes it within them; :class:`StopOnSigterm` (in every trainer
:func:`~privacy_attacks.harness.build_trainer` builds) raises it at the end of the batch it arrived in or at the
start of the next call; a signal noted in neither ends the run when it returns. Between the jobs of a sweep (and
around joblib's worker processes, which the signal does not reach) :class:`StopSweepOnSigterm` ends the sweep.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

_received = False  # set by sigterm_raises' handler during a run


class StopOnSigterm(L.Callback):
    """Raises ``SIGTERMException`` at the end of a batch, or the start of a Lightning call, once SIGTERM arrived."""

    def stop_if_received(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if _received or trainer.received_sigterm:
            raise SIGTERMException

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = on_predict_batch_end = stop_if_received
    on_fit_start = on_validation_start = on_test_start = on_predict_start = stop_if_received


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Lightning's ``SIGTERMException`` during the block, as Ctrl-C raises ``KeyboardInterrupt``:
    ``finally`` blocks and context managers run (a cache's soft lock is released, loggers are closed) where the
    default would end the process on the spot. Within a Lightning call (whose handler calls this one too) the
    signal is noted for :class:`StopOnSigterm`; one that no batch end or call start met raises when the block
    ends. Only in the main thread, and only over the default handler or :func:`stop_sweep` (a caller's own is left
    alone), which it puts back."""
    global _received
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous not in (signal.SIG_DFL, stop_sweep):
        yield
        return

    def raise_sigterm(signum: int, frame: Any) -> None:
        global _received
        _received = True
        if signal.getsignal(signal.SIGTERM) is raise_sigterm:  # outside Lightning's calls
            raise SIGTERMException

    _received = False
    signal.signal(signal.SIGTERM, raise_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        received, _received = _received, False
    if received:  # it arrived where nothing stopped the run (after a fit's last step): the run ends as stopped
        raise SIGTERMException


def stop_sweep(signum: int, frame: Any) -> None:
    """The sweep process's SIGTERM handler outside its jobs: one line and exit status 143. Under joblib the
    ``SystemExit`` reaches joblib, which ends the worker processes (they would go on running jobs otherwise)."""
    from privacy_attacks.cli import KEPT, _exit_with

    _exit_with(f"stopped by SIGTERM; {KEPT}.", 143)


class StopSweepOnSigterm(Callback):
    """For the length of a multirun, :func:`stop_sweep` handles SIGTERM in the sweep's process (in the main thread,
    over the default handler only); a job run in that process takes it over while it runs (:func:`sigterm_raises`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, stop_sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is stop_sweep:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
