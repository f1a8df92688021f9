"""The Lightning ``Trainer`` of a run and the process settings around it (threads, warnings, pruning).

``run_experiment`` builds one ``Trainer`` per attempt from ``TrainConfig``, before the run folder is touched (a
refused setting fails with nothing written; its start-up lines wait for the run to start: ``held_lines``), pins
``train.threads`` in each of its processes (``PinnedThreads``), and silences the Lightning hints that do not apply
to these runs. Checkpoints are written in place (``InPlaceCheckpointIO``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import TorchCheckpointIO

from ablations.training.epoch_log import progress_callbacks
from ablations.training.metrics import MONITOR


def check_devices(t: Any) -> None:
    """One CPU process per device: more processes than cores only slows a run down and hides a typo."""
    from ablations.data.base import usable_cores

    on_cpu, cores = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available()), usable_cores()
    if on_cpu and t.num_nodes == 1 and t.devices > cores:
        raise ValueError(f"train.devices={t.devices} is not allowed on this machine: it has no GPU and {cores} CPU "
                         f"cores; use train.devices between 1 and {cores} (one DDP process per device)")


_RANK_ZERO_LOG = "lightning.pytorch.utilities.rank_zero"  # Lightning's start-up lines ("GPU available: ...")


@contextlib.contextmanager
def held_lines(held: list[logging.LogRecord]):
    """Lightning's start-up lines of a Trainer built before its run folder is claimed, kept in ``held`` instead
    of printed; the run prints them when it starts (``logging.getLogger(record.name).handle(record)``), so a command
    refused at the folder's lock prints its one line only."""
    log, collect = logging.getLogger(_RANK_ZERO_LOG), logging.Handler()
    collect.emit = held.append
    propagate, log.propagate = log.propagate, False
    log.addHandler(collect)
    try:
        yield
    finally:
        log.removeHandler(collect)
        log.propagate = propagate


class PinnedThreads(Callback):
    """``train.threads`` again in each process once the Trainer has started it: Lightning's DDP launcher sets its
    own count where ``OMP_NUM_THREADS`` is unset, which would otherwise replace the run's. The run restores the
    process's count when it ends (``training.run``)."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)


# Lightning hints that do not apply to these runs (small in-memory data sets, resumed folders).
_BENIGN_WARNINGS = (
    ".*does not have many workers.*", ".*Checkpoint directory .* exists and is not empty.*",
    ".*The number of training batches .* is smaller than the logging interval.*",
    ".*Experiment logs directory .* exists and is not empty.*",
    ".*The `srun` command is available on your system but is not used.*",  # submitit launches SLURM jobs
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # inside Lightning 2.6 on torch >= 2.10
)


@contextlib.contextmanager
def benign_warnings_off():
    with warnings.catch_warnings():
        for pattern in _BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class InPlaceCheckpointIO(TorchCheckpointIO):
    """``torch.save`` straight to the path Lightning gives, which ``AtomicCheckpoint`` makes a ``.part`` file that it
    renames: Lightning's own atomic save stages every checkpoint in the system temp folder (an fsspec
    transaction) and copies it over, which fails on a node whose ``/tmp`` is smaller than a checkpoint and names
    the temp file instead of the run folder."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by senet-ablate's checkpoint writer")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            torch.save(checkpoint, f)


def make_trainer(t: Any, loggers: list, cbs: list, run_dir: Path, progress_bar: bool | None, quiet: bool) -> pl.Trainer:
    bar, bar_cbs = progress_callbacks(progress_bar)  # a SLURM log gets one line per epoch instead of tqdm
    return pl.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision,
        # "warn": deterministic kernels wherever they exist (all of them on CPU), a warning instead of a crash
        # for the few CUDA backward kernels that have none (adaptive pooling: the SE squeeze).
        deterministic="warn" if t.deterministic else False,
        logger=loggers, callbacks=[*cbs, *bar_cbs, PinnedThreads(t.threads)], default_root_dir=str(run_dir),
        enable_progress_bar=bar, enable_model_summary=not quiet, log_every_n_steps=10,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        plugins=[InPlaceCheckpointIO()],
    )


def pruning_callback(trial: Any) -> Callback | None:
    if trial is None or len(trial.study.directions) != 1:  # Optuna prunes single-objective studies only
        return None
    from optuna_integration import PyTorchLightningPruningCallback

    return PyTorchLightningPruningCallback(trial, monitor=MONITOR)
