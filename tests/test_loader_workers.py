"""``data.num_workers: null`` lets the machine decide the DataLoader workers (issue 14), without touching the hash."""
from __future__ import annotations

import pytest

from ablations.config import DataConfig, ExperimentConfig
from ablations.data import build_datamodule
from ablations.data.base import auto_workers, local_devices


@pytest.mark.parametrize("cores, devices, expected", [(16, 1, 15), (16, 4, 3), (64, 8, 7), (2, 1, 1), (4, 8, 1)])
def test_auto_workers_share_the_cores_among_the_local_devices(cores, devices, expected):
    assert auto_workers(cores, devices) == expected


def test_local_devices_read_torchrun_then_slurm(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_devices() == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x3)")  # SLURM's form for repeated counts
    assert local_devices() == 2


def test_null_picks_workers_for_files_and_none_for_tensors(monkeypatch, tmp_path):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
    folder = build_datamodule(DataConfig(name="imagenet", root=str(tmp_path), num_workers=None))
    assert folder.num_workers == 12 // 3 - 1
    assert build_datamodule(DataConfig(name="digits", num_workers=None)).num_workers == 0  # in memory already
    assert build_datamodule(DataConfig(name="digits", num_workers=2)).num_workers == 2  # a number is kept


def test_null_keeps_the_default_hash_and_bad_counts_say_what_is_allowed():
    assert ExperimentConfig().data.num_workers == 0  # the default is unchanged, and so are the hashes
    auto = ExperimentConfig().override({"data.num_workers": None})
    assert auto.hash() != ExperimentConfig().hash() and auto.to_dict()["data"]["num_workers"] is None
    with pytest.raises(ValueError, match=r"data.num_workers=-1 is not allowed; it must be an integer >= 0"):
        DataConfig(num_workers=-1)


def test_uint8_batches_normalised_on_the_device_equal_the_workers_floats(tmp_path):
    """The PIL path on a GPU ships uint8 crops and normalises after the copy: the same numbers, a quarter of
    the bytes. Forced here on the CPU (``uint8_batches``); the eval crops are deterministic, so exactly equal."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / split / f"c{c}" / f"{i}.jpg")
    batches = {}
    for uint8 in (False, True):
        dm = build_datamodule(DataConfig(name="imagenet", root=str(tmp_path), image_size=24, batch_size=6))
        dm.uint8_batches = uint8
        dm.setup()
        batch = next(iter(dm.val_dataloader()))
        assert batch[0].dtype == (torch.uint8 if uint8 else torch.float32)
        batches[uint8] = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(batches[True][0], batches[False][0]) and torch.equal(batches[True][1], batches[False][1])
    assert build_datamodule(DataConfig(name="imagenet", root=str(tmp_path)))._normalise_on_device() is False  # no trainer
