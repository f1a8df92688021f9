"""Sweeps never record a run as something it is not (issue 9): interrupts, dead workers, thread counts.

An interrupted trial (Ctrl-C, SIGTERM, SIGUSR1) is failed, marked ``interrupted`` and re-queued at once,
and the worker exits with 128 + signal; a trial whose worker died (its lease dropped) is re-queued by
the next claim, without waiting for the heartbeat grace period; the sweep command exits non-zero while
an arm is not complete. The fast tests drive the worker with a stand-in for ``run_experiment``; the
slow ones send real signals to a real ``senet-ablate sweep`` on SQLite (PostgreSQL: test_sweep_postgres).
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

from ablations.sweep.leases import Leases, Requeue
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study, setup_study, unfinished
from ablations.sweep.worker import run_worker
from ablations.training import interrupts
from ablations.training.run import Result
from ablations.training.checkpoints import resume_point

ROOT = Path(__file__).resolve().parent.parent
State = optuna.trial.TrialState
TINY = {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
        "data": {"name": "digits", "image_size": 8, "batch_size": 32},
        "train": {"recipe": "quick", "limit_train_batches": 3, "limit_val_batches": 1},
        "wandb": {"mode": "disabled"}}


def write_spec(tmp_path: Path, name: str, epochs: int = 1, **extra) -> Path:
    spec = {"name": name, "base": {**TINY, "output_dir": str(tmp_path / "runs")}, "baseline": True,
            "space": {"model.se.reduction": [4]}, "budget": {"epochs": epochs}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def fake_result(cfg, status: str = "complete") -> Result:
    return Result(config=cfg.to_dict(), config_hash=cfg.hash(), seed=cfg.seed, git_commit=None, params=1, gmacs=0.1,
                  metrics={"val/top1_best": 0.5, "val/top1": 0.5}, epochs=cfg.train.epochs, wall_time_s=0.0,
                  status=status, reason=None, run_dir="x")


def complete_once(study: optuna.Study, spec) -> bool:
    done = collections.Counter(t.user_attrs["config_hash"] for t in study.trials if t.state == State.COMPLETE)
    return done == collections.Counter({make_config(spec, c).hash(): 1 for c in spec.grid()})


# ---- the worker with a stand-in for run_experiment (seconds) ---- #

@pytest.mark.parametrize("lightning_exit", [False, True], ids=["RunInterrupted", "SystemExit"])
def test_a_signal_requeues_the_trial_at_once_and_a_rerun_finishes_it(tmp_path, lightning_exit):
    spec = load_spec(write_spec(tmp_path, "sig"))
    url = f"sqlite:///{tmp_path / 'sig.db'}"
    setup_study(spec, url, "sig")
    calls = []

    def runner(cfg, **_):
        calls.append(cfg.hash())
        if len(calls) == 2:  # the second arm: SIGTERM arrives mid-run
            if lightning_exit:  # Lightning turns the interrupt into sys.exit(1); Optuna then leaves the trial RUNNING
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                except KeyboardInterrupt:
                    raise SystemExit(1) from None
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return fake_result(cfg)

    with pytest.raises(interrupts.RunInterrupted) as stop:
        run_worker(spec, url, "sig", runner=runner)
    assert stop.value.exit_code == 128 + signal.SIGTERM
    study = load_study(spec, url, "sig")
    first, stopped, retry = study.trials
    assert first.state == State.COMPLETE and stopped.state == State.FAIL
    assert stopped.user_attrs["status"] == "interrupted" and "SIGTERM" in stopped.user_attrs["reason"]
    assert retry.state == State.WAITING and retry.system_attrs["retry_history"] == [stopped.number]
    assert retry.user_attrs == {k: stopped.user_attrs[k] for k in ("config_hash", "arm_hash", "seed")}  # no stale results
    assert [line.split(":")[1].strip() for line in unfinished(study, spec)] == ["waiting (re-queued after"]
    assert run_worker(spec, url, "sig", runner=runner) == 1  # no heartbeat wait: the retry is waiting
    study = load_study(spec, url, "sig")
    assert complete_once(study, spec) and unfinished(study, spec) == [] and calls[1] == calls[2]


class WaitClock:
    """Stands in for the worker's ``time``: records each wait (``time.sleep``), and with ``signal`` set sends it to
    this process from inside the wait, where the worker is known to be waiting (no timer racing the test)."""

    def __init__(self, signum: int | None = None) -> None:
        self.signum, self.waits = signum, []

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.signum is not None:
            os.kill(os.getpid(), self.signum)
        time.sleep(seconds)


def test_a_signal_while_waiting_stops_the_worker_and_a_dead_lease_is_retried_at_once(tmp_path, monkeypatch):
    from ablations.sweep import worker

    spec = load_spec(write_spec(tmp_path, "wait"))
    url = f"sqlite:///{tmp_path / 'wait.db'}"
    study, _ = setup_study(spec, url, "wait")
    other = Leases(url)  # "another worker" claims the first cell and holds its lease
    claimed = study.ask()
    other.take(claimed._trial_id)
    try:
        monkeypatch.setattr(worker, "time", clock := WaitClock(signal.SIGUSR1))
        with pytest.raises(interrupts.RunInterrupted) as stop:
            run_worker(spec, url, "wait", runner=lambda cfg, **_: fake_result(cfg))
        assert stop.value.exit_code == 128 + signal.SIGUSR1
        assert len(clock.waits) == 1  # it ran the free cell, then waited for the other's, and the signal came
        assert [t.state for t in load_study(spec, url, "wait").trials] == [State.RUNNING, State.COMPLETE]
    finally:
        other.close()  # the other worker dies: its trial is retried by the next claim (the study lock was released)
    monkeypatch.setattr(worker, "time", clock := WaitClock())
    assert run_worker(spec, url, "wait", runner=lambda cfg, **_: fake_result(cfg)) == 1
    assert clock.waits == []  # taken for dead from its lease: the heartbeat's grace was never waited for
    study = load_study(spec, url, "wait")
    assert study.trials[0].state == State.FAIL and "trial lease dropped" in study.trials[0].user_attrs["reason"]
    assert complete_once(study, spec)


def test_requeue_keeps_the_arm_and_does_not_count_interrupts_against_max_retry(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    study.enqueue_trial({"x": 1}, user_attrs={"config_hash": "h", "arm_hash": "a"})
    trial = study.ask({"x": optuna.distributions.IntDistribution(0, 2)})
    trial.set_user_attr("results", [{"status": "interrupted"}])
    study.tell(trial, state=State.FAIL)
    for n in range(3):  # interrupted three times: always re-queued, with max_retry 1
        Requeue(1, interrupt=True)(study, study.trials[-1])
        retry = study.trials[-1]
        assert retry.user_attrs == {"config_hash": "h", "arm_hash": "a"} and retry.params == {"x": 1}
        study.tell(study.ask(), state=State.FAIL)
    Requeue(1)(study, study.trials[-1])  # then one real failure: still within max_retry
    study.tell(study.ask(), state=State.FAIL)
    Requeue(1)(study, study.trials[-1])  # a second one: not
    assert len(study.trials) == 5 and study.trials[-1].state == State.FAIL
    assert study.trials[-1].system_attrs["retry_history"] == [0, 1, 2, 3]


# ---- leases on SQLite: a real process holds one and dies ---- #

HOLDER = """
import sys
from ablations.sweep.leases import Leases
leases = Leases(sys.argv[1]); leases.take(int(sys.argv[2])); print("held", flush=True); sys.stdin.read()
"""  # holds the lease until killed (or its stdin closes), however long the test takes


def test_a_lease_dies_with_its_process_and_the_trial_is_requeued(tmp_path):
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    study = optuna.create_study(storage=url, study_name="lease")
    study.enqueue_trial({"x": 1}, user_attrs={"config_hash": "h", "worker": "elsewhere:1"})
    trial = study.ask({"x": optuna.distributions.IntDistribution(0, 2)})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(trial._trial_id)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        leases = Leases(url)
        assert leases.alive([trial._trial_id]) == {trial._trial_id}
        assert leases.fail_dead(study, Requeue(3)) == []  # the owner lives: left alone
        holder.kill()
        holder.wait()
        assert leases.alive([trial._trial_id]) == set()
        assert leases.fail_dead(study, Requeue(3)) == [trial.number]
        failed, retry = study.trials
        assert failed.state == State.FAIL and "elsewhere:1" in failed.user_attrs["reason"]
        assert retry.state == State.WAITING and retry.system_attrs["retry_history"] == [failed.number]
        assert leases.fail_dead(study, Requeue(3)) == []  # once only
        leases.close()
    finally:
        holder.kill()
        holder.wait()


def test_a_study_refuses_runs_of_another_thread_count(tmp_path):
    path = write_spec(tmp_path, "threads")
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    spec = load_spec(path)
    assert spec.base.train.threads == 1  # pinned: --workers never changes a number
    setup_study(spec, url, "threads")
    with pytest.raises(ValueError, match=r"holds runs made with train.threads=1, but this sweep runs "
                                         r"train.threads=2; .* or --set train.threads=1 to continue it"):
        setup_study(load_spec(path, overrides={"train.threads": 2}), url, "threads")
    with pytest.raises(ValueError, match="train.threads=2"):
        run_worker(load_spec(path, overrides={"train.threads": 2}), url, "threads")


# ---- real signals to a real `senet-ablate sweep` on SQLite ---- #

@pytest.fixture
def sweep():
    """Starts ``senet-ablate sweep`` in its own process group; whatever still runs at the test's end is killed."""
    started = []

    def start(*args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started.append(subprocess.Popen([sys.executable, "-m", "ablations.cli", "sweep", *args], cwd=ROOT, env=env,
                                        text=True, start_new_session=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for proc in started:
        process_guard.stop(proc, signal.SIGKILL, timeout=5)


def wait_for(what, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (found := what()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
    return found


SWEEP_EPOCHS = 10


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_sqlite_sweep_exits_nonzero_and_a_rerun_finishes_every_arm_once(tmp_path, signum, sweep):
    # The sweep is held (SIGSTOP) at the first checkpoint it is seen to write, and the signal sent while it stands
    # still; that checkpoint must leave at least two epochs to train, so the signal lands in training, never after
    # it. An epoch of 3 batches takes a fraction of a second: 10 of them leave the poll seconds to see the first
    # checkpoint (with 4, a loaded machine can let the run write its third before a poll sees one).
    path = write_spec(tmp_path, "ctrlc", epochs=SWEEP_EPOCHS)
    url = f"sqlite:///{tmp_path / 'ctrlc.db'}"
    proc = sweep(str(path), "--storage", url)
    ckpt = wait_for(lambda: list((tmp_path / "runs" / "ctrlc").glob("*/checkpoints/last.ckpt")), 300, proc, 0.02)[0]
    with process_guard.stopped(proc.pid, group=True):  # the whole process group, as Ctrl-C reaches it
        assert resume_point(ckpt)["epoch"] <= SWEEP_EPOCHS - 3, "held too late: the run could end before the signal"
        os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert err.strip().splitlines()[-1].endswith(f"interrupted by {signal.Signals(signum).name}; rerun the same "
                                                 "command to resume")
    spec = load_spec(path)
    stopped, other, retry = load_study(spec, url, "ctrlc").trials
    assert stopped.state == State.FAIL and stopped.user_attrs["status"] == "interrupted"
    assert signal.Signals(signum).name in stopped.user_attrs["reason"]
    assert other.state == State.WAITING and retry.state == State.WAITING
    # Re-queued by the interrupted worker itself, before it exited: a rerun claims it without any heartbeat wait.
    assert retry.system_attrs["retry_history"] == [stopped.number] and stopped.system_attrs.get("interrupts") is None
    assert retry.system_attrs["interrupts"] == 1
    run = Result.load(ckpt.parent.parent / "result.json")
    assert run.status == "interrupted" and run.epochs < SWEEP_EPOCHS
    again = sweep(str(path), "--storage", url)
    _, err = again.communicate(timeout=420)
    assert again.returncode == 0, err[-3000:]
    study = load_study(spec, url, "ctrlc")
    assert complete_once(study, spec) and len(study.trials) == 3 and "not complete" not in err
    assert study.trials[2].state == State.COMPLETE  # the retry itself ran (nothing failed it for a stale heartbeat)
    for t in study.trials:
        if t.state == State.COMPLETE:
            assert t.user_attrs["status"] == "complete" and t.user_attrs["epochs"] == SWEEP_EPOCHS
