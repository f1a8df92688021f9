"""An Optuna worker (docs/DESIGN.md, Sweeps): claim a trial, run it, repeat until the study is done.

Many workers share one study. A worker claims its next trial while holding the study lock, so the
last queued grid cell goes to exactly one worker and nobody asks the sampler for a stray point; under
the same lock it takes the trial's lease (``leases``), which dies with the process. The trial itself
runs outside the lock. Before each claim the worker fails and re-queues the RUNNING trials whose lease
is free (a killed worker's: at once) or whose heartbeat is stale (a worker cut off from the database:
after the grace period, and only if nobody holds its lease: ``reconnect``), and it does not exit while other
workers' trials still run, so a trial lost with its worker is re-run, never dropped. A database that restarts
or stalls is waited for (``reconnect``: bounded); the lease is taken again after a reconnect. A signal
(Ctrl-C, SIGTERM, SIGHUP, SIGUSR1/2) stops the worker: its trial is failed, marked ``interrupted`` and
re-queued at once, and ``RunInterrupted`` leaves with the exit code 128 + signal. Under DDP (a SLURM trial
with several GPUs or nodes) rank 0 is the worker and the other ranks follow it.
"""
from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ablations.sweep.leases import LEASE_SERVER, Leases, Requeue
from ablations.sweep.objective import SweepObjective
from ablations.sweep.queue import install_claim
from ablations.sweep.reconnect import ResilientStorage
from ablations.sweep.spec import SweepSpec
from ablations.sweep.study import StudyLock, check_threads, load_study, outage_s, progress
from ablations.training import interrupts

log = logging.getLogger(__name__)


def _next_step(study: optuna.Study, spec: SweepSpec, n_trials: int | None) -> str:
    """``run`` (a trial can be claimed), ``wait`` (others still run trials that may fail) or ``stop``."""
    count = progress(study)
    # Everything that ran or runs counts against the budget, except failed trials that were re-queued.
    used = count["complete"] + count["pruned"] + count["fail"] + count["running"]
    budget = spec.n_trials if n_trials is None else n_trials
    if budget is not None and used >= budget:
        return "wait" if count["running"] else "stop"
    if count["waiting"] or not spec.is_grid:
        return "run"
    return "wait" if count["running"] else "stop"


def run_worker(spec: SweepSpec, url: str, study_name: str, *, max_trials: int | None = None,
               n_trials: int | None = None, runner: Callable | None = None,
               on_config: Callable | None = None, on_stop: Callable[[], Any] | None = None) -> int:
    """Run trials of the study until none is left; returns how many this worker ran.

    Args:
        spec: the validated sweep (the study must exist: ``study.setup_study``).
        url: the storage URL.
        study_name: the study.
        max_trials: stop after this many trials of this worker (``None``: until the study is done).
        n_trials: the study's total trial budget (default: the spec's; a grid's size caps it anyway).
        runner: ``run_config`` by default.
        on_config: passed to the objective (DDP rank 0 broadcasts each run's config to its followers).
        on_stop: called once when the worker stops (DDP rank 0 tells its followers).
    """
    study = install_claim(load_study(spec, url, study_name))  # the oldest WAITING trial, without reading them all
    check_threads(study, spec)
    backend = getattr(study._storage, "_backend", study._storage)  # Optuna wraps an RDBStorage in a cache

    def retake(trial_id: int, server: str) -> bool:  # after a reconnect: only a trial that is still ours
        if backend.get_trial(trial_id).state != TrialState.RUNNING:
            log.warning("trial %d was given up while this worker was cut off from the database", trial_id)
            return False
        backend.set_trial_system_attr(trial_id, LEASE_SERVER, server)
        return True

    lock, leases = StudyLock(url, study_name, outage_s(spec)), Leases(url, outage_s(spec), on_retake=retake)
    if isinstance(backend, ResilientStorage):
        backend.lease_holders = leases.alive  # a held lease means a live worker, whatever its heartbeat says
        backend.on_beat.append(leases.keep)

    def claimed(trial: optuna.Trial) -> None:  # still under the study lock: nobody sees it RUNNING without a lease
        leases.take(trial._trial_id)
        if leases.server is not None:
            backend.set_trial_system_attr(trial._trial_id, LEASE_SERVER, leases.server)
        lock.release()

    objective = SweepObjective(spec, study_name, runner=_patient(runner), on_start=claimed, on_config=on_config)
    dead, interrupted = Requeue(spec.max_retry), Requeue(spec.max_retry, interrupt=True)
    poll = max(1.0, min(5.0, spec.heartbeat_interval / 2))
    ran = 0
    try:
        with interrupts.guard():
            while max_trials is None or ran < max_trials:
                interrupts.raise_if_signalled()  # one swallowed by a finalizer while we waited
                lock.acquire()
                try:
                    leases.fail_dead(study, dead)
                    with interrupts.deferred():  # failed but not yet re-queued would lose the arm
                        optuna.storages.fail_stale_trials(study)  # the heartbeat fallback
                    step = _next_step(study, spec, n_trials)
                    if step == "wait":
                        lock.release()
                        time.sleep(poll)
                        continue
                    if step == "stop":
                        break
                    # ``claimed`` releases the lock as soon as Optuna has claimed the trial for us.
                    _run_one(study, objective, leases, interrupted)
                    ran += 1
                finally:
                    lock.release()
    finally:
        lock.close()
        leases.close()
        if on_stop is not None:
            on_stop()
    return ran


def _run_one(study: optuna.Study, objective: SweepObjective, leases: Leases, requeue: Requeue) -> None:
    """One ``study.optimize`` trial; on a signal, this worker's trial goes back to the queue before it exits."""
    try:
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
    except UpdateFinishedTrialError as exc:  # our lease or heartbeat lapsed and another worker re-queued the trial
        log.warning("trial finished elsewhere: %s", exc)
    except ValueError as exc:
        # A lapsed trial whose run then failed on its next write: Optuna tells it FAIL and finds it finished.
        if "Cannot tell a" not in str(exc):
            raise
        log.warning("trial finished elsewhere: %s", exc)
    except BaseException as exc:
        # A signal may hit Optuna's own bookkeeping too, which then raises something else: the signal decides.
        stop = interrupts.as_interrupt(exc)
        if stop is None and interrupts.last_signal() is not None:
            stop = interrupts.RunInterrupted(interrupts.last_signal())
        if stop is None:
            raise
        if leases.trial_id is not None:
            with interrupts.deferred():
                _requeue_interrupted(study, leases.trial_id, stop, requeue)
        raise stop from None
    finally:
        leases.release()  # only now: the trial's final state is stored


#: How long a trial waits for its run folder while another live process (a cut-off earlier attempt) holds it.
FOLDER_WAIT_S = 3600.0


def _patient(runner: Callable | None) -> Callable:
    """``runner`` (``run_config`` by default) that waits for a run folder held by another live process.

    A retry of an arm whose first attempt was cut off from the database (its trial failed for a dropped lease
    or a stale heartbeat) finds that attempt still training in the arm's folder: the folder is not the arm's
    fault, so the retry waits for it (bounded, ``FOLDER_WAIT_S``) instead of failing the arm, then resumes the
    run or reuses its complete result.
    """
    from ablations.training.run_folder import RunFolderBusy

    def run(cfg, **kwargs):
        nonlocal runner
        if runner is None:
            from ablations.training.run import run_config as runner
        deadline, warned = time.monotonic() + FOLDER_WAIT_S, False
        while True:
            try:
                return runner(cfg, **kwargs)
            except RunFolderBusy as exc:
                if time.monotonic() > deadline:
                    raise
                if not warned:
                    log.warning("waiting for the run folder: %s", exc)
                    warned = True
                interrupts.raise_if_signalled()
                time.sleep(1.0)

    return run


def _requeue_interrupted(study: optuna.Study, trial_id: int, stop: interrupts.RunInterrupted,
                         requeue: Requeue) -> None:
    """Fail this worker's interrupted trial (Optuna leaves it RUNNING on ``SystemExit``) and re-queue it."""
    storage = study._storage  # as optuna.storages.fail_stale_trials does
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:
        try:
            if trial.user_attrs.get("status") != "interrupted":
                storage.set_trial_user_attr(trial_id, "status", "interrupted")
                storage.set_trial_user_attr(trial_id, "reason", str(stop))
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # the heartbeat check failed it and re-queued it already
            return
        trial = storage.get_trial(trial_id)
    # A trial that really failed (or completed, or was pruned) before the signal keeps its outcome.
    if trial.state == TrialState.FAIL and trial.user_attrs.get("status") not in ("failed", "pruned"):
        requeue(study, trial)
        log.warning("trial %d: %s; re-queued", trial.number, trial.user_attrs.get("reason") or stop)


def distributed_rank() -> tuple[int, int]:
    """(global rank, world size) of this process from SLURM's or torchrun's environment."""
    for rank_var, size_var in (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE")):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def run_ddp_worker(spec: SweepSpec, url: str, study_name: str, *, max_trials: int | None = None,
                   n_trials: int | None = None) -> int:
    """A worker whose trials run Lightning DDP over the ranks of this SLURM step (one process per GPU).

    Rank 0 claims trials and broadcasts each run (trial number and config), then "stop" at the end.
    Every rank calls ``run_experiment`` with the same trial and config, so Lightning's
    DDP (``SLURMEnvironment``) spans them and, where the spec names a pruner, the pruning callback decides on rank 0
    and broadcasts (without one, rank 0 sends no trial and no rank builds that callback: it broadcasts every epoch).
    The process group is created here first, so Lightning reuses it.
    """
    import torch.distributed as dist

    from ablations.config import ExperimentConfig
    from ablations.training.run import run_config

    rank, world = distributed_rank()
    if world == 1:
        return run_worker(spec, url, study_name, max_trials=max_trials, n_trials=n_trials)
    if not dist.is_initialized():
        # Followers wait in a broadcast while rank 0 waits for other workers' trials: allow a long wait.
        dist.init_process_group("nccl" if _cuda() else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(hours=24))

    def bcast(obj: Any = None) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    if rank == 0:
        return run_worker(spec, url, study_name, max_trials=max_trials, n_trials=n_trials,
                          on_config=lambda trial, cfg, base: bcast(("run", trial.number if trial else None,
                                                                    cfg.to_dict(), base.to_dict())),
                          on_stop=lambda: bcast(("stop", None, None, None)))
    study = load_study(spec, url, study_name)
    ran = 0
    while True:
        what, number, cfg_dict, base_dict = bcast()
        if what == "stop":
            break
        trial = None
        if number is not None:  # the same trial as rank 0, so the pruning callback can broadcast
            frozen = study.get_trials(deepcopy=False)[number]
            trial = optuna.Trial(study, frozen._trial_id)
        cfg, baseline = ExperimentConfig.from_dict(cfg_dict), ExperimentConfig.from_dict(base_dict)
        try:
            run_config(cfg, baseline, trial=trial, quiet=True)
        except Exception as exc:  # noqa: BLE001 - rank 0 records the failure; followers go on
            log.warning("rank %d: trial %s failed: %s", rank, number, exc)
        ran += 1
    return ran


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

