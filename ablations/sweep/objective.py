"""One Optuna trial of a sweep (docs/DESIGN.md, Sweeps): suggest -> ``ExperimentConfig`` -> ``run_experiment`` -> values.

The trial keeps its runs in its user attributes (``attrs``): flat scalars that optuna-dashboard shows, and
one compact entry per run from which the report rebuilds the result rows, so reports never depend on W&B
files. Its learning curve is the objective per epoch, reported with or without a pruner (``curves``). A
failed run is recorded with its reason (``user_attrs["reason"]``) and raised, so Optuna marks the trial
FAIL and the worker goes on; a pruned run raises ``optuna.TrialPruned``; an interrupted one (Ctrl-C,
SIGTERM, SIGHUP, SIGUSR1/2) is recorded as ``interrupted`` and the ``RunInterrupted`` goes on to the worker, which
re-queues the trial. Sampled (non-grid) studies skip an arm whose config hash already has a complete trial
and reuse its values, so TPE's repeats cost nothing.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ablations.sweep.attrs import folder_attrs, trial_attrs
from ablations.sweep.space import suggest
from ablations.sweep.spec import SweepSpec, baseline_config, make_config
from ablations.training import interrupts
from ablations.training.metrics import GMACS, MONITOR, PARAMS


class TrialFailed(RuntimeError):
    """The run of a trial failed (non-finite loss, out of memory, ...); the reason is in the user attrs."""


def metric_value(row: dict, metric: str) -> float:
    """One objective's value from a result row (``params`` and ``gmacs`` are columns, the rest metrics)."""
    if metric == PARAMS:
        return float(row["params"])
    if metric == GMACS:
        return float(row["gmacs"])
    if metric not in row["metrics"]:
        raise TrialFailed(f"the run reported no {metric!r} (it has: {', '.join(sorted(row['metrics']))})")
    return float(row["metrics"][metric])


def trial_config(spec: SweepSpec, study_name: str, params: dict[str, Any], seed: int | None = None):
    """The run config of one trial (and seed): written under ``<output_dir>/<study>``, W&B group = study."""
    cfg = make_config(spec, params, seed)
    return cfg.override({"output_dir": f"{spec.base.output_dir}/{study_name}", "wandb.group": study_name,
                         "wandb.job_type": "sweep"})


class SweepObjective:
    """The callable ``study.optimize`` runs.

    Args:
        spec: the validated sweep.
        study_name: the study (names the output folder and the W&B group).
        runner: ``run_config`` (injectable for the DDP follower ranks and for tests of the engine).
        on_start: called with the trial first thing (the worker takes the trial's lease and releases its claim lock).
        on_config: called with ``(trial, cfg, baseline)`` before each run (DDP rank 0 broadcasts them there).
    """

    def __init__(self, spec: SweepSpec, study_name: str, runner: Callable | None = None,
                 on_start: Callable[[optuna.Trial], None] | None = None,
                 on_config: Callable[[optuna.Trial, Any, Any], None] | None = None) -> None:
        self.spec, self.study_name = spec, study_name
        self.runner, self.on_start, self.on_config = runner, on_start, on_config
        self.baseline = baseline_config(spec)

    def _run(self, cfg, trial: optuna.Trial | None):
        runner = self.runner
        if runner is None:
            from ablations.training.run import run_config as runner
        baseline = self.baseline.replace(seed=cfg.seed)
        report = trial is not None and not self.spec.multi_objective  # Optuna keeps curves of one objective only
        prune = report and self.spec.pruner["type"] != "none"
        # DDP followers build the pruning callback when they get the trial: only where rank 0 has one too.
        if self.on_config is not None:
            self.on_config(trial if prune else None, cfg, baseline)
        callbacks, own = [], None
        metric = self.spec.objectives[0].metric
        if prune and metric != MONITOR:
            # run_experiment's own pruning callback watches MONITOR; other metrics get theirs here.
            from optuna_integration import PyTorchLightningPruningCallback

            own = PyTorchLightningPruningCallback(trial, monitor=metric)
            callbacks.append(own)
        elif report and not prune:
            from ablations.sweep.curves import EpochReport

            callbacks.append(EpochReport(trial, metric))
        result = runner(cfg, callbacks=callbacks, trial=trial if prune and own is None else None,
                        baseline=baseline, quiet=True)
        if own is not None and result.status == "complete":
            own.check_pruned()  # DDP: the prune decision was made on rank 0 and kept in the storage
        if report and result.run_dir:
            from ablations.sweep.curves import report_history

            report_history(trial, result.run_dir, metric)  # a reused run, or a resumed run's earlier epochs
        return result

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        if self.on_start is not None:
            self.on_start(trial)
        spec = self.spec
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = suggest(trial, spec)
        seeds = [params["seed"]] if spec.is_grid else list(spec.seeds)
        arm = trial_config(spec, self.study_name, params, seeds[0])  # the first seed's run: resolved once
        trial.set_user_attr("arm_hash", arm.arm_hash())
        if "config_hash" not in trial.user_attrs:
            trial.set_user_attr("config_hash", arm.hash())
        if not spec.is_grid:
            done = self._duplicate_of(trial)
            if done is not None:
                trial.set_user_attr("duplicate_of", done.number)
                for key, value in done.user_attrs.items():  # its runs' attributes; the report skips duplicates
                    if key not in trial.user_attrs:
                        trial.set_user_attr(key, value)
                for step, value in done.intermediate_values.items():
                    trial.report(value, step)
                return done.values if spec.multi_objective else done.value
        rows: list[dict] = []
        folders: list[dict] = []
        for i, seed in enumerate(seeds):
            cfg = arm if i == 0 else trial_config(spec, self.study_name, params, seed)
            try:
                # Only the first seed reports intermediate values: Optuna keeps one value per step.
                result = self._run(cfg, trial if i == 0 else None)
            except optuna.TrialPruned:
                trial.set_user_attr("status", "pruned")
                raise
            except KeyboardInterrupt as exc:  # RunInterrupted: the worker re-queues the trial
                with interrupts.deferred():  # a second signal must not leave the reason half-written
                    trial.set_user_attr("status", "interrupted")
                    trial.set_user_attr("reason", _interrupt_reason(cfg, self.baseline, exc))
                raise
            except Exception as exc:
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
                raise
            rows.append(result.to_dict())
            folders.append(folder_attrs(rows[-1], trial.datetime_start))
            for key, value in trial_attrs(rows, folders, trial.user_attrs).items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("status", result.status)  # the trial's, where its seeds' statuses differ
            if result.status == "pruned":
                raise optuna.TrialPruned(result.reason or "pruned")
            if result.status != "complete":
                trial.set_user_attr("reason", result.reason)
                raise TrialFailed(result.reason or result.status)
        values = [sum(metric_value(r, o.metric) for r in rows) / len(rows) for o in spec.objectives]
        return values if spec.multi_objective else values[0]

    def _duplicate_of(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        arm = trial.user_attrs["arm_hash"]
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("arm_hash") == arm and t.number != trial.number:
                return t
        return None


def _interrupt_reason(cfg, baseline, exc: BaseException) -> str:
    """The run's own account (``result.json``: signal and epoch) of an interrupt, or the exception's."""
    try:
        from ablations.naming import folder_name, run_name
        from ablations.training.run import Result

        name = folder_name(cfg, run_name(cfg, baseline.replace(seed=cfg.seed)))
        reason = Result.load(Path(cfg.output_dir) / name).reason
    except Exception:  # noqa: BLE001 - interrupted before the run wrote its row
        reason = None
    return reason or str(interrupts.as_interrupt(exc) or exc)
