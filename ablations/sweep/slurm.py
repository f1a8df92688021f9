"""A sweep as a SLURM job array (docs/DESIGN.md, Sweeps), submitted through submitit.

Each array element is one Optuna worker on the shared (PostgreSQL) study, so the scheduler balances
the load and ``--array-parallelism`` caps how many run at once. A trial with G > 1 GPUs runs as G
SLURM tasks of one element (``ntasks-per-node = G = train.devices``, as Lightning's ``SLURMEnvironment``
requires), on ``train.num_nodes`` nodes (``--nodes-per-trial``: the element spans them, rank 0 on the first); each element gets its own ``MASTER_PORT``, because Lightning's default (15000 + the last
four digits of the job id) collides when two elements share a node. The tasks of an element are
``train.devices`` (set by ``--gpus-per-trial``, or the spec's own, e.g. CPU DDP with ``devices: 2``).

submitit pickles the function and its arguments into the job folder, so the storage URL (which may hold a
password) is not among them: sbatch hands the job the submitting environment, ``storage.STORAGE_ENV`` included,
and each task reads the URL from there.

A signal (the time limit's SIGUSR2 warning, SIGTERM) is the worker's from the element's first line, not only once
it trains: submitit's own SIGUSR2 handler would end a worker that is still starting without a word. The worker
re-queues its trial and the element ends with ``ElementInterrupted``, an ``Exception`` submitit records as the
element's outcome: a ``KeyboardInterrupt`` it does not catch, and a cluster without accounting (``sacct``) would
then never tell ``sweep --wait`` that the element ended.

``wait_for`` is written here because submitit's own wait learns that an element ended without a result (SIGKILLed,
its node lost) only from ``sacct``: without accounting it waits forever. It also asks ``squeue``, which every
cluster has: an element that no longer appears there and left no result within a grace period has ended.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ablations.sweep.spec import SweepSpec, with_overrides
from ablations.training import interrupts
from senet.tree import check_int


@dataclass(frozen=True)
class SlurmOptions:
    """What ``senet-ablate sweep --slurm`` asks of the cluster (per array element = per worker)."""

    array_size: int = 2
    array_parallelism: int = 2
    partition: str | None = None
    gpus_per_trial: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    folder: str = "runs/slurm/%A_%a"
    signal_delay_s: int = 90

    def __post_init__(self) -> None:
        for name in ("array_size", "array_parallelism", "cpus_per_task", "timeout_min"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name))
        check_int("--gpus-per-trial", self.gpus_per_trial, 0)


def master_port() -> int:
    """A rendezvous port for this array element's DDP trials, distinct across concurrently running elements."""
    job = int(os.environ.get("SLURM_JOB_ID", "0"))
    return 20000 + job % 20000


def trial_overrides(gpus: int, nodes: int = 1) -> dict:
    """Base-config overrides that make each trial use ``gpus`` GPUs on each of ``nodes`` nodes (DDP when several).

    Without GPUs the spec's accelerator and ``train.devices`` stay (CPU DDP: ``devices`` processes per node).
    """
    over: dict = {}
    if gpus:
        over = {"train.accelerator": "gpu", "train.devices": gpus, "train.num_nodes": 1,
                "train.strategy": "ddp" if gpus > 1 else "auto"}
    if nodes > 1:
        over.update({"train.num_nodes": nodes, "train.strategy": "ddp"})
    return over


class ElementInterrupted(Exception):
    """An array element stopped by a signal; its trial is back in the queue (the message names the signal)."""


def array_worker(spec: SweepSpec, study_name: str, n_trials: int | None = None) -> int:
    """The function every array element (and each of its tasks) runs: one Optuna worker, DDP-aware."""
    try:
        with interrupts.guard():
            return _array_worker(spec, study_name, n_trials)
    except interrupts.RunInterrupted as stop:
        raise ElementInterrupted(f"{stop}; its trial, if it had claimed one, is queued again") from None


def _array_worker(spec: SweepSpec, study_name: str, n_trials: int | None) -> int:
    from ablations.sweep.storage import STORAGE_ENV, storage_from_env

    url = storage_from_env()
    if url is None:
        raise RuntimeError(f"${STORAGE_ENV} is not set in this SLURM job: the sweep passes the storage URL in the "
                           "environment, which sbatch exports unless --export or $SBATCH_EXPORT says otherwise")
    # Set, not defaulted: sbatch exports the submitting shell's environment, so a MASTER_PORT found here may be
    # the submitter's, the same in every element.
    os.environ["MASTER_PORT"] = str(master_port())
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        env = SLURMEnvironment()
        os.environ.setdefault("MASTER_ADDR", env.main_address)
    from ablations.sweep.worker import run_ddp_worker

    return run_ddp_worker(spec, url, study_name, n_trials=n_trials)


def submit(spec: SweepSpec, url: str, study_name: str, options: SlurmOptions, n_trials: int | None = None) -> list:
    """Submit ``options.array_size`` workers as one job array; returns the submitit jobs.

    ``spec`` should already be ``with_gpus(spec, options.gpus_per_trial)``, as set up in the study.
    """
    import submitit

    from ablations.sweep.storage import storage_in_env

    folder = Path(options.folder.replace("%A_%a", "%j").replace("%A", "%j"))
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    gpus = options.gpus_per_trial
    # Lightning's SLURMEnvironment wants one task per device (ntasks-per-node = train.devices) on each of the
    # trial's nodes (nodes = train.num_nodes); its rank 0 (the first node) is the worker.
    params = {"timeout_min": options.timeout_min, "nodes": spec.base.train.num_nodes,
              "tasks_per_node": spec.base.train.devices,
              "cpus_per_task": options.cpus_per_task, "slurm_array_parallelism": options.array_parallelism,
              "name": f"senet-{study_name}", "slurm_signal_delay_s": options.signal_delay_s}
    if gpus:
        params["gpus_per_node"] = gpus
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    executor.update_parameters(**params)
    pickled = dataclasses.replace(spec, storage=None)  # the spec file's own URL stays out of the job folder
    with storage_in_env(url):  # sbatch, run inside, copies the environment into the job
        return executor.map_array(array_worker, [pickled] * options.array_size, [study_name] * options.array_size,
                                  [n_trials] * options.array_size)


def with_gpus(spec: SweepSpec, gpus: int, nodes: int = 1) -> SweepSpec:
    """The spec whose trials use ``gpus`` GPUs on each of ``nodes`` nodes (apply before the study is set up: it
    changes config hashes)."""
    over = trial_overrides(gpus, nodes)
    return with_overrides(spec, over) if over else spec


def wait_for(jobs: Sequence, poll_s: float = 2.0, grace_s: float = 30.0) -> Iterator[tuple]:
    """Yield ``(job, None)`` for each element that ended with a result (``job.results()`` then returns or raises
    at once), and ``(job, why)`` for one that left the queue without a result for ``grace_s`` (submitit writes
    the result just before the element ends, so a few seconds would do; a slow shared folder needs more)."""
    pending, gone_since = list(jobs), {}
    while pending:
        for job in list(pending):
            if job.done():
                pending.remove(job)
                yield job, None
            elif _queued(job.job_id):
                gone_since.pop(job.job_id, None)
            elif time.monotonic() - gone_since.setdefault(job.job_id, time.monotonic()) > grace_s:
                pending.remove(job)
                yield job, "it ended without a result (killed, or its node was lost)"
        if pending:
            time.sleep(poll_s)


def _queued(job_id: str) -> bool:
    """Whether SLURM still lists the element (pending, running, completing). A job it has forgotten (``MinJobAge``
    after its end) is "Invalid job id"; any other unanswered ``squeue`` counts as listed: the controller may be
    restarting, and it alone can say the element is gone."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--jobs", job_id, "--format", "%i"],
                             check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if out.returncode != 0:
        return "invalid job id" not in out.stderr.lower()
    return bool(out.stdout.strip())
