"""A trial's learning curve (docs/DESIGN.md, Sweeps): the objective per epoch as Optuna intermediate values.

optuna-dashboard draws a trial's intermediate values as its learning curve, so every single-objective
trial reports its objective once per validation epoch (``trial.report(value, epoch)``, epochs from 0),
whether or not a pruner is on. Pruning stays optuna-integration's ``PyTorchLightningPruningCallback``,
used only when the spec names a pruner (it reports too); without one ``EpochReport`` reports and never
asks ``should_prune``, so nothing can stop the trial. After the run, ``report_history`` fills in the epochs
the trial did not see train, from the run folder's ``csv/metrics.csv`` (``ablations.training.run_history``): a run that was complete on disk
(reused), or the earlier attempts of a resumed one. Optuna keeps no intermediate values for
multi-objective studies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback

from ablations.training.run_history import history


class EpochReport(Callback):
    """Report ``metric`` to the trial at every validation end (global rank 0; never prunes)."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or not trainer.is_global_zero or value is None:
            return
        self.trial.report(float(value), step=int(trainer.current_epoch))


def report_history(trial: optuna.Trial, run_dir: str | Path, metric: str) -> int:
    """Report the epochs of the run's history that the trial lacks; returns how many were added."""
    have = trial.storage.get_trial(trial._trial_id).intermediate_values  # as the Lightning pruning callback does
    added = 0
    for epoch, value in history(run_dir, metric).items():
        if epoch not in have:
            trial.report(value, step=epoch)
            added += 1
    return added
