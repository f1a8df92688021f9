"""SIGUSR2 (submitit's warning) stops a run resumable, its resume logs to a second W&B folder of the same run id,
and a signal that lands inside a checkpoint write leaves that checkpoint whole.

The first two run ``senet-ablate train`` as a real process, signalled after its first checkpoint; the third
runs in this process and sends the signal from inside ``torch.save``, so it lands mid-write every time.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_interrupts import wait_for  # until a run's file exists, failing if the run ends first

from ablations.config import ExperimentConfig
from ablations.training.interrupts import RunInterrupted
from ablations.training.run import run_config
from senet import model_config

pytestmark = pytest.mark.slow

EPOCHS = 3
# One tiny model on half of 8x8 digits: an epoch takes over a second, ample for the 0.05 s poll.
ARGS = ["--model", "se_resnet20_cifar", "--data", "digits", "data.image_size=8", "data.batch_size=32",
        "train.limit_train_batches=0.5", f"train.epochs={EPOCHS}", "train.threads=1", "--no-progress"]
RUN = "se_resnet20_cifar_digits_s0"


def train(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablations.cli", "train", *ARGS, "--wandb", "offline", "--output-dir", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def row(out: Path) -> dict:
    return json.loads((out / RUN / "result.json").read_text())


@pytest.fixture(scope="module")
def usr2_then_resume(tmp_path_factory) -> dict:
    """One run with W&B offline, SIGUSR2 after its first checkpoint, then the same command again."""
    out = tmp_path_factory.mktemp("usr2")
    proc = train(out)
    wait_for(out / RUN / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGUSR2)
    rc, err = finish(proc)
    cut = {"rc": rc, "err": err, "row": row(out), "folders": sorted((out / RUN / "wandb").glob("offline-run-*")),
           "wandb_id": (out / RUN / "wandb_id.txt").read_text().strip()}
    rc, err = finish(train(out))
    done = {"rc": rc, "err": err, "row": row(out), "folders": sorted((out / RUN / "wandb").glob("offline-run-*")),
            "wandb_id": (out / RUN / "wandb_id.txt").read_text().strip()}
    return {"cut": cut, "done": done}


def test_sigusr2_records_interrupted_exits_140_and_the_rerun_resumes_to_complete(usr2_then_resume):
    cut, done = usr2_then_resume["cut"], usr2_then_resume["done"]
    assert cut["rc"] == 128 + signal.SIGUSR2 == 140, cut["err"]
    assert cut["row"]["status"] == "interrupted" and "SIGUSR2" in cut["row"]["reason"]
    assert 1 <= cut["row"]["epochs"] < EPOCHS
    assert "interrupted by SIGUSR2; rerun the same command to resume" in cut["err"]
    assert "Traceback" not in cut["err"]
    assert done["rc"] == 0, done["err"]
    assert (done["row"]["status"], done["row"]["epochs"], done["row"]["attempts"]) == ("complete", EPOCHS, 2)


def test_the_resume_logs_to_a_second_offline_folder_of_the_same_wandb_run(usr2_then_resume):
    cut, done = usr2_then_resume["cut"], usr2_then_resume["done"]
    assert len(cut["folders"]) == 1 and len(done["folders"]) == 2, done["folders"]
    assert cut["folders"][0] in done["folders"]  # the first attempt's folder is kept for `wandb sync`
    # offline-run-<YYYYMMDD_HHMMSS>-<id>: both attempts carry the run folder's recorded id
    ids = {p.name.rsplit("-", 1)[1] for p in done["folders"]}
    assert ids == {cut["wandb_id"]} == {done["wandb_id"]}
    for folder in done["folders"]:
        (log,) = folder.glob("run-*.wandb")
        assert log.name == f"run-{cut['wandb_id']}.wandb"


class SignalInsideWrite:
    """A file that sends this process ``sig`` at its first ``write``: the signal lands while ``torch.save`` writes."""

    def __init__(self, f, sig: int) -> None:
        self.f, self.sig, self.sent = f, sig, False

    def write(self, data) -> int:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)  # the Python handler runs on return, inside this write
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_signal_during_a_checkpoint_write_leaves_that_checkpoint_whole(tmp_path, monkeypatch):
    at = 1  # the epoch whose last.ckpt write is signalled (epoch 0's checkpoints are already on disk)
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}), output_dir=str(tmp_path))
    cfg = cfg.override({"data.image_size": 8, "data.batch_size": 256, "train.epochs": EPOCHS, "train.threads": 1,
                        "wandb.mode": "disabled"})
    save, writes = torch.save, []

    def signalled_save(obj, f, *args, **kwargs):
        name = getattr(f, "name", "")
        if isinstance(name, str) and name.endswith("last.ckpt.part"):
            writes.append(obj["epoch"])
            if obj["epoch"] == at:
                f = SignalInsideWrite(f, signal.SIGTERM)
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", signalled_save)
    with pytest.raises(RunInterrupted) as info:
        run_config(cfg, progress_bar=False, quiet=True)
    monkeypatch.undo()
    assert info.value.signum == signal.SIGTERM and writes == [0, at]

    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and "SIGTERM" in result["reason"]
    assert result["epochs"] == at + 1  # the epoch whose checkpoint was being written counts as done
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == at and ckpt["state_dict"] and ckpt["optimizer_states"]
    assert not list(run_dir.rglob("*.part"))

    resumed = run_config(cfg, progress_bar=False, quiet=True)  # and it resumes from that checkpoint
    assert (resumed.status, resumed.epochs, resumed.attempts) == ("complete", EPOCHS, 2)
