"""Faults of the machine and of shared folders, on real files and processes (issue 20).

A full disk (a small tmpfs), a read-only folder (a read-only bind mount), a run folder that is a symbolic
link, SIGHUP, and SIGTERM after an epoch that did not improve. Mounting needs root: where ``mount`` is
refused the two mount tests skip with one line. Tiny runs: ResNet-20 on 8x8 digits, one torch thread.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb_records

from ablations.cli import main
from ablations.training.run_folder import RUN_ENTRIES, start_over

RUN = "se_resnet20_cifar_digits_s0"
TRAIN = ["--model", "se_resnet20_cifar", "--data", "digits", "data.image_size=8", "data.batch_size=32",
         "train.limit_train_batches=0.5", "train.limit_val_batches=1", "train.threads=1", "--no-progress"]


def train_args(out: Path, *extra: str, epochs: int = 2, wandb: str = "disabled") -> list[str]:
    return ["train", *TRAIN, f"train.epochs={epochs}", "--wandb", wandb, "--output-dir", str(out), *extra]


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} refused here ({done.stderr.strip()}): needs root")


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], capture_output=True, timeout=30, check=False)


def test_a_symlinked_run_folder_is_refused_and_its_target_untouched(tmp_path, capsys):
    target = tmp_path / "someone_elses"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me")
    (target / "sub" / "data.bin").write_bytes(b"keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / RUN).symlink_to(target)
    for extra in ((), ("--no-resume",)):
        assert main(train_args(tmp_path / "out", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a symbolic link" in err[0] and str(target) in err[0], err
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["notes.txt", "sub", "sub/data.bin"]
    assert (target / "notes.txt").read_text() == "keep me"


def test_start_over_removes_only_what_a_run_writes_and_never_through_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.ckpt").write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    for name in RUN_ENTRIES:
        (run / name).write_text("old")
    (run / "csv").unlink()
    (run / "csv").symlink_to(elsewhere)  # a link among the run's entries goes as a link
    (run / "my_notes.md").write_text("mine")
    (run / "run.lock").write_text("")
    start_over(run)
    assert sorted(p.name for p in run.iterdir()) == ["my_notes.md", "run.lock"]
    assert (elsewhere / "precious.ckpt").exists()


def test_a_full_disk_is_one_line_leaves_no_partial_file_and_resumes_once_fixed(tmp_path, mounts, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk))  # a checkpoint with its optimizer state is ~3.4 MB
    mounts.append(disk)
    assert main(train_args(disk)) == 74
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device" in err[0] and str(disk / RUN) in err[0], err
    assert "Traceback" not in "\n".join(err) and leftovers(disk) == []
    row = json.loads((disk / RUN / "result.json").read_text())
    assert row["status"] == "interrupted" and "no space left" in row["reason"]

    mount("-o", "remount,size=64m", str(disk))  # the cause fixed: the same command resumes the run
    assert main(train_args(disk)) == 0
    row = json.loads((disk / RUN / "result.json").read_text())
    assert (row["status"], row["attempts"], row["epochs"]) == ("complete", 2, 2)
    assert leftovers(disk) == []


def test_a_read_only_folder_serves_a_complete_run_and_refuses_others_in_one_line(tmp_path, mounts, capsys):
    out = tmp_path / "out"
    assert main(train_args(out)) == 0
    (out / "unfinished").mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    mount("--bind", str(out), str(ro))
    mounts.append(ro)
    mount("-o", "remount,bind,ro", str(ro))
    capsys.readouterr()
    assert main(train_args(ro)) == 0  # already complete: read, not written
    assert capsys.readouterr().out.startswith("complete:")
    assert main(train_args(ro, epochs=3)) == 74  # another experiment: it would have to write
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0] and str(ro) in err[0], err


def test_an_unfinished_run_in_a_read_only_folder_is_one_line_and_resumes_once_writable(tmp_path, mounts, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk))
    mounts.append(disk)
    assert main(train_args(disk)) == 74  # the disk fills: an unfinished, resumable run
    mount("-o", "remount,ro,size=64m", str(disk))
    capsys.readouterr()
    assert main(train_args(disk)) == 74  # it would have to write: refused, the folder as it was
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0] and str(disk) in err[0], err
    assert json.loads((disk / RUN / "result.json").read_text())["status"] == "interrupted"
    mount("-o", "remount,rw", str(disk))  # the cause fixed: the same command finishes the run
    assert main(train_args(disk)) == 0
    row = json.loads((disk / RUN / "result.json").read_text())
    assert (row["status"], row["epochs"]) == ("complete", 2) and row["attempts"] >= 2
    assert leftovers(disk) == []


def start(out: Path, epochs: int, *extra: str, wandb: str = "disabled") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablations.cli", *train_args(out, *extra, epochs=epochs, wandb=wandb)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def epoch_of(out: Path, name: str) -> int:
    return torch.load(out / RUN / "checkpoints" / f"{name}.ckpt", weights_only=True)["epoch"]


def wait_for_epochs(out: Path, proc: subprocess.Popen, epochs: int, timeout: float = 180) -> None:
    """Until the run's ``last.ckpt`` holds ``epochs`` finished epochs (it is replaced atomically: safe to read)."""
    path, deadline = out / RUN / "checkpoints" / "last.ckpt", time.monotonic() + timeout
    while not (path.exists() and epoch_of(out, "last") + 1 >= epochs):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) first: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never reached {epochs} epochs"
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_after_an_epoch_that_did_not_improve_resumes_from_the_last_epoch(tmp_path):
    # lr 0: the weights never change, so no epoch after the first improves the monitored top-1 (the run is seeded
    # and deterministic, and the test checks it did not): best.ckpt stays at epoch 0 while last.ckpt moves on.
    proc = start(tmp_path, 6, "train.lr=0.0")
    wait_for_epochs(tmp_path, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    cut = json.loads((tmp_path / RUN / "result.json").read_text())
    assert cut["status"] == "interrupted" and cut["epochs"] >= 2
    assert epoch_of(tmp_path, "best") == 0  # the epochs after it did not improve
    assert epoch_of(tmp_path, "last") == cut["epochs"] - 1  # the last finished epoch, whatever the monitor did

    rc = main(train_args(tmp_path, "train.lr=0.0", epochs=6))
    assert rc == 0
    attempts = json.loads((tmp_path / RUN / "attempts.json").read_text())
    assert attempts[1]["resumed_from_epoch"] == cut["epochs"]  # no finished epoch is trained again
    assert epoch_of(tmp_path, "last") == 5


@pytest.mark.slow
def test_sighup_is_an_interrupt_the_run_records_and_closes(tmp_path):
    proc = start(tmp_path, 4, wandb="offline")
    wait_for_epochs(tmp_path, proc, 1)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "interrupted by SIGHUP; rerun the same command to resume" in err and "Traceback" not in err
    row = json.loads((tmp_path / RUN / "result.json").read_text())
    assert row["status"] == "interrupted" and "SIGHUP" in row["reason"]
    assert json.loads((tmp_path / RUN / "attempts.json").read_text())[-1]["status"] == "interrupted"
    (offline,) = (tmp_path / RUN / "wandb").glob("offline-run-*")
    assert b'"interrupted"' in next(offline.glob("run-*.wandb")).read_bytes()  # the W&B run's summary
    assert wandb_records.exit_code(offline) == 128 + signal.SIGHUP  # closed with the signal's exit code


def test_machine_faults_are_told_from_the_arms_faults(tmp_path):
    from ablations.training.faults import EX_IOERR, machine_fault, write_error, written_whole

    lost = machine_fault(FileNotFoundError(2, "No such file or directory", str(tmp_path / "last.ckpt")))
    assert lost is not None and lost.exit_code == EX_IOERR
    assert str(lost) == f"cannot write {tmp_path / 'last.ckpt'}: the file or its folder is gone"
    assert machine_fault(OSError(28, "No space left on device"), tmp_path) is not None  # a write names no file
    assert str(tmp_path) in str(machine_fault(OSError(28, "No space left on device"), tmp_path))
    for arm_fault in (ValueError("bad"), RuntimeError("CUDA out of memory"), OSError(22, "Invalid argument")):
        assert machine_fault(arm_fault) is None
    # torch's writer gives no errno: a file system with room left is an I/O error, not "no space"
    assert write_error(tmp_path / "x.part", RuntimeError("unexpected pos 576 vs 534")).errno == 5
    part = tmp_path / "x.part"
    with pytest.raises(OSError, match="x.part"), written_whole(part):
        part.write_text("half")
        raise RuntimeError("unexpected pos")
    assert not part.exists()
    with pytest.raises(KeyError), written_whole(part):  # not a write fault: raised as it is, the file still removed
        part.write_text("half")
        raise KeyError("bug")
    assert not part.exists()
