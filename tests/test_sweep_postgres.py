"""Sweeps on a real PostgreSQL server started by the test (DESIGN: Sweeps; anchors §D.1, §E.3/6/7).

Three workers in parallel finish every grid arm exactly once; a worker killed with SIGKILL in the
middle of a trial loses nothing: its trial is failed by the heartbeat check and re-run by another worker.
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
from fixtures_servers import postgres_server

from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study, setup_study

pytestmark = pytest.mark.slow
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
        row = t.user_attrs["result"]
        assert row["status"] == "complete" and row["config_hash"] == t.user_attrs["config_hash"]
        assert Path(row["run_dir"], "result.json").is_file()
    # A second launch (a resumed sweep) queues nothing and runs nothing.
    again, queued = setup_study(spec, url, "three")
    assert queued == 0 and len(again.trials) == 6


def test_killed_worker_trial_is_retried_and_nothing_is_lost(pg, tmp_path, cli):
    url = pg.new_database("kill")
    path = write_spec(tmp_path, "kill", [4], seeds=2, epochs=4, interval=1)
    spec = load_spec(path)
    setup_study(spec, url, "kill")
    victim = cli("sweep", str(path), "--storage", url, "--worker-only", stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
    # Wait until the victim is inside a trial (its run folder exists: training has started), then kill it.
    study = load_study(spec, url, "kill")
    deadline = time.monotonic() + 300
    while True:
        running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING
                   and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        if running and any((tmp_path / "runs" / "kill").glob("*/config.yaml")):
            break
        assert victim.poll() is None and time.monotonic() < deadline, "the victim never started a trial"
        time.sleep(0.2)
    killed = running[0].number
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    survivor = cli("sweep", str(path), "--storage", url, "--worker-only", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    _, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err[-3000:]
    study = load_study(spec, url, "kill")
    trials = study.trials
    assert trials[killed].state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if killed in t.system_attrs.get("retry_history", ())]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].user_attrs["config_hash"] == trials[killed].user_attrs["config_hash"]
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    assert complete_by_hash(study) == collections.Counter({h: 1 for h in expected})
    assert len(trials) == len(expected) + 1  # the killed trial and its one retry; nothing else
