"""A sweep as a SLURM job array on a real single-node SLURM (slurmctld + slurmd + munge) and PostgreSQL.

Both servers are started by the test; ``senet-ablate sweep --slurm`` submits a 2-element array through
submitit, each element an Optuna worker on the shared study, and ``--wait`` returns when both are done. An element
that reaches its time limit leaves its arm interrupted and queued, and the same command submitted again resumes it.
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import process_guard
import pytest
import yaml
from fixtures_servers import postgres_server
from fixtures_slurm import slurm_cluster

from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study

# The tests' own bounds (a sweep's communicate, the SLURM wait) are longer than the default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def servers():
    with postgres_server() as pg, slurm_cluster(cpus=2) as slurm:
        yield pg, slurm


def sweep_on_slurm(tmp_path: Path, servers, spec: dict, *extra: str) -> tuple[str, subprocess.CompletedProcess]:
    pg, slurm = servers
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = pg.new_database(spec["name"])
    env = {**slurm.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = process_guard.run(
        [sys.executable, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--storage", url, "--cpus-per-task", "1",
         "--time-min", "20", "--slurm-folder", str(tmp_path / "slurm" / "%j"), "--wait", *extra],
        cwd=ROOT, env=env, timeout=1200)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "slurm").rglob("*.err")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    return url, proc


def results(tmp_path: Path) -> list:
    """What each SLURM task's function returned (submitit's result pickles: ("success", value))."""
    out = []
    for p in sorted((tmp_path / "slurm").rglob("*_result.pkl")):
        with p.open("rb") as fh:
            status, value = pickle.load(fh)
        assert status == "success", value
        out.append(value)
    return out


def test_job_array_of_two_workers_finishes_the_study(tmp_path, servers):
    spec = {
        "name": "slurm",
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 64},
                 "train": {"recipe": "quick", "epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": [4, 8]},
        "seeds": 2,
        "heartbeat": {"interval": 5},
    }
    url, proc = sweep_on_slurm(tmp_path, servers, spec, "--array-size", "2", "--array-parallelism", "2")
    assert "submitted job array" in proc.stderr
    spec_ = load_spec(tmp_path / "slurm.yaml")
    study = load_study(spec_, url, "slurm")
    expected = {make_config(spec_, c).hash() for c in spec_.grid()}
    done = collections.Counter(t.user_attrs["config_hash"] for t in study.trials
                               if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == collections.Counter({h: 1 for h in expected}) and len(study.trials) == len(expected)
    # Both array elements ran as SLURM jobs, as Optuna workers, and between them ran every trial.
    ran = results(tmp_path)
    assert len(ran) == 2 and sum(ran) == len(expected)
    assert os.environ.get("SLURM_CONF") != str(servers[1].conf)  # the test left the caller's environment alone


def test_ddp_trials_span_the_tasks_of_an_array_element(tmp_path, servers):
    # CPU DDP over the element's two SLURM tasks (Lightning's SLURMEnvironment): rank 0 claims the trials,
    # rank 1 follows each one.
    spec = {
        "name": "ddp",
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                           "accelerator": "cpu", "devices": 2, "strategy": "ddp"},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": [4]},
        "heartbeat": {"interval": 5},
    }
    url, _ = sweep_on_slurm(tmp_path, servers, spec, "--array-size", "1")
    spec_ = load_spec(tmp_path / "ddp.yaml")
    study = load_study(spec_, url, "ddp")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(trial_rows(t.user_attrs)[0]["config"]["train"]["devices"] == 2 for t in study.trials)
    assert results(tmp_path) == [2, 2]  # task 0 ran both trials, task 1 followed both


def _pending(pid: int) -> set[int]:
    """The signals waiting for a (stopped) process, from its /proc status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it has ended
        return set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    bits = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return {n for n in range(1, 65) if bits >> (n - 1) & 1}


def _one_element_sweep(tmp_path: Path, servers, name: str) -> tuple[Path, str, dict, list[str]]:
    """A one-arm, one-element sweep of three short epochs: its spec path, database, environment and command."""
    pg, slurm = servers
    spec = {
        "name": name,
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "epochs": 3, "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": False,
        "space": {"model.se.reduction": [4]},
        "heartbeat": {"interval": 5},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = pg.new_database(name)
    env = {**slurm.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--storage", url, "--cpus-per-task",
           "1", "--array-size", "1", "--slurm-folder", str(tmp_path / "slurm" / "%j"), "--wait"]
    return path, url, env, cmd


def _worker_at_first_checkpoint(proc: subprocess.Popen, runs: Path, deadline: float) -> tuple[Path, int]:
    """The run folder and the worker's pid (from the run's lock) once the trial has written ``last.ckpt``."""
    while not list(runs.rglob("last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.1)
    (ckpt,) = runs.rglob("last.ckpt")
    run_dir = ckpt.parent.parent
    return run_dir, int(re.search(r'"pid": (\d+)', (run_dir / "run.lock").read_text())[1])


def test_the_time_limit_warning_interrupts_the_trial_and_a_resubmission_resumes_it(tmp_path, servers):
    # One element with a three-minute limit: submitit asks for SIGUSR2 90 s before it (SLURM may send it up to 60 s
    # early). The worker is held still (SIGSTOP) once its trial has written the first epoch's checkpoint, so the
    # trial cannot finish first however fast the machine is, until SLURM's SIGUSR2 comes; then it must record the run
    # as interrupted, re-queue its trial and end its element, long before the limit. The same command submitted
    # again resumes the arm from its checkpoint.
    path, url, env, cmd = _one_element_sweep(tmp_path, servers, "timelimit")
    first = subprocess.Popen([*cmd, "--time-min", "3"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        run_dir, worker = _worker_at_first_checkpoint(first, tmp_path / "runs", deadline)
        os.kill(worker, signal.SIGSTOP)
        # SLURM continues a stopped task when it signals it (SIGCONT first, as scancel does); were the warning only
        # queued, it is let go here once SIGUSR2 is pending.
        while first.poll() is None and Path(f"/proc/{worker}").exists():
            if signal.SIGUSR2 in _pending(worker):
                os.kill(worker, signal.SIGCONT)
            assert time.monotonic() < deadline, "SLURM sent no SIGUSR2 before the time limit"
            time.sleep(0.5)
        _, err = first.communicate(timeout=300)
    finally:
        process_guard.stop(first, signal.SIGKILL, timeout=5)
    cut = json.loads((run_dir / "result.json").read_text())
    assert cut["status"] == "interrupted" and "SIGUSR2" in cut["reason"] and cut["epochs"] >= 1, cut
    assert "Traceback" not in err, err[-3000:]
    assert first.returncode == 1 and "did not finish" in err and "not complete: 1 arm" in err, err[-3000:]
    study = load_study(load_spec(path), url, "timelimit")
    states = collections.Counter(t.state.name for t in study.trials)
    assert states == {"FAIL": 1, "WAITING": 1}, states  # re-queued at once, as an interrupt (no retry spent)

    again = process_guard.run([*cmd, "--time-min", "20"], cwd=ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    done = json.loads((run_dir / "result.json").read_text())
    assert done["status"] == "complete" and done["epochs"] == 3 and done["attempts"] == 2
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert attempts[1]["resumed_from_epoch"] == cut["epochs"]  # resumed from the checkpoint, not from scratch


def test_wait_ends_with_one_line_when_an_element_is_killed_on_a_cluster_without_accounting(tmp_path, servers):
    # The test cluster keeps no accounting (AccountingStorageType=none: sacct answers nothing), like many small
    # clusters. An element whose worker is SIGKILLed writes no result; submitit alone would wait for it forever.
    # ``--wait`` must end, with one line for the element and the summary, once SLURM no longer lists it.
    _, _, env, cmd = _one_element_sweep(tmp_path, servers, "killed")
    proc = subprocess.Popen([*cmd, "--time-min", "20"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, worker = _worker_at_first_checkpoint(proc, tmp_path / "runs", time.monotonic() + 300)
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)  # the grace period (30 s) and a few polls, not forever
    finally:
        process_guard.stop(proc, signal.SIGKILL, timeout=5)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [ln for ln in err.splitlines() if "did not finish" in ln]
    assert "ended without a result" in line and "its log:" in line, line
    assert "not complete: 1 arm" in err, err[-3000:]
