"""``run_experiment(cfg) -> Result``: one arm, one seed, trained and evaluated (DESIGN: Training).

The one plain function that the CLI, the quickstart, the Optuna objective and the W&B agent all call.
It validates everything before any work (bad config, missing data folder: ``ValueError`` /
``FileNotFoundError``), seeds, trains with Lightning (checkpoints, resume, DDP, mixed precision),
and writes one JSON result row to ``<output_dir>/<run_name>/result.json``, independent of W&B.
A failure inside training (NaN loss, out of memory, ...) becomes ``status="failed"`` with its reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ablations import wandb_logging
from ablations.config import ExperimentConfig
from ablations.metrics import GMACS, MONITOR, MONITOR_MODE, PARAMS, RESULT_METRICS
from ablations.module import NonFiniteLossError, SEClassifier
from ablations.naming import run_name

RESULT_FILE = "result.json"
STATUSES = ("complete", "failed", "pruned")


@dataclass
class Result:
    """One result row: what ran, what it cost, what it scored. ``metrics`` uses ``ablations.metrics`` names."""

    config: dict
    config_hash: str
    seed: int
    git_commit: str | None
    params: int
    gmacs: float
    metrics: dict[str, float]
    epochs: int
    wall_time_s: float
    status: str
    reason: str | None
    run_dir: str
    name: str = ""
    wandb_dir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a ``result.json`` (or a run folder holding one)."""
        path = Path(path)
        return cls.from_dict(json.loads((path / RESULT_FILE if path.is_dir() else path).read_text()))

    def save(self) -> Path:
        """Write ``<run_dir>/result.json`` atomically (a reader never sees half a row)."""
        path = Path(self.run_dir) / RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, path)
        return path


class RNGStateCallback(Callback):
    """Keeps the global RNG streams (torch, numpy, random) in the checkpoint, for exact resumes.

    Shuffling and augmentation draw from the global generators, so a resumed run must continue from the
    state the interrupted run had when its epoch-end checkpoint was written. Lightning restores callback
    state before fitting starts; its sanity check runs under ``isolate_rng``, so the next draw after the
    restore is the next epoch's data loader, exactly as in the uninterrupted run.
    """

    def state_dict(self) -> dict:
        states = _collect_rng_states()
        # numpy's state holds an ndarray, which torch.load(weights_only=True) refuses; store a tensor instead.
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        states = state_dict.get("rng")
        if states is not None:
            name, keys, pos, has_gauss, cached = states["numpy"]
            _set_rng_states({**states, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)})


def git_commit() -> str | None:
    """The commit of the code that ran (``-dirty`` if the tree had uncommitted changes), or ``None``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def prepare(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Any]:
    """Validate ``cfg`` against its data and return ``(resolved cfg, datamodule)``; raises before any training.

    The data decides the classifier's width and input channels: ``model.num_classes`` and ``model.in_chans``
    are set from the datamodule, so ``--data cifar100`` needs no second flag. The model is built once here so
    that an impossible SE configuration fails now, not in a worker.
    """
    from ablations.data import build_datamodule

    if cfg.train.schedule == "plateau" and cfg.train.warmup_epochs:
        raise ValueError("train.warmup_epochs is not allowed with train.schedule='plateau'; use 0, or another schedule")
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")  # a missing or malformed data folder fails here, with its path
    in_chans = int(dm.input_size[0])
    if (cfg.model.num_classes, cfg.model.in_chans) != (dm.num_classes, in_chans):
        cfg = cfg.replace(model=dataclasses.replace(cfg.model, num_classes=int(dm.num_classes), in_chans=in_chans))
    from senet import build_model

    build_model(cfg.model)
    return cfg, dm


def run_experiment(cfg: ExperimentConfig, *, callbacks: Sequence[Callback] | None = None, trial: Any = None,
                   baseline: ExperimentConfig | None = None, resume: bool = True,
                   progress_bar: bool | None = None, quiet: bool = False, datamodule: Any = None) -> Result:
    """Train and evaluate one experiment; returns its ``Result`` and writes ``<run_dir>/result.json``.

    Args:
        cfg: the experiment (validated here; config and data errors raise before any training).
        callbacks: extra Lightning callbacks.
        trial: an Optuna trial; adds the pruning callback on ``MONITOR`` (single-objective studies). A pruned
            run returns ``status="pruned"``; the caller raises ``optuna.TrialPruned``.
        baseline: what the run name is relative to (``naming.run_name``).
        resume: reuse the run folder: return a complete result of the same config as is, and continue an
            unfinished run from ``checkpoints/last.ckpt``. ``False`` starts over.
        progress_bar: Lightning's progress bar; ``None`` shows it when stderr is a terminal.
        quiet: no model summary table (the quickstart runs many small jobs).
        datamodule: the datamodule ``prepare(cfg)`` returned for this (resolved) ``cfg``, to skip loading twice.

    Returns:
        The ``Result``; ``status`` is ``complete``, ``failed`` (``reason`` says why) or ``pruned``.
    """
    cfg, dm = prepare(cfg) if datamodule is None else (cfg, datamodule)
    chash = cfg.hash()
    name, run_dir = claim_run_dir(cfg, run_name(cfg, baseline))
    is_writer = rank_zero_only.rank == 0
    previous = run_dir / RESULT_FILE
    earlier_wall = 0.0
    if previous.exists() and resume:
        old = Result.load(previous)
        if old.status == "complete":
            return old
        earlier_wall = old.wall_time_s  # an interrupted run's time counts towards the resumed one
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last_ckpt) if (resume and last_ckpt.exists()) else None

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SEClassifier(cfg.to_dict(), input_size=tuple(dm.input_size))
    wandb_id = wandb_logging.run_id(run_dir)
    wandb_logger = wandb_logging.make_logger(cfg, name, run_dir, wandb_id)
    loggers = [CSVLogger(save_dir=str(run_dir), name="", version="csv")]
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor=MONITOR,
                                 mode=MONITOR_MODE, save_last=True, save_top_k=1)
    cbs: list[Callback] = [checkpoint, RNGStateCallback(), LearningRateMonitor(logging_interval="epoch")]
    pruning = _pruning_callback(trial)
    cbs += [c for c in (pruning,) if c is not None] + list(callbacks or [])

    with _benign_warnings_off():
        try:
            trainer = _trainer(cfg.train, loggers, cbs, run_dir, progress_bar, quiet)
        except MisconfigurationException as exc:  # e.g. precision=16-mixed on a CPU, accelerator=gpu without one
            raise ValueError(f"train.accelerator/devices/strategy/precision: {exc}") from None
    if is_writer:  # nothing was written before this point: a refused config leaves no folder behind
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        wandb_logging.save_run_id(run_dir, wandb_id)
    status, reason, started = "complete", None, time.perf_counter()
    try:
        with _benign_warnings_off():
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        if pruning is not None:
            pruning.check_pruned()
    except NonFiniteLossError as exc:
        status, reason = "failed", f"non-finite loss: {exc}"
    except Exception as exc:  # noqa: BLE001 (a failed trial is recorded, and the sweep goes on)
        if type(exc).__name__ == "TrialPruned":
            status, reason = "pruned", str(exc) or f"pruned at epoch {trainer.current_epoch}"
        else:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        status, reason = "failed", "interrupted"
        raise
    finally:
        wall = earlier_wall + time.perf_counter() - started
        result = _result(cfg, chash, name, run_dir, module, trainer, status, reason, wall)
        summary = {PARAMS: result.params, GMACS: result.gmacs, "status": status, "epochs": result.epochs,
                   **result.metrics}
        result.wandb_dir = wandb_logging.finish(wandb_logger, summary, failed=status == "failed")
        if is_writer:
            result.save()
    return result


# Lightning hints that do not apply to these runs (small in-memory data sets, resumed folders).
_BENIGN_WARNINGS = (
    ".*does not have many workers.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*The number of training batches .* is smaller than the logging interval.*",
    ".*Experiment logs directory .* exists and is not empty.*",
    ".*The `srun` command is available on your system but is not used.*",  # submitit launches SLURM jobs
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # inside Lightning 2.6 on torch >= 2.10
)


@contextlib.contextmanager
def _benign_warnings_off():
    with warnings.catch_warnings():
        for pattern in _BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _trainer(t: Any, loggers: list, cbs: list, run_dir: Path, progress_bar: bool | None, quiet: bool) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision,
        # "warn": deterministic kernels wherever they exist (all of them on CPU), a warning instead of a crash
        # for the few CUDA backward kernels that have none (adaptive pooling: the SE squeeze).
        deterministic="warn" if t.deterministic else False,
        logger=loggers, callbacks=cbs, default_root_dir=str(run_dir),
        enable_progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
        enable_model_summary=not quiet, log_every_n_steps=10,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
    )


def claim_run_dir(cfg: ExperimentConfig, name: str) -> tuple[str, Path]:
    """``(name, output_dir/name)``, or ``name-<hash>`` when that folder already holds another experiment.

    Names encode only what differs from the baseline, so two runs that differ elsewhere (say in
    ``train.epochs``) can share one; the second then gets the config hash appended instead of overwriting
    the first. An explicit ``cfg.name`` is never renamed: a clash is an error.
    """
    folder = Path(cfg.output_dir) / name
    stored = folder / "config.yaml"
    if not stored.exists():
        return name, folder
    try:
        same = ExperimentConfig.from_dict(yaml.safe_load(stored.read_text())).hash() == cfg.hash()
    except (ValueError, TypeError, yaml.YAMLError):
        same = False
    if same:
        return name, folder
    if cfg.name:
        raise ValueError(f"name={cfg.name!r}: {folder} holds a different experiment; choose another name or output_dir")
    suffixed = f"{name}-{cfg.hash()[:8]}"
    return suffixed, Path(cfg.output_dir) / suffixed


def _pruning_callback(trial: Any) -> Callback | None:
    if trial is None or len(trial.study.directions) != 1:  # Optuna prunes single-objective studies only
        return None
    from optuna_integration import PyTorchLightningPruningCallback

    return PyTorchLightningPruningCallback(trial, monitor=MONITOR)


def _result(cfg: ExperimentConfig, chash: str, name: str, run_dir: Path, module: SEClassifier,
            trainer: pl.Trainer, status: str, reason: str | None, wall: float) -> Result:
    cx = module.complexity
    if cx is None:  # training failed before fit start; the cost is still a property of the arm
        try:
            cx = module.measure_complexity()
        except Exception:  # noqa: BLE001
            cx = None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in RESULT_METRICS}
    if status == "complete" and any(not math.isfinite(v) for v in metrics.values()):
        status, reason = "failed", "non-finite metric"
    return Result(
        config=cfg.to_dict(), config_hash=chash, seed=cfg.seed, git_commit=git_commit(),
        params=int(cx.params) if cx is not None else 0, gmacs=float(cx.gmacs) if cx is not None else 0.0,
        metrics=metrics, epochs=int(trainer.current_epoch), wall_time_s=round(wall, 3), status=status,
        reason=reason, run_dir=str(run_dir), name=name,
    )
