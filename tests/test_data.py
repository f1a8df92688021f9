"""DataModules (ablations.data): digits, synthetic and Fashion-MNIST: shapes, seeded splits, the IDX reader, folder
errors, no downloads (CIFAR and ImageNet folders: test_data_folders.py)."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from ablations.config import DATASETS, DataConfig
from ablations.data import DATAMODULES, build_datamodule, read_idx
from ablations.data import fashion_mnist as fm

DEBIAN_FMNIST = Path(fm.DEFAULT_ROOT)
ROOT = Path(__file__).resolve().parent.parent


def setup_dm(seed=0, **kw):
    dm = build_datamodule(DataConfig(**kw), seed=seed)
    dm.setup("fit")
    return dm


def test_registry_covers_every_configurable_dataset():
    assert set(DATAMODULES) == set(DATASETS)


# ---- digits: the embedded default ---- #


def test_digits_shapes_split_and_names():
    dm = setup_dm(name="digits", batch_size=16)
    assert dm.num_classes == 10 and dm.class_names == [str(i) for i in range(10)]
    assert dm.input_size == (3, 32, 32)
    assert (len(dm.train_set), len(dm.val_set)) == (1437, 360)  # 1 797 images, 20 % held out
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey repeated to 3 channels
    counts = torch.bincount(dm.val_set.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit


def test_digits_split_is_seeded():
    a, b = build_datamodule(DataConfig(), seed=0), build_datamodule(DataConfig(), seed=0)
    c = build_datamodule(DataConfig(), seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)


def test_digits_normalised_and_val_deterministic():
    dm = setup_dm(name="digits", image_size=16)
    val = torch.stack([dm.val_set[i][0] for i in range(len(dm.val_set))])
    assert val.shape[1:] == (3, 16, 16)
    assert abs(val.mean()) < 0.1 and 0.9 < val.std() < 1.1  # normalised with the train split's statistics
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    torch.manual_seed(0)
    draws = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # random shifts in training


def test_digits_labels_match_images():
    """A linear classifier on the served tensors must reach the accuracy the digits are known for."""
    from sklearn.linear_model import LogisticRegression

    dm = setup_dm(name="digits", image_size=8)  # the native size: 64 features keep the fit fast
    train, val = dm.train_set, dm.val_set  # the stored images, before augmentation
    clf = LogisticRegression(max_iter=500).fit(train.images.flatten(1).numpy(), train.targets.numpy())
    assert clf.score(val.images.flatten(1).numpy(), val.targets.numpy()) > 0.9


def test_datamodule_runs_in_a_lightning_trainer(tmp_path):
    class Linear(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 10)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.fc(x.flatten(1)), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.fc(x.flatten(1)), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = build_datamodule(DataConfig(name="digits", image_size=16, batch_size=32))
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Linear(), datamodule=dm)
    assert trainer.state.finished and len(dm.train_set) == 1437


def test_loader_before_setup_is_an_error():
    with pytest.raises(RuntimeError, match="setup"):
        build_datamodule(DataConfig()).train_dataloader()


# ---- synthetic ---- #


def test_synthetic_shapes_and_seed():
    cfg = DataConfig(name="synthetic", image_size=16, num_samples=10, num_classes=3, batch_size=4)
    dm, again, other = (build_datamodule(cfg, seed=s) for s in (5, 5, 6))
    for d in (dm, again, other):
        d.setup()
    assert dm.input_size == (3, 16, 16) and dm.num_classes == 3 and len(dm.class_names) == 3
    assert (len(dm.train_set), len(dm.val_set)) == (10, 2)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and int(y.max()) < 3
    assert torch.equal(dm.train_set.images, again.train_set.images)
    assert not torch.equal(dm.train_set.images, other.train_set.images)


def test_synthetic_rejects_empty():
    with pytest.raises(ValueError, match="data.num_samples=0"):
        build_datamodule(DataConfig(name="synthetic", num_samples=0))


# ---- fashion_mnist: IDX files, Debian's layout or torchvision's ---- #


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(folder: Path, n_train=12, n_test=6, gz=True) -> dict:
    """Tiny Fashion-MNIST in the original file names; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[split] = (rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)
        for kind, arr in zip(("images-idx3", "labels-idx1"), arrays[split]):
            name = f"{split}-{kind}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


def test_fashion_debian_layout(tmp_path):
    arrays = write_fashion(tmp_path)
    dm = setup_dm(name="fashion_mnist", root=str(tmp_path), batch_size=5)
    assert dm.num_classes == 10 and dm.class_names[0] == "T-shirt/top"
    assert (len(dm.train_set), len(dm.val_set)) == (12, 6)
    assert torch.equal(dm.train_set.images[:, 0], torch.as_tensor(arrays["train"][0], dtype=torch.uint8))
    assert dm.val_set.targets.tolist() == arrays["t10k"][1].tolist()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4]
    # eval: scale to [0, 1], resize, normalise with Fashion-MNIST's statistics
    assert -fm.MEAN / fm.STD - 1e-4 <= float(x.min()) and float(x.max()) <= (1 - fm.MEAN) / fm.STD + 1e-4


def test_fashion_torchvision_layout_uncompressed(tmp_path):
    write_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)
    dm = setup_dm(name="fashion_mnist", root=str(tmp_path), image_size=28)
    assert dm.val_set[0][0].shape == (3, 28, 28)


def test_read_idx_agrees_with_torchvision(tmp_path):
    arrays = write_fashion(tmp_path, gz=False)
    for name, reader in (("train-images-idx3-ubyte", read_image_file), ("train-labels-idx1-ubyte", read_label_file)):
        ours = read_idx(tmp_path / name)
        assert torch.equal(ours.long(), reader(str(tmp_path / name)).long())
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == arrays["t10k"][1].tolist()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-7], "header promises shape"),
    (lambda b: b"\x00\x00\x0d\x03" + b[4:], "not an unsigned-byte IDX"),
    (lambda b: b"", "magic bytes missing"),
])
def test_fashion_malformed_file(tmp_path, damage, match):
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    dm = build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    with pytest.raises(ValueError, match=match) as err:
        dm.setup()
    assert str(path) in str(err.value)


def test_fashion_label_mismatch(tmp_path):
    write_fashion(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([3, 11])))
    with pytest.raises(ValueError, match="labels in 0..9"):
        setup_dm(name="fashion_mnist", root=str(tmp_path))


def test_fashion_missing_folder_names_path_layout_and_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "FashionMNIST", _no_download)
    with pytest.raises(FileNotFoundError) as err:
        build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path / "none"))).prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "none") in msg and "t10k-images-idx3-ubyte" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data.download=true" in msg


def _no_download(*args, **kwargs):
    raise AssertionError("nothing may download unless data.download is set")


def test_fashion_downloads_only_when_asked_and_absent(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fm, "FashionMNIST", lambda root, train, download: calls.append((root, train, download)))
    build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path), download=True)).prepare_data()
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    write_fashion(tmp_path)
    calls.clear()
    build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path), download=True)).prepare_data()
    assert calls == []  # already there


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:lbfgs failed to converge")
def test_fashion_real_debian_package():
    """The 70 000 real images: split sizes, balanced classes, and labels that a linear model can learn. Skipped
    without Debian's package, except in CI (``.ci/run`` sets ``CI`` and installs it): there a skip would hide the
    one real-data path."""
    from sklearn.linear_model import LogisticRegression

    if fm.find_files(DEBIAN_FMNIST) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{DEBIAN_FMNIST} is empty in CI: .ci/apt-packages.txt must list dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist")

    dm = setup_dm(name="fashion_mnist", image_size=28)
    assert (len(dm.train_set), len(dm.val_set)) == (60_000, 10_000)
    assert torch.bincount(dm.train_set.targets).tolist() == [6000] * 10
    x = dm.train_set.images[:3000].flatten(1).float().numpy() / 255
    clf = LogisticRegression(max_iter=200).fit(x, dm.train_set.targets[:3000].numpy())
    val = dm.val_set.images[:2000].flatten(1).float().numpy() / 255
    assert clf.score(val, dm.val_set.targets[:2000].numpy()) > 0.75


def test_ci_installs_fashion_mnist_and_says_it_is_ci():
    ci = ROOT / ".ci"
    packages = [ln.strip() for ln in (ci / "apt-packages.txt").read_text().splitlines() if not ln.startswith("#")]
    assert "dataset-fashion-mnist" in packages and "iproute2" in packages  # the multi-host tests need `ip` too
    assert "export CI=true" in (ci / "run").read_text().splitlines()  # turns the real-data skip into a failure
