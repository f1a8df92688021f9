"""DDP on CPU (gloo, 2 processes): ``--devices 2 --strategy ddp`` trains, and its validation metrics are those of
one process evaluating the same weights on the same validation split.

What "same validation metrics" can honestly mean: two processes do not *train* like one (each rank sees half of
every global batch and keeps its own BatchNorm statistics; SyncBatchNorm needs a GPU), so the trajectories
differ. Validation is what must agree: each rank scores half of the split and torchmetrics sums the counts over
the ranks, so the DDP run's val/top1 and val/top5 equal a single process scoring the full split with the same
weights, and val/loss agrees to float rounding. This holds when the split divides by the number of processes;
otherwise DistributedSampler pads it with repeated samples (Lightning's default) and the metrics can move by one
sample. The digits validation split has 360 images.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import process_guard
import pytest

from ablations.config import ExperimentConfig
from ablations.data import build_datamodule
from ablations.training.metrics import VAL_LOSS, VAL_TOP1, VAL_TOP5
from ablations.training.module import SEClassifier

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_two_process_ddp_matches_one_process_validation(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ablations.cli", "train", "--model", "se_resnet20_cifar", "--se.reduction", "4",
           "--data", "digits", "--data.image_size", "8", "--epochs", "2", "--devices", "2", "--strategy", "ddp",
           "--accelerator", "cpu", "train.threads=2", "--wandb", "disabled", "--output-dir", str(out), "--no-progress"]
    # Without OMP_NUM_THREADS, Lightning's launcher sets its own thread count (cores / processes) in each process.
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env = {**env, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = process_guard.run(cmd, cwd=tmp_path, env=env, timeout=900)  # on a timeout, rank 1 is ended too
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    row = json.loads((run_dir / "result.json").read_text())
    assert row["status"] == "complete" and row["epochs"] == 2
    assert row["env"]["threads"] == 2  # train.threads, not the launcher's count

    cfg = ExperimentConfig.from_dict(row["config"])
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.setup("validate")
    assert len(dm.val_set) % 2 == 0  # no padding: both ranks together score each image exactly once
    module = SEClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    (single,) = trainer.validate(module, datamodule=dm, verbose=False)
    ddp = row["metrics"]
    assert single[VAL_TOP1] == ddp[VAL_TOP1]
    assert single[VAL_TOP5] == ddp[VAL_TOP5]
    assert single[VAL_LOSS] == pytest.approx(ddp[VAL_LOSS], rel=1e-5)


def test_two_nodes_launched_by_hand_train_one_run_owned_by_node_rank_0(tmp_path):
    """``train.num_nodes=2`` started once per node with ``NODE_RANK`` (no SLURM, no torchrun): the rank is the
    Trainer's to know, so node 1 follows and leaves the folder, its lock and its files to node 0."""
    import signal
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ablations.cli", "train", "--data", "digits", "--data.image_size", "8", "--epochs", "1",
           "train.num_nodes=2", "train.devices=1", "train.strategy=ddp", "--accelerator", "cpu", "train.threads=1",
           "--wandb", "disabled", "--output-dir", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env={**env, "NODE_RANK": str(rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for rank in (0, 1)]
    try:
        done = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in done]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    row = json.loads((run_dir / "result.json").read_text())
    assert row["status"] == "complete" and row["attempts"] == 1 and row["env"]["devices"] == 2
