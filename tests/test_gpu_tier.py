"""The GPU tier: what only a CUDA machine checks (bf16-mixed training, NCCL DDP, data.decoder=gpu, --gpus-per-trial).

Run with ``pytest -m gpu tests/``; without a CUDA GPU each test skips with one line. Tiny runs: seconds on a GPU.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import process_guard
import pytest
import torch
import yaml
from PIL import Image

from ablations.config import ExperimentConfig
from ablations.training.run import run_config
from senet import model_config

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: run `pytest -m gpu tests/` on a GPU machine")]
ROOT = Path(__file__).resolve().parent.parent
DIGITS = {"data.image_size": 16, "data.batch_size": 64, "train.epochs": 2, "wandb.mode": "disabled",
          "train.accelerator": "gpu", "train.devices": 1}


def tiny(out: Path, **overrides) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}), output_dir=str(out))
    return cfg.override({**DIGITS, **overrides})


def last_weights(result) -> dict[str, torch.Tensor]:
    path = Path(result.run_dir) / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_bf16_mixed_trains_the_fused_se_on_the_gpu_and_keeps_fp32_weights(tmp_path):
    result = run_config(tiny(tmp_path, **{"train.precision": "bf16-mixed"}), progress_bar=False, quiet=True)
    assert result.status == "complete", result.reason
    assert result.env["precision"] == "bf16-mixed" and result.env["gpu"] and result.env["devices"] == 1
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["val/top1"] > 0.2  # learned: chance is 0.1 on 10 digits
    weights = last_weights(result)
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # fp32 master weights


def test_nccl_ddp_on_two_gpus_trains_to_complete(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs for NCCL DDP; this machine has {torch.cuda.device_count()}")
    if not torch.distributed.is_nccl_available():
        pytest.skip("needs a torch built with NCCL")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ablations.cli", "train", "--model", "se_resnet20_cifar", "--se.reduction", "4",
           "--data", "digits", "--data.image_size", "16", "--epochs", "2", "--devices", "2", "--strategy", "ddp",
           "--accelerator", "gpu", "--wandb", "disabled", "--output-dir", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = process_guard.run(cmd, cwd=tmp_path, env=env, timeout=600)  # on a timeout, rank 1 is ended too
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr + proc.stdout
    assert "distributed_backend=nccl" in log and "Starting with 2 processes" in log, log[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    row = json.loads((run_dir / "result.json").read_text())
    assert row["status"] == "complete" and row["epochs"] == 2 and row["env"]["devices"] == 2


class BatchOnDevice(pl.Callback):
    """The training batches as the model receives them (after the datamodule's decode)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, torch.dtype, tuple[int, ...]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, _ = batch
        self.seen.append((images.device.type, images.dtype, tuple(images.shape)))


def jpeg_tree(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """``root/{train,val}/class<k>/img<i>.jpg``: smooth random 80x60 RGB JPEGs."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                small = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
                small.resize((80, 60), Image.BICUBIC).save(folder / f"img{i}.jpg", quality=90)
    return root


def test_the_gpu_decoder_trains_from_jpegs_decoded_on_the_gpu(tmp_path):
    pytest.importorskip("torchcodec.decoders", reason="data.decoder=gpu needs TorchCodec: pip install -e '.[gpu-decode]'")
    tree = jpeg_tree(tmp_path / "jpegs")
    cfg = ExperimentConfig(model=model_config("se_resnet18", num_classes=3), output_dir=str(tmp_path / "runs"))
    cfg = cfg.override({"data.name": "imagenet", "data.root": str(tree), "data.decoder": "gpu", "data.image_size": 32,
                        "data.batch_size": 4, "train.epochs": 1, "wandb.mode": "disabled", "train.accelerator": "gpu",
                        "train.devices": 1})
    seen = BatchOnDevice()
    result = run_config(cfg, callbacks=[seen], progress_bar=False, quiet=True)
    assert result.status == "complete", result.reason
    assert seen.seen and set(seen.seen) == {("cuda", torch.float32, (4, 3, 32, 32))}
    assert result.config["data"]["decoder"] == "gpu" and math.isfinite(result.metrics["val/loss"])


def test_gpus_per_trial_runs_each_trial_on_its_gpu(tmp_path):
    from ablations.sweep.slurm import with_gpus
    from ablations.sweep.spec import load_spec
    from ablations.sweep.study import setup_study
    from ablations.sweep.worker import run_worker

    base = {"model": {"arch": "resnet20_cifar"}, "data": {"name": "digits", "image_size": 16, "batch_size": 64},
            "train": {"epochs": 1, "limit_train_batches": 4, "limit_val_batches": 2},
            "wandb": {"mode": "disabled"}, "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump({"name": "gpus", "base": base, "space": {"model.se.reduction": [4, 8]},
                                    "baseline": False}))
    spec = with_gpus(load_spec(path), 1)  # what `senet-ablate sweep --slurm --gpus-per-trial 1` submits
    t = spec.base.train
    assert (t.accelerator, t.devices, t.num_nodes, t.strategy) == ("gpu", 1, 1, "auto")
    url = f"sqlite:///{tmp_path / 'gpus.db'}"
    setup_study(spec, url, "gpus")
    assert run_worker(spec, url, "gpus") == 2
    rows = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    assert len(rows) == 2 and {r["config"]["model"]["se"]["reduction"] for r in rows} == {4, 8}
    for r in rows:
        assert r["status"] == "complete", r["reason"]
        assert r["config"]["train"]["accelerator"] == "gpu" and r["env"]["gpu"] and r["env"]["devices"] == 1
