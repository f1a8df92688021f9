"""What the README and the cluster page promise of ``senet-ablate sweep`` beyond a clean run: failed arms are final
(the sweep exits 1 and lists them; ``--retry-failed`` runs them again) while ``train`` retries a failed run, the
heartbeat fallback re-queues a trial whose worker lost the database, ``--dry-run`` lists the arms that run, grid
cells run seed-major, and each SLURM array element has its own ``MASTER_PORT``."""
from __future__ import annotations

import datetime
import json
import os
import sqlite3
import sys
from pathlib import Path

import optuna
import process_guard
import pytest
import yaml

from ablations.naming import run_name
from ablations.sweep.leases import Leases
from ablations.sweep.spec import load_spec
from ablations.sweep.study import load_study, setup_study
from ablations.sweep.worker import run_worker

ROOT = Path(__file__).resolve().parent.parent
State = optuna.trial.TrialState
TINY = {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
        "data": {"name": "digits", "image_size": 8, "batch_size": 64},
        "train": {"recipe": "quick", "epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1},
        "wandb": {"mode": "disabled"}}
# SGD at this rate turns the loss non-finite at the second step: a failure of the arm, the same on every run.
NAN_LR = 1e30


def write(tmp_path: Path, **spec) -> Path:
    spec.setdefault("base", {**TINY, "output_dir": str(tmp_path / "runs")})
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str, timeout: float = 300):
    """``senet-ablate ARGS`` in a child process (its own process group, killed if it outlives ``timeout``)."""
    return process_guard.run([sys.executable, "-m", "ablations.cli", *args], timeout=timeout, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"})


def attempts(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "attempts.json").read_text())


def runs_by_lr(root: Path) -> dict[float, Path]:
    """Each run folder under ``root`` by its ``train.lr``, from its ``result.json``."""
    out = {}
    for result in root.glob("*/result.json"):
        out[json.loads(result.read_text())["config"]["train"]["lr"]] = result.parent
    return out


@pytest.mark.slow
def test_a_failed_arm_is_final_until_retry_failed(tmp_path):
    """Bugs caught: exit 0 with a failed arm; the failed arm missing from the list; a plain rerun training it
    again (failed treated as resumable); ``--retry-failed`` not queueing it; a complete arm retrained."""
    path = write(tmp_path, name="final", baseline=False, space={"train.lr": [0.1, NAN_LR]})
    url = f"sqlite:///{tmp_path / 'final.db'}"
    spec = load_spec(path)

    first = cli("sweep", str(path), "--storage", url)
    assert first.returncode == 1, first.stderr[-3000:]
    runs = runs_by_lr(tmp_path / "runs" / "final")
    good, bad = runs[0.1].name, runs[NAN_LR].name
    listed = first.stderr.split("not complete: 1 arm(s):\n")[1].splitlines()
    assert listed[0].startswith(f"  {bad}: failed: non-finite loss"), first.stderr[-3000:]
    assert listed[1] == "rerun the same command to resume (--retry-failed re-queues failed arms)"
    assert good + ":" not in first.stderr
    before = [(t.number, t.state, t.datetime_complete) for t in load_study(spec, url, "final").trials]
    assert sorted(s for _, s, _ in before) == sorted([State.COMPLETE, State.FAIL])

    # The same command again: nothing is queued or trained, the failed arm is listed again, the exit is 1 again.
    again = cli("sweep", str(path), "--storage", url)
    assert again.returncode == 1 and "0 arm x seed cells queued" in again.stderr, again.stderr[-3000:]
    assert f"  {bad}: failed: non-finite loss" in again.stderr
    assert [(t.number, t.state, t.datetime_complete) for t in load_study(spec, url, "final").trials] == before
    assert len(attempts(runs[NAN_LR])) == len(attempts(runs[0.1])) == 1

    # --retry-failed queues the failed arm once more and trains it (again failing: its cause is in its config).
    retry = cli("sweep", str(path), "--storage", url, "--retry-failed")
    assert retry.returncode == 1 and "1 arm x seed cells queued" in retry.stderr, retry.stderr[-3000:]
    trials = load_study(spec, url, "final").trials
    assert [(t.number, t.state, t.datetime_complete) for t in trials[:2]] == before and len(trials) == 3
    assert trials[2].state == State.FAIL and trials[2].params["train.lr"] == NAN_LR
    assert len(attempts(runs[NAN_LR])) == 2 and len(attempts(runs[0.1])) == 1


@pytest.mark.slow
def test_train_reruns_a_failed_run_from_its_last_checkpoint(tmp_path):
    """Unlike a sweep, ``senet-ablate train`` retries a failed run when rerun, resuming from ``last.ckpt``.

    Bugs caught: a failed run reused as final by ``train`` (one attempt), or retrained from scratch (the second
    attempt not resumed from the first epoch's checkpoint)."""
    # Epoch 1 trains at lr 0.1; the step schedule then multiplies it by 1e30: the loss is non-finite in epoch 2.
    cmd = ["train", "--model", "resnet20_cifar", "--data", "digits", "data.image_size=8", "data.batch_size=64",
           "train.epochs=2", "train.threads=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
           "train.schedule=step", "train.step_size=1", "train.gamma=1.0e+30", "--wandb", "disabled",
           "--no-progress", "--output-dir", str(tmp_path / "runs")]
    first = cli(*cmd)
    assert first.returncode == 1 and first.stdout.startswith("failed: "), first.stdout + first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    assert [(a["status"], a["epochs"], a["resumed_from_epoch"]) for a in attempts(run_dir)] == [("failed", 1, None)]
    second = cli(*cmd)
    assert second.returncode == 1 and "over 2 attempts" in second.stdout, second.stdout + second.stderr[-3000:]
    assert [(a["status"], a["resumed_from_epoch"]) for a in attempts(run_dir)] == [("failed", None), ("failed", 1)]


def _age_heartbeat(db: Path, trial_id: int, hours: float) -> None:
    """Set the trial's last heartbeat ``hours`` back (Optuna stores UTC, without a zone)."""
    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=hours)
    with sqlite3.connect(db) as conn:
        changed = conn.execute("UPDATE trial_heartbeats SET heartbeat = ? WHERE trial_id = ?",
                               (old.strftime("%Y-%m-%d %H:%M:%S.%f"), trial_id)).rowcount
    assert changed == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_worker_cut_off_from_the_database_loses_its_trial_to_the_next_worker(tmp_path):
    """The heartbeat fallback: a RUNNING trial whose lease is held (its worker is alive) but whose heartbeat is
    older than the grace period is failed and re-queued by the next worker, which then runs it.

    Bugs caught: no heartbeat check before a claim (the next worker waits for the trial forever: the bounded
    run times out), a held lease taken for a dead one (the trial's reason would name the lease), no re-queue
    (the arm is left failed and never completes)."""
    path = write(tmp_path, name="stale", baseline=False, space={"model.se.reduction": [4]})
    spec = load_spec(path)
    db = tmp_path / "stale.db"
    url = f"sqlite:///{db}"
    setup_study(spec, url, "stale")
    study = load_study(spec, url, "stale")
    # The cut-off worker: it claimed the queued cell, beat once, holds its lease, and its heartbeat is now old.
    cut_off = study.ask()
    study._storage.record_heartbeat(cut_off._trial_id)
    _age_heartbeat(db, cut_off._trial_id, hours=1)
    leases = Leases(url)
    leases.take(cut_off._trial_id)
    try:
        assert leases.alive([cut_off._trial_id]) == {cut_off._trial_id}
        worker = cli("sweep", str(path), "--storage", url, "--worker-only", "--study-name", "stale", timeout=240)
    finally:
        leases.close()
    assert worker.returncode == 0, worker.stderr[-3000:]
    stale, retry = load_study(spec, url, "stale").trials
    assert stale.number == cut_off.number and stale.state == State.FAIL
    assert "lease" not in stale.user_attrs.get("reason", "")  # failed by its heartbeat, not by the lease check
    assert retry.state == State.COMPLETE and retry.system_attrs["retry_history"] == [stale.number]
    assert retry.user_attrs["config_hash"] == stale.user_attrs["config_hash"]


def test_dry_run_lists_the_arms_that_run_and_grid_cells_run_seed_major(tmp_path):
    """Bugs caught: ``--dry-run`` listing other arms than the study runs, or writing anything; cells run arm by
    arm (a load change during the sweep would reach one arm only)."""
    path = write(tmp_path, name="order", baseline=True, space={"model.se.reduction": [4, 8]}, seeds=3)
    url = f"sqlite:///{tmp_path / 'order.db'}"
    dry = cli("sweep", str(path), "--storage", url, "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert not (tmp_path / "order.db").exists() and not (tmp_path / "runs").exists()
    listed = dry.stdout.split("9 trials (arm x seed):\n")[1].splitlines()
    assert len(listed) == 9 and all(line.startswith("  ") for line in listed), dry.stdout

    spec = load_spec(path)
    ran = []

    def record(cfg, **_):  # the run order, without training: each trial fails at once and the worker goes on
        ran.append(cfg)
        raise RuntimeError("recorded")

    setup_study(spec, url, "order")
    assert run_worker(spec, url, "order", runner=record) == 9
    base = spec.base.override({"model.se": None})
    names = [run_name(cfg, base) for cfg in ran]
    assert names == [line.strip() for line in listed]  # the dry run lists the cells in the order they run
    assert [cfg.seed for cfg in ran] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    arms = [[n.rsplit("_s", 1)[0] for n in names[i:i + 3]] for i in (0, 3, 6)]
    assert arms[0] == arms[1] == arms[2] and len(set(arms[0])) == 3  # every arm once per seed, in one order


def _element_env(monkeypatch, job_id: int, inherited: str | None) -> None:
    """SLURM's environment of one array element (job array 9000: element i is job 9000 + i), as sbatch gives it."""
    monkeypatch.setenv("SLURM_JOB_ID", str(job_id))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "9000")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(job_id - 9000))
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "MASTER_ADDR"):  # no srun step: SLURMEnvironment stays off
        monkeypatch.delenv(name, raising=False)
    if inherited is None:
        monkeypatch.delenv("MASTER_PORT", raising=False)
    else:
        monkeypatch.setenv("MASTER_PORT", inherited)


def test_master_port_differs_between_array_elements(monkeypatch):
    """Bug caught: a port from what the elements share (the array's job id, a constant), so two elements' DDP
    trials on one node would meet at one rendezvous."""
    from ablations.sweep.slurm import master_port

    ports = []
    for job in range(9000, 9256):  # a 256-element array
        _element_env(monkeypatch, job, None)
        ports.append(master_port())
    assert len(set(ports)) == len(ports) and all(1024 <= p <= 65535 for p in ports)


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
@pytest.mark.parametrize("inherited", [None, "29500"])
def test_each_array_element_runs_its_trials_with_its_own_master_port(monkeypatch, inherited):
    """What the worker sees: two elements get two ports, also when the submitting shell had a ``MASTER_PORT``
    (sbatch exports the submitting environment to every element).

    Bug caught: the environment's ``MASTER_PORT`` left as inherited, the same for every element."""
    import ablations.sweep.worker
    from ablations.sweep.slurm import array_worker
    from ablations.sweep.storage import STORAGE_ENV

    seen = {}
    monkeypatch.setattr(ablations.sweep.worker, "run_ddp_worker",
                        lambda spec, url, study, n_trials=None: seen.setdefault(os.environ["SLURM_JOB_ID"],
                                                                                os.environ["MASTER_PORT"]))
    monkeypatch.setenv(STORAGE_ENV, "sqlite:////nonexistent/unused.db")
    for job in (9000, 9001):
        _element_env(monkeypatch, job, inherited)
        array_worker(None, "study")
    assert len(seen) == 2 and seen["9000"] != seen["9001"], seen


def test_a_retry_waits_for_a_run_folder_another_live_attempt_holds(monkeypatch):
    """A cut-off attempt still training holds its run folder: the retry waits (bounded), then runs; past the bound
    the folder's refusal stands. Bugs caught: a held folder failing the arm at once (a retry burned), or waiting
    without a bound."""
    from ablations.sweep import worker
    from ablations.training.run_folder import RunFolderBusy

    calls = []

    def runner(cfg, **kwargs):
        calls.append(cfg)
        if len(calls) < 3:
            raise RunFolderBusy("run folder x is in use by pid 1 on node1")
        return "result"

    monkeypatch.setattr(worker.time, "sleep", lambda s: None)
    assert worker._patient(runner)("cfg") == "result" and calls == ["cfg"] * 3
    monkeypatch.setattr(worker, "FOLDER_WAIT_S", -1.0)  # the bound already passed: the refusal stands
    calls.clear()
    with pytest.raises(RunFolderBusy, match="in use by pid 1"):
        worker._patient(runner)("cfg")
    assert len(calls) == 1
