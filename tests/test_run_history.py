"""A run's CSV history survives a signal or a full disk in the middle of a write.

Lightning rewrites ``metrics.csv`` whole when a new column appears (after the first checkpoint, the first
epoch-level training row). A signal that landed in that rewrite once left the file empty in CI: the finished
epoch's validation row, which its checkpoint promises is on disk, was gone.
"""
from __future__ import annotations

import csv
import errno
import signal

import pytest

from ablations.training import interrupts
from ablations.training.run_history import HistoryCSVLogger, history


def _logger(run_dir) -> HistoryCSVLogger:
    logger = HistoryCSVLogger(save_dir=str(run_dir), name="", version="csv")
    logger.log_metrics({"epoch": 0, "val/top1": 0.5}, step=21)
    logger.save()  # the finished epoch's row, on disk before its checkpoint
    logger.log_metrics({"epoch": 0, "train/loss": 1.25}, step=21)  # a new column: the next save rewrites the file
    return logger


def test_a_signal_during_the_rewrite_is_raised_after_it(tmp_path, monkeypatch):
    logger = _logger(tmp_path)
    real, sent = csv.DictWriter.writeheader, []

    def writeheader(self):
        if not sent:
            sent.append(1)
            signal.raise_signal(signal.SIGUSR1)  # the handler runs here, between truncation and rows
        return real(self)

    monkeypatch.setattr(csv.DictWriter, "writeheader", writeheader)
    with interrupts.guard(), pytest.raises(interrupts.RunInterrupted, match="SIGUSR1"):
        logger.save()
    assert sent
    assert history(tmp_path, "val/top1") == {0: 0.5}
    assert history(tmp_path, "train/loss") == {0: 1.25}


def test_a_full_disk_during_the_rewrite_leaves_the_old_file_whole(tmp_path, monkeypatch):
    logger = _logger(tmp_path)

    def writerows(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", writerows)
    with pytest.raises(OSError, match="No space"):
        logger.save()
    assert history(tmp_path, "val/top1") == {0: 0.5}
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["metrics.csv"]  # no temporary file left
