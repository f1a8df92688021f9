"""A run's recorded status is the truth under real signals (DESIGN: Training; issue 9).

``senet-ablate train`` runs as a real process; after its first checkpoint it gets SIGINT, SIGTERM, SIGUSR1 or
SIGKILL. Then: status ``interrupted`` (no row for SIGKILL), exit code 128 + signal, a rerun of the same command
resumes and ends bit-equal to an uninterrupted run, ``csv/metrics.csv`` holds every epoch once, and the wall
time is the sum of the attempts. Two identical commands at once: one trains, the other refuses in one line.
``--no-resume`` empties the folder and keeps the checkpoint names. One tiny model on 8x8 digits throughout.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EPOCHS = 3  # the signal lands in epoch 2 or 3, after the first epoch-end checkpoint
# Half of digits' batches per epoch: an epoch still takes over a second here, ample for the 0.05 s poll.
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_signal_after_first_checkpoint_then_resume(tmp_path, straight, sig):
    proc = train(tmp_path)
    wait_for(tmp_path / RUN / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    rc, _, err = finish(proc)

    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL and not (tmp_path / RUN / "result.json").exists()
    else:
        assert rc == 128 + sig, err
        cut = row(tmp_path)
        assert cut["status"] == "interrupted" and signal.Signals(sig).name in cut["reason"]
        assert cut["epochs"] < EPOCHS
        assert f"interrupted by {signal.Signals(sig).name}; rerun the same command to resume" in err
        assert "Traceback" not in err
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

    if sig == signal.SIGINT:  # only a complete run is reused (the same check after any signal: once is enough)
        rc, out, _ = finish(train(tmp_path))
        assert rc == 0 and out.startswith("complete:") and row(tmp_path)["attempts"] == 2


def test_two_identical_commands_one_trains_one_refuses(tmp_path):
    # Started together, so the second reaches the folder's lock while the first trains (started after the first
    # had claimed the folder, the second's ~8 s of start-up could outlast the first's whole run).
    procs = [train(tmp_path), train(tmp_path)]
    (rc_a, out_a, err_a), (rc_b, out_b, err_b) = finish(procs[0]), finish(procs[1])
    assert sorted([rc_a, rc_b]) == [0, 2], (err_a, err_b)
    winner, (out, err) = (procs[0], (out_b, err_b)) if rc_a == 0 else (procs[1], (out_a, err_a))
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"pid {winner.pid}" in lines[0] and "already running" in lines[0], err
    assert row(tmp_path)["status"] == "complete" and val_epochs(tmp_path) == list(range(EPOCHS))


def test_no_resume_starts_a_clean_folder(tmp_path):
    proc = train(tmp_path, wandb="offline")
    wait_for(tmp_path / RUN / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 128 + signal.SIGTERM
    (offline,) = (tmp_path / RUN / "wandb").glob("offline-run-*")
    assert b'"interrupted"' in next(offline.glob("run-*.wandb")).read_bytes()  # the summary's status, for sync
    log = (offline / "logs" / "debug.log").read_text()
    if "got exitcode" in log:  # W&B's own record of the exit code it was finished with: not "finished" (0)
        assert "got exitcode: 143" in log
    old_id = (tmp_path / RUN / "wandb_id.txt").read_text()

    rc, _, err = finish(train(tmp_path, "--no-resume"))
    assert rc == 0, err
    done = row(tmp_path)
    assert done["status"] == "complete" and done["attempts"] == 1
    assert sorted(p.name for p in (tmp_path / RUN / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / RUN / "wandb").exists()  # W&B disabled this time; the old offline run went with the folder
    assert not (tmp_path / RUN / "wandb_id.txt").exists() or (tmp_path / RUN / "wandb_id.txt").read_text() != old_id
    assert val_epochs(tmp_path) == list(range(EPOCHS))
