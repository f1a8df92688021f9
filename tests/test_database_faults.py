"""A sweep whose PostgreSQL server restarts or stalls under it: every arm completes exactly once.

Two local workers run a tiny grid (two trials each) with a one-second heartbeat and a three-second grace.
- Restarted (``pg_ctl restart -m fast``) while a trial trains: every connection is closed. Workers reconnect
  (bounded retries), take their trial's lease again at the next heartbeat, and nobody takes a trial whose lease
  the restart dropped for a dead worker's: no trial fails, the sweep ends with exit 0 and no traceback.
- Stalled (SIGSTOP of the whole server, longer than the grace period) while a trial trains, then the backends
  resumed while the postmaster stays stopped (new connections hang) until the workers are done and a while
  longer: every heartbeat is stale after the stall, but their leases are held, so no trial is failed; the
  summary, which needs a new connection, waits for the postmaster instead of ending in a traceback.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import process_guard
import pytest
import yaml
from cluster.postgres import PgServer, has_study

from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
GRACE_S = 3


@pytest.fixture(scope="module")
def pg():
    try:
        server = PgServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


def write_spec(tmp_path: Path, name: str) -> Path:
    spec = {
        "name": name,
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": [4]},
        "objectives": ["val/top1_best"],
        "budget": {"epochs": 3},
        "seeds": 2,
        "heartbeat": {"interval": 1, "grace_period": GRACE_S},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_sweep(path: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ablations.cli", "sweep", str(path), "--storage", url,
                             "--workers", "2"], cwd=ROOT, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_training(spec, url: str, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until a worker trains a trial (RUNNING, claimed, and its run folder has a first checkpoint)."""
    runs = Path(spec.base.output_dir) / name
    deadline = time.monotonic() + timeout
    while True:
        trials = load_study(spec, url, name).get_trials(deepcopy=False) if has_study(url, name) else []
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and "worker" in t.user_attrs]
        if running and any(runs.glob("*/checkpoints/*.ckpt")):
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no worker started training"
        time.sleep(0.2)


def workers_of(proc: subprocess.Popen) -> list[int]:
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        process_guard.stop(proc, signal.SIGKILL, timeout=5)
    assert proc.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    return err


def check_every_arm_once(spec, url: str, name: str) -> None:
    study = load_study(spec, url, name)
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    states = collections.Counter(t.state for t in study.trials)
    done = collections.Counter(t.user_attrs["config_hash"] for t in study.trials
                               if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == collections.Counter({h: 1 for h in expected}), states
    # Nothing failed (no lease taken for dead, no heartbeat taken for stale, no retry burned), nothing queued twice.
    assert states == {optuna.trial.TrialState.COMPLETE: len(expected)}, \
        [(t.number, t.state, t.user_attrs.get("reason")) for t in study.trials]
    for t in study.trials:
        row = trial_rows(t.user_attrs)[0]
        assert row["status"] == "complete" and Path(row["run_dir"], "result.json").is_file()


def test_postgres_restarted_mid_sweep(pg, tmp_path):
    url, path = pg.new_database("restart"), write_spec(tmp_path, "restart")
    spec = load_spec(path)
    proc = start_sweep(path, url)
    wait_training(spec, url, "restart", proc)
    pg.restart()
    err = finish(proc)
    assert "database connection lost" in err  # the workers did see the restart
    check_every_arm_once(spec, url, "restart")


def test_postgres_stalled_longer_than_the_grace_period(pg, tmp_path):
    url, path = pg.new_database("stall"), write_spec(tmp_path, "stall")
    spec = load_spec(path)
    proc = start_sweep(path, url)
    wait_training(spec, url, "stall", proc)
    pg.pause(group=True)
    try:
        time.sleep(GRACE_S + 3)  # the fault itself: every heartbeat goes stale
        pg.resume(postmaster=False)  # running queries go on; new connections still hang
        deadline = time.monotonic() + 120
        while workers_of(proc) and time.monotonic() < deadline:  # the workers finish on their connections
            time.sleep(0.2)
        time.sleep(GRACE_S + 3)  # the summary's connection waits longer than libpq's connect timeout
    finally:
        pg.resume()
    finish(proc)
    check_every_arm_once(spec, url, "stall")
