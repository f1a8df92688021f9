"""A run's recorded status is the truth under real signals (docs/DESIGN.md, Training).

``senet-ablate train`` runs as a real process, held still (SIGSTOP) at its first checkpoint and signalled there.
SIGTERM and SIGKILL: status ``interrupted`` (no row for SIGKILL), exit code 128 + signal, a rerun of the same
command resumes and ends bit-equal to an uninterrupted run, ``csv/metrics.csv`` holds every epoch once, and the
wall time is the sum of the attempts. SIGINT and SIGUSR1: the same row and exit code (their mapping to
``RunInterrupted`` is unit-tested in test_interrupts). Two identical commands at once: one trains, the other
refuses in one line. ``--no-resume`` empties the folder and keeps the checkpoint names. One tiny model on 8x8
digits throughout.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import process_guard
import pytest
import wandb_records

from ablations.training.checkpoints import resume_point

pytestmark = pytest.mark.slow

EPOCHS = 3  # the signal lands in epoch 2 or 3, after the first epoch-end checkpoint
# Half of digits' batches per epoch: an epoch takes over a second here, so the 0.05 s poll sees the first checkpoint
# long before the second (``signal_in_training`` checks which one it saw).
ARGS = ["--model", "se_resnet20_cifar", "--data", "digits", "data.image_size=8", "data.batch_size=32",
        "train.limit_train_batches=0.5", f"train.epochs={EPOCHS}", "train.threads=1", "--no-progress"]
RUN = "se_resnet20_cifar_digits_s0"


def train(out: Path, *extra: str, wandb: str = "disabled") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablations.cli", "train", *ARGS, "--wandb", wandb, "--output-dir", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path} existed: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def signal_in_training(proc: subprocess.Popen, out: Path, sig: int) -> None:
    """Send ``sig`` to the run while it provably trains: it is held still (SIGSTOP) at the first checkpoint seen,
    which must be epoch 0's, so a whole epoch is still to train when it goes on (SIGCONT) and gets the signal."""
    ckpt = out / RUN / "checkpoints" / "last.ckpt"
    wait_for(ckpt, proc)
    with process_guard.stopped(proc.pid):
        assert not (out / RUN / "result.json").exists()
        assert resume_point(ckpt)["epoch"] <= EPOCHS - 3, "held too late: the run could end before the signal"
        proc.send_signal(sig)


def row(out: Path) -> dict:
    return json.loads((out / RUN / "result.json").read_text())


def val_epochs(out: Path) -> list[int]:
    with (out / RUN / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(None not in r for r in rows), "a row has more fields than the header"
    return [int(float(r["epoch"])) for r in rows if r.get("val/top1")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("straight")
    rc, _, err = finish(train(out))
    assert rc == 0, err
    return row(out)


def interrupted_row(out: Path, rc: int, err: str, sig: int) -> dict:
    """The checks every caught signal shares: exit code, the row, the one-line advice, no traceback."""
    assert rc == 128 + sig, err
    cut = row(out)
    assert cut["status"] == "interrupted" and signal.Signals(sig).name in cut["reason"]
    assert cut["epochs"] < EPOCHS
    assert f"interrupted by {signal.Signals(sig).name}; rerun the same command to resume" in err
    assert "Traceback" not in err
    return cut


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_signal_after_first_checkpoint_then_resume(tmp_path, straight, sig):
    proc = train(tmp_path)
    signal_in_training(proc, tmp_path, sig)
    rc, _, err = finish(proc)

    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL and not (tmp_path / RUN / "result.json").exists()
    else:
        interrupted_row(tmp_path, rc, err, sig)
    first = json.loads((tmp_path / RUN / "attempts.json").read_text())
    assert len(first) == 1 and first[0]["wall_time_s"] > 0

    rc, out, err = finish(train(tmp_path))
    assert rc == 0, err
    done = row(tmp_path)
    assert done["status"] == "complete" and done["epochs"] == EPOCHS and done["attempts"] == 2
    assert done["metrics"] == straight["metrics"]  # bit-equal: resumed from the epoch-end checkpoint with its RNG
    attempts = json.loads((tmp_path / RUN / "attempts.json").read_text())
    assert attempts[0]["wall_time_s"] >= first[0]["wall_time_s"]
    assert done["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in attempts), abs=1e-3)
    assert val_epochs(tmp_path) == list(range(EPOCHS))  # the history survives the resume, each epoch once
    assert sorted(p.name for p in (tmp_path / RUN / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    if sig == signal.SIGTERM:  # only a complete run is reused (the same check after any signal: once is enough)
        rc, out, _ = finish(train(tmp_path))
        assert rc == 0 and out.startswith("complete:") and row(tmp_path)["attempts"] == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1], ids=lambda s: signal.Signals(s).name)
def test_other_signals_stop_the_run_resumable(tmp_path, sig):
    proc = train(tmp_path)
    signal_in_training(proc, tmp_path, sig)
    rc, _, err = finish(proc)
    cut = interrupted_row(tmp_path, rc, err, sig)
    # Resumable: last.ckpt holds the last epoch the row counts, and the rerun starts after it.
    assert resume_point(tmp_path / RUN / "checkpoints" / "last.ckpt")["epoch"] == cut["epochs"] - 1
    (attempt,) = json.loads((tmp_path / RUN / "attempts.json").read_text())
    assert attempt["status"] == "interrupted" and attempt["epochs"] == cut["epochs"] and attempt["wall_time_s"] > 0
    assert val_epochs(tmp_path) == list(range(cut["epochs"]))  # the history of the epochs done is on disk


def test_two_identical_commands_one_trains_one_refuses(tmp_path):
    # Started together (their start-ups overlap); whichever takes the folder's lock first (its holder line names
    # it) is held still (SIGSTOP) until the other has finished, so the other meets the lock of a run that has
    # certainly not finished, however their start-ups fall.
    procs = {p.pid: p for p in (train(tmp_path), train(tmp_path))}
    lock = tmp_path / RUN / "run.lock"
    holder = None
    while holder is None:
        assert all(p.poll() is None for p in procs.values()), [p.stderr.read() for p in procs.values()]
        found = re.search(r'"pid": (\d+)', lock.read_text()) if lock.exists() else None
        holder = procs.get(int(found[1])) if found else None
        time.sleep(0.05)
    (other,) = set(procs.values()) - {holder}
    with process_guard.stopped(holder.pid):
        assert holder.poll() is None and not (tmp_path / RUN / "result.json").exists()
        rc_b, out_b, err_b = finish(other)
    rc_a, _, err_a = finish(holder)
    assert (rc_a, rc_b) == (0, 2), (err_a, err_b)
    assert out_b == ""
    lines = err_b.strip().splitlines()
    assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "already running" in lines[0], err_b
    done = row(tmp_path)
    assert done["status"] == "complete" and done["attempts"] == 1 and val_epochs(tmp_path) == list(range(EPOCHS))


def test_no_resume_starts_a_clean_folder(tmp_path):
    proc = train(tmp_path, wandb="offline")
    signal_in_training(proc, tmp_path, signal.SIGTERM)
    assert finish(proc)[0] == 128 + signal.SIGTERM
    (offline,) = (tmp_path / RUN / "wandb").glob("offline-run-*")
    assert b'"interrupted"' in next(offline.glob("run-*.wandb")).read_bytes()  # the summary's status, for sync
    assert wandb_records.exit_code(offline) == 143  # the exit record W&B uploads: not "finished" (0)
    old_id = (tmp_path / RUN / "wandb_id.txt").read_text()

    rc, _, err = finish(train(tmp_path, "--no-resume"))
    assert rc == 0, err
    done = row(tmp_path)
    assert done["status"] == "complete" and done["attempts"] == 1
    assert sorted(p.name for p in (tmp_path / RUN / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / RUN / "wandb").exists()  # W&B disabled this time; the old offline run went with the folder
    assert not (tmp_path / RUN / "wandb_id.txt").exists() or (tmp_path / RUN / "wandb_id.txt").read_text() != old_id
    assert val_epochs(tmp_path) == list(range(EPOCHS))
