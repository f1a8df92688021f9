"""File-backed DataModules (ablations.data): CIFAR in torchvision's layout and ImageNet-style folders,
their errors before any work, and no downloads unless asked."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image

from ablations.config import DataConfig
from ablations.data import build_datamodule


def setup_dm(seed=0, **kw):
    dm = build_datamodule(DataConfig(**kw), seed=seed)
    dm.setup("fit")
    return dm


def _no_download(*args, **kwargs):
    raise AssertionError("nothing may download unless data.download is set")


# ---- CIFAR-10 / CIFAR-100 in torchvision's format ---- #


def write_cifar(root: Path, hundred=False, per_file=4) -> Path:
    """Tiny CIFAR in torchvision's pickled layout (checksums will not match the official files)."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    key = "fine_labels" if hundred else "labels"
    for i, name in enumerate(names):
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        data[0] = 255  # a white image: its normalised value is known
        (folder / name).write_bytes(pickle.dumps({"data": data, key: [(i + j) % 10 for j in range(per_file)]}))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else \
        {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))
    return folder


@pytest.fixture
def skip_checksums(monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)


def test_cifar10_loads_and_normalises(tmp_path, skip_checksums):
    write_cifar(tmp_path)
    dm = build_datamodule(DataConfig(name="cifar10", root=str(tmp_path), batch_size=4))
    assert dm.num_classes == 10 and dm.class_names[0] == "airplane"  # read before setup: from batches.meta
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (20, 4)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [5, 6, 7, 8]
    white = (1 - torch.tensor(dm.mean)) / torch.tensor(dm.std)
    assert torch.allclose(x[0].mean((1, 2)), white, atol=1e-5)
    xt, _ = next(iter(dm.train_dataloader()))
    assert xt.shape == (4, 3, 32, 32)
    names = [type(t).__name__ for t in dm.transforms()[0].transforms]
    assert names[1:3] == ["RandomCrop", "RandomHorizontalFlip"] and dm.transforms()[0].transforms[1].padding == [4] * 4


def test_cifar100(tmp_path, skip_checksums):
    write_cifar(tmp_path, hundred=True)
    dm = setup_dm(name="cifar100", root=str(tmp_path), image_size=40)
    assert dm.num_classes == 100 and len(dm.class_names) == 100
    assert dm.val_set[0][0].shape == (3, 40, 40)


def test_cifar_missing_folder_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_cifar.CIFAR10, "download", _no_download)
    with pytest.raises(FileNotFoundError) as err:
        build_datamodule(DataConfig(name="cifar10", root=str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith(f"data.root={tmp_path}: CIFAR-10 not found")
    assert f"{tmp_path}/cifar-10-batches-py/{{data_batch_1," in msg and "test_batch" in msg
    assert "data.download=true" in msg


@pytest.mark.parametrize("kw, match", [
    ({}, "data.root is not set"),
    ({"root": "/no/such/dir"}, "data.root=/no/such/dir: no such folder"),
])
def test_cifar_root_errors(kw, match):
    with pytest.raises(FileNotFoundError, match=match):
        build_datamodule(DataConfig(name="cifar100", **kw))


def test_cifar_incomplete_and_corrupt(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").rename(folder / "test_batch.bak")
    with pytest.raises(FileNotFoundError, match="incomplete \\(test_batch missing\\)"):
        build_datamodule(DataConfig(name="cifar10", root=str(tmp_path)))
    (folder / "test_batch.bak").rename(folder / "test_batch")
    dm = build_datamodule(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(ValueError, match="checksum"):  # our fake files are not the official release
        dm.setup()
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="meta file"):
        build_datamodule(DataConfig(name="cifar10", root=str(tmp_path)))


def test_cifar_downloads_only_when_asked(tmp_path, monkeypatch):
    calls = []

    class Recorder(tv_cifar.CIFAR10):
        def __init__(self, root, train, download=False, **_):
            calls.append((root, train, download))

    dm = build_datamodule(DataConfig(name="cifar10", root=str(tmp_path / "new"), download=True))
    monkeypatch.setattr(dm, "dataset_cls", Recorder)
    dm.prepare_data()
    assert calls == [(str(tmp_path / "new"), True, True), (str(tmp_path / "new"), False, True)]


# ---- imagenet: an ImageFolder tree ---- #


def write_tree(root: Path, train=("n01", "n02"), val=("n01", "n02"), per_class=3) -> Path:
    for split, classes in (("train", train), ("val", val)):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = (200 * c, 50 * i, 100)
                Image.new("RGB", (40, 30), colour).save(root / split / cls / f"{i}.png")
    return root


def test_imagenet_tree(tmp_path):
    write_tree(tmp_path)
    dm = build_datamodule(DataConfig(name="imagenet", root=str(tmp_path), batch_size=4))
    assert dm.num_classes == 2 and dm.class_names == ["n01", "n02"]  # known before setup
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 0, 1]
    xt, _ = next(iter(dm.train_dataloader()))
    assert xt.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("size, resize", [(224, 256), (32, 37), (299, 342)])
def test_imagenet_eval_resize_scales_256_over_224(tmp_path, size, resize):
    write_tree(tmp_path, per_class=1)
    train, val = build_datamodule(DataConfig(name="imagenet", root=str(tmp_path), image_size=size)).transforms()
    assert val.transforms[0].size == [resize] and list(val.transforms[1].size) == [size, size]
    assert type(train.transforms[0]).__name__ == "RandomResizedCrop" and train.transforms[0].scale == (0.08, 1.0)


def test_imagenet_layout_errors(tmp_path):
    (tmp_path / "a" / "train" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path / 'a'}: no val/ folder"):
        build_datamodule(DataConfig(name="imagenet", root=str(tmp_path / "a")))
    loose = write_tree(tmp_path / "b", val=())
    (loose / "val").mkdir()
    Image.new("RGB", (8, 8)).save(loose / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match="loose in val/"):
        build_datamodule(DataConfig(name="imagenet", root=str(loose)))
    with pytest.raises(ValueError, match=r"only in train: \['n02'\]; only in val: \['n03'\]"):
        build_datamodule(DataConfig(name="imagenet", root=str(write_tree(tmp_path / "c", val=("n01", "n03")))))
    empty = write_tree(tmp_path / "d")
    (empty / "train" / "n03").mkdir()
    (empty / "val" / "n03").mkdir()
    dm = build_datamodule(DataConfig(name="imagenet", root=str(empty)))
    with pytest.raises(FileNotFoundError, match="n03"):
        dm.setup()
    with pytest.raises(ValueError, match="cannot be downloaded"):
        build_datamodule(DataConfig(name="imagenet", root=str(empty), download=True))


def test_cli_missing_cifar_folder_is_one_line(tmp_path, capsys):
    """Through the command line: exit code 2 and one ``error:`` line naming the path, no traceback."""
    pytest.importorskip("ablations.commands.train")
    from ablations.cli import main

    root = tmp_path / "cifar"
    assert main(["train", "data.name=cifar10", f"data.root={root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "error: data.root=" in err and f"{root}/cifar-10-batches-py/" in err
