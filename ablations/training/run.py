"""``run_experiment(experiment) -> Result``: one arm, one seed, trained and evaluated.

The one plain function that the CLI, the quickstart, the Optuna objective and the W&B agent all call. It takes
the ``Experiment`` of the one resolve step (``ablations.experiment.resolve`` or ``settle``), so everything is
validated and the run folder named before any work (bad config, missing data folder: ``ValueError`` /
``FileNotFoundError``); then it builds the run's one ``Trainer`` and its module (a refused setting fails before the
folder is touched), takes the folder, trains with Lightning (checkpoints, resume, DDP, mixed precision), and
writes one JSON result row to ``<output_dir>/<name>/result.json``, independent of W&B.
A failure inside training (NaN loss, out of memory, ...) becomes ``status="failed"`` with its reason; a
signal (Ctrl-C, SIGTERM, SIGHUP, SIGUSR1/2) becomes ``status="interrupted"`` and ``RunInterrupted`` is raised;
``complete`` means training reached its last epoch. The run folder's lock and attempts live in
``ablations.training.run_folder``, its checkpoints and resume point in ``ablations.training.checkpoints``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ablations.config import ExperimentConfig
from ablations.experiment import Experiment, settle
from ablations.naming import stored_hash
from ablations.training import interrupts, provenance, wandb_logging
from ablations.training.checkpoints import AtomicCheckpoint, RNGStateCallback, checkpoint_callbacks, resume_point
from ablations.training.cost import CostCallback, count_complexity
from ablations.training.faults import MachineFault, machine_fault
from ablations.training.interrupts import RunInterrupted
from ablations.training.lightning_trainer import (
    benign_warnings_off,
    check_devices,
    held_lines,
    make_trainer,
    pruning_callback,
)
from ablations.training.metrics import GMACS, MONITOR, MONITOR_MODE, PARAMS, RESULT_METRICS
from ablations.training.module import NonFiniteLossError, SEClassifier
from ablations.training.result import RESULT_FILE, STATUSES, Result, git_commit
from ablations.training.run_folder import (
    CHECKPOINTS,
    AttemptCallback,
    Attempts,
    RunFolderBusy,
    RunLock,
    check_real_folder,
    start_over,
)
from ablations.training.run_history import HistoryCSVLogger, epoch_values
from senet import safe_load

__all__ = ["RESULT_FILE", "STATUSES", "Result", "RunFolderBusy", "RunInterrupted", "run_config", "run_experiment"]

def run_experiment(experiment: Experiment, *, callbacks: Sequence[Callback] | None = None, trial: Any = None,
                   resume: bool = True, progress_bar: bool | None = None, quiet: bool = False) -> Result:
    """Train and evaluate one experiment; returns its ``Result`` and writes ``<run_dir>/result.json``.

    Args:
        experiment: the resolved experiment (``ablations.experiment.resolve``, or ``settle(cfg)`` for a config).
        callbacks: extra Lightning callbacks.
        trial: an Optuna trial; adds the pruning callback on ``MONITOR`` (single-objective studies). A pruned
            run returns ``status="pruned"``; the caller raises ``optuna.TrialPruned``.
        resume: reuse the run folder: return a complete result of the same config as is, and continue any
            other run from ``checkpoints/last.ckpt``. ``False`` empties the folder and starts over.
        progress_bar: Lightning's progress bar; ``None``: tqdm on a terminal, else one line per epoch (``epoch_log``).
        quiet: no model summary table (the quickstart runs many small jobs).

    Returns:
        The ``Result``; ``status`` is ``complete`` (training reached ``train.epochs``), ``failed`` (``reason``
        says why) or ``pruned``.

    Raises:
        RunInterrupted: Ctrl-C, SIGTERM or SIGUSR1 (or Lightning's ``SystemExit``) stopped training; the row
            says ``interrupted`` and ``checkpoints/last.ckpt`` resumes it.
        RunFolderBusy: another live process trains the same experiment in this folder.
        ValueError: another experiment took the run folder after this one was named (``settle``).
    """
    exp = experiment
    if not isinstance(exp, Experiment):
        raise TypeError(f"run_experiment takes the resolved Experiment (ablations.experiment.settle), not a "
                        f"{type(exp).__name__}; for a config, call run_config(cfg)")
    with interrupts.guard(), _pinned_threads(exp.config.train.threads):
        run_dir = Path(exp.config.output_dir) / exp.name
        check_real_folder(run_dir)
        # Read before the lock (an unreadable checkpoint is one line before anything is written), and again under it.
        seen = _folder_state(run_dir, resume)
        fit = _Fit.build(exp, run_dir, callbacks, trial, seen, progress_bar, quiet)
        pl.seed_everything(exp.config.seed, workers=True, verbose=False)  # the network's initial weights
        module = SEClassifier(exp.config, input_size=exp.input_size)
        owner = fit.trainer.global_rank == 0  # the Trainer knows the rank: rank 0 owns the folder's files
        with _held(run_dir, exp.config_hash, resume, owner) as done:
            if done is not None:
                return done
            if owner and (now := _folder_state(run_dir, resume)) != seen:  # the attempt that held the folder wrote since
                fit = _Fit.build(exp, run_dir, callbacks, trial, now, progress_bar, quiet)
            return _train(exp, fit, module, run_dir, fit.attempts if owner else None)


@contextlib.contextmanager
def _pinned_threads(threads: int | None) -> Iterator[None]:
    """``train.threads`` (float results depend on it) for the whole run, W&B's config and the row included."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _held(run_dir: Path, config_hash: str, resume: bool, owner: bool) -> Iterator[Result | None]:
    """The run folder held for one attempt: rank 0 takes its lock (a DDP follower holds nothing) and empties it for
    ``resume=False``; yields the complete result row that a rerun returns as is, else ``None`` (train). A folder
    that another experiment took after this one was named (``naming.folder_name``) is refused, untouched."""
    if not owner:
        yield None
        return
    lock, done = RunLock(run_dir), None
    try:
        lock.acquire()
    except MachineFault:  # a folder that cannot be written still answers for its complete run
        if not resume or (done := _complete(run_dir, config_hash)) is None:
            raise
    if done is not None:
        yield done
        return
    try:
        if stored_hash(run_dir) not in (None, config_hash):
            raise ValueError(f"run folder {run_dir} holds a different experiment since this run was named (another run "
                             "took it meanwhile); rerun the same command, which names a free folder (or refuses name=)")
        if not resume:
            start_over(run_dir)
        yield _complete(run_dir, config_hash) if resume else None
    finally:
        lock.release()


def _folder_state(run_dir: Path, resume: bool) -> tuple[dict[str, int] | None, str | None]:
    """What a resume continues from (``None``: none, or ``resume=False``): ``last.ckpt``'s point, the W&B run id."""
    if not resume:
        return None, None
    last_ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    return (resume_point(last_ckpt) if last_ckpt.exists() else None), wandb_logging.stored_run_id(run_dir)


def run_config(cfg: ExperimentConfig, baseline: ExperimentConfig | None = None, **kwargs: Any) -> Result:
    """``run_experiment(settle(cfg, baseline), **kwargs)``: a config's run (a sweep arm, a quickstart arm, a script),
    through the same resolve step as ``senet-ablate train``; ``baseline`` is what its run name is relative to."""
    with interrupts.guard():  # a signal while the data is read is the run's interruption too
        return run_experiment(settle(cfg, baseline), **kwargs)


def _complete(run_dir: Path, config_hash: str) -> Result | None:
    """The run's complete result row (a rerun returns it as is), else ``None``; never another experiment's."""
    previous = run_dir / RESULT_FILE
    if previous.exists() and (old := Result.load(previous)).status == "complete" and old.config_hash == config_hash:
        return old
    return None


@dataclass(frozen=True)
class _Fit:
    """The run's one ``Trainer`` with the loggers and callbacks whose records make the result row."""

    trainer: pl.Trainer
    wandb_logger: Any
    wandb_id: str
    cost: CostCallback
    pruning: Any
    attempts: Attempts
    resume_from: dict[str, int] | None
    held: tuple  # Lightning's start-up lines, printed when training starts (``lightning_trainer.held_lines``)

    @classmethod
    def build(cls, exp: Experiment, run_dir: Path, callbacks: Sequence[Callback] | None, trial: Any,
              state: tuple[dict[str, int] | None, str | None], progress_bar: bool | None, quiet: bool) -> _Fit:
        """Built before the run folder is touched: nothing here writes, so a refused Trainer setting (``precision=
        16-mixed`` on a CPU, ``accelerator=gpu`` without one) is one line and leaves no folder behind. ``state`` is
        ``_folder_state``: the resume point and the W&B id to continue (a new id where none is stored)."""
        resume_from, wandb_id = state[0], state[1] or wandb_logging.new_run_id()
        attempts = Attempts(run_dir)  # written by global rank 0 only (AttemptCallback, _train)
        wandb_logger = wandb_logging.make_logger(exp, run_dir, wandb_id)
        loggers = [HistoryCSVLogger(save_dir=str(run_dir), name="", version="csv", resume_from=resume_from)]
        loggers += [wandb_logger] if wandb_logger is not None else []
        cost, pruning = CostCallback(), pruning_callback(trial)
        cbs: list[Callback] = [*checkpoint_callbacks(run_dir / CHECKPOINTS, MONITOR, MONITOR_MODE), RNGStateCallback(),
                               LearningRateMonitor(logging_interval="epoch"), AttemptCallback(attempts), cost,
                               *([pruning] if pruning is not None else []), *(callbacks or [])]
        check_devices(exp.config.train)  # here, not in settle(): --print-config checks a cluster's config on a laptop
        held: list = []
        with benign_warnings_off(), held_lines(held):
            try:
                trainer = make_trainer(exp.config.train, loggers, cbs, run_dir, progress_bar, quiet)
            except MisconfigurationException as exc:
                raise ValueError(f"train.accelerator/devices/strategy/precision: {exc}") from None
        return cls(trainer, wandb_logger, wandb_id, cost, pruning, attempts, resume_from, tuple(held))

    def finished_epochs(self) -> int:
        """Epochs done: Lightning counts an epoch after its checkpoint callbacks, so a signal between the two would
        otherwise record one epoch fewer than ``last.ckpt`` holds (and the resume starts from)."""
        saved = [cb.saved_epoch + 1 for cb in self.trainer.checkpoint_callbacks
                 if isinstance(cb, AtomicCheckpoint) and cb.saved_epoch is not None]
        return max([int(self.trainer.current_epoch), *saved])


def _train(exp: Experiment, fit: _Fit, module: SEClassifier, run_dir: Path, attempts: Attempts | None) -> Result:
    """Fit ``module`` once (a first attempt, or a resume from ``resume_point(last.ckpt)``) and record the outcome;
    ``attempts`` is ``None`` off rank 0."""
    cfg, trainer, resume_from = exp.config, fit.trainer, fit.resume_from
    last_ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    for record in fit.held:  # Lightning's start-up lines, held while the Trainer waited for the folder
        logging.getLogger(record.name).handle(record)
    status, reason, stop = "complete", None, None
    try:
        if attempts is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            wandb_logging.save_run_id(run_dir, fit.wandb_id)
            attempts.begin(None if resume_from is None else resume_from["epoch"] + 1)
        # The resume reads last.ckpt as tensors and plain data only.
        with benign_warnings_off(), safe_load.safe_loading():
            trainer.fit(module, datamodule=exp.datamodule, ckpt_path=str(last_ckpt) if resume_from else None,
                        weights_only=True)
        if fit.pruning is not None:
            fit.pruning.check_pruned()
        if trainer.current_epoch < cfg.train.epochs:  # fit returned early without an error: not a finished run
            status, reason = "interrupted", f"training stopped at epoch {trainer.current_epoch} of {cfg.train.epochs}"
    except NonFiniteLossError as exc:
        status, reason = "failed", f"non-finite loss: {exc}"
    except Exception as exc:  # noqa: BLE001 (a failed trial is recorded, and the sweep goes on)
        if (stop := machine_fault(exc, run_dir)) is not None:  # the machine's fault, not the arm's: resumable
            status, reason = "interrupted", f"{stop}; rerun the same command to resume once that is fixed"
        elif type(exc).__name__ == "TrialPruned":
            status, reason = "pruned", str(exc) or f"pruned at epoch {trainer.current_epoch}"
        else:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # Ctrl-C, SIGTERM, SIGUSR1, Lightning's sys.exit: unfinished, resumable
        stop = interrupts.as_interrupt(exc)
        if stop is None:
            raise
        status, reason = "interrupted", (f"{stop} during epoch {fit.finished_epochs() + 1} of {cfg.train.epochs}; "
                                         "rerun the same command to resume from checkpoints/last.ckpt")
    finally:
        with interrupts.deferred():  # a second Ctrl-C must not cut the result row in half
            try:
                result = _record(exp, fit, module, run_dir, status, reason, attempts, stop)
            except OSError as exc:  # the row cannot be written either (a full disk): the first fault is reported
                stop = stop or machine_fault(exc, run_dir)
                if stop is None:
                    raise
    if stop is not None:
        raise stop from None
    return result


def _record(exp: Experiment, fit: _Fit, module: SEClassifier, run_dir: Path, status: str, reason: str | None,
            attempts: Attempts | None, stop: RunInterrupted | None) -> Result:
    """The result row of this attempt, assembled here and only here: W&B's summary is read from it and its run
    finished with the matching exit code; ``result.json`` is written on rank 0."""
    trainer, epochs = fit.trainer, fit.finished_epochs()
    if attempts is not None:
        attempts.update(epochs=epochs, status=status)
    cx = module.complexity
    if cx is None:  # training failed before the count (ComplexityLog); the cost is still a property of the arm
        try:
            cx = count_complexity(module)
        except Exception:  # noqa: BLE001
            cx = None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in RESULT_METRICS}
    if status == "complete" and not metrics:  # resumed from the last epoch's checkpoint: nothing left to log
        metrics = epoch_values(run_dir, RESULT_METRICS, trainer.current_epoch - 1)
    if status == "complete" and any(not math.isfinite(v) for v in metrics.values()):
        status, reason = "failed", "non-finite metric"
    env = provenance.collect(trainer)
    if getattr(trainer, "datamodule", None) is not None:  # data.num_workers may be null: the number used
        env["data_workers"] = trainer.datamodule.num_workers
    result = Result(
        config=exp.config.to_dict(), config_hash=exp.config_hash, seed=exp.config.seed, git_commit=git_commit(),
        params=int(cx.params) if cx is not None else 0, gmacs=float(cx.gmacs) if cx is not None else 0.0,
        metrics=metrics, epochs=epochs, status=status, reason=reason, run_dir=str(run_dir), name=run_dir.name,
        wall_time_s=attempts.wall_time_s if attempts is not None else 0.0,
        attempts=len(attempts.entries) if attempts is not None else 1, env=env,
        cost=fit.cost.cost(trainer.strategy.root_device))
    summary = {PARAMS: result.params, GMACS: result.gmacs, "status": result.status, "epochs": result.epochs,
               **result.metrics, **{f"cost/{k}": v for k, v in result.cost.items() if v is not None}}
    exit_code = stop.exit_code if stop is not None else (0 if result.status in ("complete", "pruned") else 1)
    result.wandb_dir = wandb_logging.finish(fit.wandb_logger, summary, exit_code=exit_code, env=result.env)
    if attempts is not None:
        result.save()
    return result
