"""One plain line per epoch where stdout is not a terminal: a SLURM log file, a pipe (docs/DESIGN.md, Training).

Lightning's tqdm bar redraws a line with carriage returns; in a file that is megabytes of half lines, and with
the bar off a run prints nothing until it ends. ``EpochLogBar`` is a Lightning ``ProgressBar`` (the Trainer
uses the first one among its callbacks instead of tqdm), so it replaces the bar rather than adding to it::

    epoch 3/30  train/loss 1.2345  val/top1 81.23% (err 18.77%)  val/loss 0.5612  1843 img/s  elapsed 0:01:02  eta 0:09:18

``img/s`` is ``CostCallback``'s figure when one is among the callbacks (``run_experiment`` adds it: training
steps after a warm-up, averaged over the attempt so far), so the line and ``result.json`` agree; without one
(LightningCLI) it is the epoch's images over its wall time, data loading included. ``eta`` is the mean epoch
time of this attempt (validation included) times the epochs left. Metric names are those of ``ablations.training.metrics``.
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress import ProgressBar

from ablations.training.cost import CostCallback
from ablations.training.metrics import TRAIN_LOSS, VAL_LOSS, VAL_TOP1


def progress_callbacks(progress_bar: bool | None) -> tuple[bool, list[Callback]]:
    """``(enable_progress_bar, callbacks)`` for a Trainer: ``None`` picks tqdm on a terminal, else ``EpochLogBar``.

    Decided on stdout, where Lightning's tqdm bar draws. ``True`` forces tqdm, ``False`` prints nothing per epoch
    (the quickstart runs many small arms and prints its own progress).
    """
    if progress_bar is None and not sys.stdout.isatty():
        return True, [EpochLogBar()]
    return (True if progress_bar is None else progress_bar), []


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class EpochLogBar(ProgressBar):
    """A progress "bar" that prints one line at the end of each training epoch, on global rank 0 only.

    Args:
        stream: where the lines go; ``None`` is ``sys.stdout`` at the time of printing (so a captured or
            redirected stdout is honoured), flushed at every line so a log file is current while a job runs.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self._enabled = True
        self._train_start = 0.0
        self._epoch_start = 0.0
        self._epochs = 0  # finished in this attempt (a resumed run starts counting again)
        self._images = 0  # of the current epoch, for the rate when there is no CostCallback

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start, self._epochs = time.monotonic(), 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._images = time.monotonic(), 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        self._images += int(getattr(images, "shape", (0,))[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation has run by now (Lightning validates inside the training epoch), and the epoch's train loss
        # is in callback_metrics: ModelCheckpoint reads the same values at this hook.
        self._epochs += 1
        if self._enabled and trainer.is_global_zero:
            print(self.line(trainer), file=self.stream or sys.stdout, flush=True)

    def line(self, trainer: pl.Trainer) -> str:
        """The epoch's line; fields without a value (no validation, an endless run) are left out."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        epoch = trainer.current_epoch + 1
        parts = [f"epoch {epoch}/{total}" if total else f"epoch {epoch}"]
        if TRAIN_LOSS in metrics:
            parts.append(f"{TRAIN_LOSS} {metrics[TRAIN_LOSS]:.4f}")
        if VAL_TOP1 in metrics:
            top1 = metrics[VAL_TOP1]
            parts.append(f"{VAL_TOP1} {100 * top1:.2f}% (err {100 * (1 - top1):.2f}%)")
        if VAL_LOSS in metrics:
            parts.append(f"{VAL_LOSS} {metrics[VAL_LOSS]:.4f}")
        rate = self._rate(trainer)
        if rate is not None:
            parts.append(f"{rate:.0f} img/s")
        now = time.monotonic()
        elapsed = now - self._train_start
        parts.append(f"elapsed {_clock(elapsed)}")
        if total:
            parts.append(f"eta {_clock(elapsed / self._epochs * max(0, total - epoch))}")
        return "  ".join(parts)

    def _rate(self, trainer: pl.Trainer) -> float | None:
        cost = next((c for c in trainer.callbacks if isinstance(c, CostCallback)), None)
        rate = cost.cost()["train_img_per_s"] if cost is not None else None
        if rate is None:  # no CostCallback, or every step so far was its warm-up
            seconds = time.monotonic() - self._epoch_start
            rate = self._images / seconds if seconds > 0 and self._images else None
        return rate
