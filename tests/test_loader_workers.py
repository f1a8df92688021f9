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
