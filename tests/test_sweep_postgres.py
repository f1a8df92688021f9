"""Sweeps on a real PostgreSQL server started by the test (docs/DESIGN.md, Sweeps).

Three workers in parallel finish every grid arm exactly once; a worker killed with SIGKILL in the
middle of a trial loses nothing: its trial lease drops with it, so the next claim fails and re-queues
the trial at once (not after the heartbeat grace); SIGTERM to the sweep re-queues every running trial
and exits 143, and a rerun finishes every arm exactly once.
"""
from __future__ import annotations

import collections
import os
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

from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study, setup_study

# The tests' own bounds (a sweep's communicate, the SLURM wait) are longer than the default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


def write_spec(tmp_path: Path, name: str, reductions: list[int], seeds: int, epochs: int, interval: int = 60) -> Path:
    """A tiny grid (resnet20_cifar on 8x8 digits, two batches per epoch) so that a trial takes seconds."""
    spec = {
        "name": name,
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": reductions},
        "objectives": ["val/top1_best"],
        "budget": {"epochs": epochs},
        "seeds": seeds,
        "heartbeat": {"interval": interval, "grace_period": 3 * interval},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def cli():
    """Starts ``senet-ablate`` in its own process group; at the test's end, passed or not, any still running is
    killed with its group and its descendants (the workers ``--workers`` starts)."""
    started = []

    def start(*args: str, **kw) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        started.append(subprocess.Popen([sys.executable, "-m", "ablations.cli", *args], cwd=ROOT, env=env,
                                        start_new_session=True, **kw))
        return started[-1]

    yield start
    for proc in started:
        process_guard.stop(proc, signal.SIGKILL, timeout=5)


def complete_by_hash(study: optuna.Study) -> collections.Counter:
    return collections.Counter(t.user_attrs["config_hash"] for t in study.trials
                               if t.state == optuna.trial.TrialState.COMPLETE)


def test_three_workers_run_every_arm_exactly_once(pg, tmp_path, cli):
    url = pg.new_database("three")
    path = write_spec(tmp_path, "three", [4, 8], seeds=2, epochs=1)
    proc = cli("sweep", str(path), "--storage", url, "--workers", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    spec = load_spec(path)
    study = load_study(spec, url, "three")
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    assert len(expected) == 6
    assert complete_by_hash(study) == collections.Counter({h: 1 for h in expected})
    assert len(study.trials) == 6  # nothing queued twice, no stray sampler trials
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2  # the workers really shared the queue
    for t in study.trials:
        row = trial_rows(t.user_attrs)[0]
        assert row["status"] == "complete" and row["config_hash"] == t.user_attrs["config_hash"]
        assert Path(row["run_dir"], "result.json").is_file()
    # A second launch (a resumed sweep) queues nothing and runs nothing.
    again, queued = setup_study(spec, url, "three")
    assert queued == 0 and len(again.trials) == 6


def worker_pids(parent: subprocess.Popen) -> list[int]:
    """The local workers ``sweep --workers N`` spawned (children of the launching process)."""
    return [int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()]


def test_killed_and_interrupted_workers_lose_nothing_and_wait_for_no_heartbeat(pg, tmp_path, cli):
    # The default heartbeat (60 s, grace 180 s): a dead worker's trial must be retried long before the grace.
    url = pg.new_database("kill")
    path = write_spec(tmp_path, "kill", [4], seeds=2, epochs=2)
    spec = load_spec(path)
    proc = cli("sweep", str(path), "--storage", url, "--workers", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True)
    runs = tmp_path / "runs" / "kill"
    # The victim is a worker in the middle of training: the holder of a run folder with a checkpoint and no result
    # yet, held still (SIGSTOP) so its trial cannot finish while the test looks it up, however fast the machine.
    deadline, victim = time.monotonic() + 300, None
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no worker started a trial"
        for ckpt in runs.glob("*/checkpoints/last.ckpt"):
            run_dir = ckpt.parent.parent
            found = re.search(r'"pid": (\d+)', (run_dir / "run.lock").read_text()) if not (
                run_dir / "result.json").exists() and (run_dir / "run.lock").exists() else None
            if found is None or int(found[1]) not in worker_pids(proc):
                continue
            os.kill(int(found[1]), signal.SIGSTOP)
            if (run_dir / "result.json").exists():  # it finished just before the hold: take another
                os.kill(int(found[1]), signal.SIGCONT)
                continue
            victim = int(found[1])
            break
        time.sleep(0.05)
    study = load_study(spec, url, "kill")
    (killed,) = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING
                 and t.user_attrs.get("worker", "").endswith(f":{victim}")]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    while True:  # another worker retries the arm: lease dropped, no heartbeat wait
        retry = [t for t in study.get_trials(deepcopy=False) if killed.number in t.system_attrs.get("retry_history", ())
                 and t.state != optuna.trial.TrialState.WAITING]
        if retry:
            break
        assert time.monotonic() - killed_at < spec.grace_period / 3, "the killed worker's arm was not retried"
        time.sleep(0.2)
    retried_after = time.monotonic() - killed_at
    # Now stop the sweep as SLURM or a user would: SIGTERM to the launching process, passed on to its workers.
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    study = load_study(spec, url, "kill")
    states = collections.Counter(t.state for t in study.trials)
    assert states[optuna.trial.TrialState.RUNNING] == 0  # every claimed trial was returned to the queue
    # Only the killed worker's trial was taken for dead; the others were interrupted by SIGTERM.
    dead = [t.number for t in study.trials if "lease" in t.user_attrs.get("reason", "")]
    assert dead == [killed.number], [(t.number, t.state, t.user_attrs.get("reason")) for t in study.trials]
    retried = collections.Counter(t.system_attrs["retry_history"][-1] for t in study.trials
                                  if t.system_attrs.get("retry_history"))
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert retried == collections.Counter(failed)  # each failed trial re-queued exactly once
    again = cli("sweep", str(path), "--storage", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    study = load_study(spec, url, "kill")
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    assert complete_by_hash(study) == collections.Counter({h: 1 for h in expected})
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(study.trials) == len(expected) + len(failed)  # each failed trial has one retry; nothing else
    print(f"killed worker's arm retried after {retried_after:.1f} s (grace {spec.grace_period} s)")


HOLDER = """
import sys
from ablations.sweep.leases import Leases
leases = Leases(sys.argv[1]); leases.take(int(sys.argv[2])); print("held", flush=True); sys.stdin.read()
"""  # holds the lease until killed (or its stdin closes), however long the test takes


def test_a_lease_is_held_while_its_process_lives(pg):
    from ablations.sweep.leases import Leases

    url, other = pg.new_database("lease"), pg.new_database("lease_other")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, "7"], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert Leases(url).alive([7, 8]) == {7}
        assert Leases(other).alive([7]) == set()  # advisory locks belong to their database
        holder.kill()
        holder.wait()
        deadline = time.monotonic() + 10  # the server notices the closed connection
        while Leases(url).alive([7]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Leases(url).alive([7]) == set()
    finally:
        holder.kill()
        holder.wait()
