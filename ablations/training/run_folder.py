"""A run folder and its one writer: its lock, fresh start and training attempts.

A run folder (``<output_dir>/<name>``, the name ``naming.folder_name`` settled) belongs to one experiment and, while
it trains, to one process: ``RunLock`` is an ``flock`` on ``run.lock`` whose file names the holder (PID, host,
start), so a second identical command refuses with one line, and the kernel drops the lock when its holder dies, so
a crashed run's lock is taken over without a stale-lock heuristic (``flock`` also works on NFSv4, where Linux maps
it to POSIX locks). Each training attempt (first run, every resume) is one entry in ``attempts.json``, updated at
every epoch end, so the wall time of an attempt killed by SIGKILL still counts up to its last epoch. The per-epoch
metrics survive a resume (``ablations.training.run_history``); its checkpoints are
``ablations.training.checkpoints``. Written by hand: Lightning has no run-folder lock or attempt record.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from ablations.training import interrupts
from ablations.training.faults import machine_fault, written_whole
from ablations.training.run_history import save_csv_history

LOCK_FILE = "run.lock"
ATTEMPTS_FILE = "attempts.json"
CHECKPOINTS = "checkpoints"


class RunFolderBusy(ValueError):
    """Another live process is writing this run folder."""


class RunLock:
    """Exclusive ownership of a run folder for one process (global rank 0 under DDP)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise (machine_fault(exc, self.path) or exc) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # The holder writes its line just after taking the lock: give it a moment, so the refusal names it.
            for _ in range(40):
                f.seek(0)
                text = f.read()
                if text.strip():
                    break
                time.sleep(0.05)
            holder = _describe_holder(text)
            f.close()
            raise RunFolderBusy(f"run folder {self.path.parent} is in use by {holder}: the same experiment is "
                                "already running; wait for it to finish or stop it (a dead holder frees it at once)") from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            # The file stays: unlinking a locked file lets a waiter lock an orphaned inode.
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:  # noqa: PYI034
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} (since {h['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


# What a run writes in its folder (the lock stays); ``start_over`` removes these and nothing else.
RUN_ENTRIES = (CHECKPOINTS, "csv", "wandb", "excitation", "result.json", "config.yaml", ATTEMPTS_FILE, "wandb_id.txt",
               "result.json.tmp", "attempts.json.tmp")


def check_real_folder(run_dir: Path) -> None:
    """A run folder is a real folder: one that is a symbolic link would have the run write and ``--no-resume``
    delete wherever it points, outside the output folder."""
    if Path(run_dir).is_symlink():
        raise ValueError(f"run folder {run_dir} is a symbolic link (to {os.readlink(run_dir)}); senet-ablate writes "
                         "and clears only real folders inside output_dir: remove the link or choose another output_dir")


def start_over(run_dir: Path) -> None:
    """Empty a run folder for ``--no-resume``: the entries a run writes (``RUN_ENTRIES``) go, a link among them
    as a link (never what it points to), anything else stays."""
    check_real_folder(run_dir)
    for name in RUN_ENTRIES:
        entry = Path(run_dir) / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)  # does not follow links inside the tree
        elif entry.is_symlink() or entry.exists():
            entry.unlink()


class Attempts:
    """The training attempts of a run (``attempts.json``); the run's wall time is their sum."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ATTEMPTS_FILE
        self._entries: list[dict] | None = None  # read at first use: under the run folder's lock
        self._started = time.perf_counter()

    @property
    def entries(self) -> list[dict]:
        if self._entries is None:
            self._entries = json.loads(self.path.read_text()) if self.path.exists() else []
        return self._entries

    def begin(self, resumed_from_epoch: int | None) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.entries.append({"started": now, "host": socket.gethostname(), "pid": os.getpid(),
                             "resumed_from_epoch": resumed_from_epoch, "wall_time_s": 0.0, "epochs": None,
                             "status": "running"})
        self._started = time.perf_counter()
        self.save()

    def update(self, epochs: int | None = None, status: str | None = None) -> None:
        entry = self.entries[-1]
        entry["wall_time_s"] = round(time.perf_counter() - self._started, 3)
        if epochs is not None:
            entry["epochs"] = epochs
        if status is not None:
            entry["status"] = status
        self.save()

    @property
    def wall_time_s(self) -> float:
        return round(sum(e["wall_time_s"] for e in self.entries), 3)

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        with written_whole(tmp):
            tmp.write_text(json.dumps(self.entries, indent=1) + "\n")
            os.replace(tmp, self.path)


class AttemptCallback(Callback):
    """Updates the current attempt's wall time and epoch count at every epoch end (rank 0 writes).

    It also writes the CSV rows of the finished epoch at the next epoch's start (Lightning buffers 100
    steps; the validation rows went to disk before the epoch's checkpoint, the epoch-level training row is
    logged after it), so a SIGKILL loses at most the epoch it interrupts, which the resume trains again, or,
    killed between a checkpoint and the next epoch's start, that epoch's training-loss row. After every batch
    it re-raises a signal whose ``RunInterrupted`` was swallowed (raised inside a finalizer, Python only
    prints it), so no signal lets a run go on to "complete".
    """

    def __init__(self, attempts: Attempts | None) -> None:
        self.attempts = attempts

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        interrupts.raise_if_signalled()

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        interrupts.raise_if_signalled()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with interrupts.deferred():
            save_csv_history(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.attempts is not None and trainer.is_global_zero:
            with interrupts.deferred():
                self.attempts.update(epochs=trainer.current_epoch + 1)
