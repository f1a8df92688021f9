"""A run's per-epoch metric history, ``<run>/csv/metrics.csv``, kept across resumes (docs/DESIGN.md, Training).

``HistoryCSVLogger`` keeps the rows of earlier attempts up to the resume point (Lightning's CSV writer deletes
the file), ``save_csv_history`` writes what the logger buffers (the checkpoint callbacks call it, so the
history on disk matches the checkpoint), and ``history`` reads one metric back per epoch: the learning curve
of a resumed or reused sweep trial, and the metrics of a run resumed from its last epoch's checkpoint, which
has nothing left to train or log. Written by hand: Lightning's CSV logger starts every attempt afresh.

Lightning writes the file after every logged metric and rewrites it whole when a new column appears (the
first epoch-level training row, after the first checkpoint). A signal in a plain rewrite would leave the file
truncated, the history of the finished epochs gone: so a write is whole or not at all (the rewrite goes
to a temporary file renamed over the old one) and a signal that arrives meanwhile is raised once it is done.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ablations.training import interrupts

HISTORY = Path("csv") / "metrics.csv"  # HistoryCSVLogger's file in a run folder


def histories(run_dir: str | Path, metrics: Sequence[str]) -> dict[str, dict[int, float]]:
    """metric -> (epoch -> the last logged value) for each of ``metrics``, from one read of the run folder's CSV
    history (empty mappings if there is none)."""
    out: dict[str, dict[int, float]] = {k: {} for k in metrics}
    try:
        with (Path(run_dir) / HISTORY).open(newline="") as fh:
            for row in csv.DictReader(fh):
                for k in metrics:
                    if row.get("epoch") and row.get(k):
                        out[k][int(float(row["epoch"]))] = float(row[k])
    except (OSError, ValueError):
        return {k: {} for k in metrics}
    return {k: {e: v for e, v in sorted(h.items()) if math.isfinite(v)} for k, h in out.items()}


def history(run_dir: str | Path, metric: str) -> dict[int, float]:
    """epoch -> the last logged value of ``metric`` in the run folder's CSV history (empty if there is none)."""
    return histories(run_dir, [metric])[metric]


def epoch_values(run_dir: str | Path, metrics: Sequence[str], epoch: int) -> dict[str, float]:
    """The values of ``metrics`` the history holds for ``epoch`` (0-based): a run resumed from its last epoch's
    checkpoint has nothing left to train, so Lightning logs nothing, and its result takes these."""
    return {k: h[epoch] for k, h in histories(run_dir, metrics).items() if epoch in h}


def save_csv_history(trainer: pl.Trainer) -> None:
    """Write the rows the CSV logger buffers (Lightning flushes every 100 steps) to ``metrics.csv`` (rank 0)."""
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the rows of earlier attempts up to the resume point in ``metrics.csv``.

    Rows of the epoch the interrupted attempt did not finish are dropped: the resumed attempt logs them again.
    """

    def __init__(self, *args: Any, resume_from: dict[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_from = resume_from

    @property
    @rank_zero_experiment  # Lightning's dummy writer off rank 0
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        kept = self._kept_rows()
        self._fs.makedirs(self.root_dir, exist_ok=True)  # as CSVLogger.experiment, with the whole-file writer
        self._experiment = _WholeFileWriter(log_dir=self.log_dir)  # deletes the old metrics.csv
        if kept:
            self._experiment.metrics = kept + self._experiment.metrics
        return self._experiment

    def save(self) -> None:
        with interrupts.deferred():  # a signal mid-write is raised once the file is whole
            super().save()

    def _kept_rows(self) -> list[dict]:
        path = Path(self.log_dir) / "metrics.csv"
        if self._resume_from is None or not path.is_file():
            return []
        epoch, step = self._resume_from["epoch"], self._resume_from["global_step"]
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))

        def keep(row: dict) -> bool:
            if row.get("epoch") not in (None, ""):
                return int(float(row["epoch"])) <= epoch
            return row.get("step") not in (None, "") and int(float(row["step"])) < step  # e.g. the epoch's lr

        return [{k: v for k, v in row.items() if v != ""} for row in rows if keep(row)]


class _WholeFileWriter(ExperimentWriter):
    """Lightning's CSV writer whose header rewrite goes to a temporary file renamed over ``metrics.csv``, so a
    kill or a full disk in the middle leaves the old file whole."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        tmp = self.metrics_file_path + ".tmp"
        try:
            with open(tmp, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.metrics_file_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
