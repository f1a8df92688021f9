"""data.decoder=gpu: the batch JPEG path keeps the PIL path's data and augmentation, and says clearly when it can't run.

Everything but nvJPEG runs on the CPU: the pipeline decodes with TorchCodec on whatever device the labels are
on, so these tests exercise the same code a GPU runs (the CUDA availability check is patched where a test
needs the module built). A small ImageFolder tree of real JPEGs is written per module.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from ablations.config import DataConfig, ExperimentConfig
from ablations.data import jpeg_batch
from ablations.data.imagenet import ImageNetDataModule

pytest.importorskip("torchcodec.decoders")
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 4, 2


def make_tree(root: Path, seed: int = 0) -> Path:
    """``root/{train,val}/class<k>/img<i>.jpg``: smooth random 80x60 RGB images, JPEG quality 90."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
                small.resize((80, 60), Image.BICUBIC).save(folder / f"img{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("jpegs"))


def datamodule(tree: Path, decoder: str, size: int = 32) -> ImageNetDataModule:
    cfg = DataConfig(name="imagenet", root=str(tree), image_size=size, batch_size=4, decoder=decoder)
    with mock.patch("torch.cuda.is_available", return_value=True):  # build the GPU path's module on a CPU
        dm = ImageNetDataModule(cfg)
    dm.setup()
    return dm


def batch_on_cpu(dm: ImageNetDataModule, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch through Lightning's two hooks, the device being the CPU."""
    batch = next(iter(loader))
    return dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0)


def test_the_config_field_names_its_values_and_its_dataset():
    with pytest.raises(ValueError, match=r"data.decoder='nvjpeg' is not allowed; choose one of: pil, gpu"):
        DataConfig(name="imagenet", decoder="nvjpeg")
    with pytest.raises(ValueError, match=r"data.decoder='gpu' is not allowed for data.name='digits'"):
        DataConfig(name="digits", decoder="gpu")
    pil = ExperimentConfig()
    assert "decoder" not in pil.semantic()["data"]  # the PIL path keeps the hashes of runs made before the field
    gpu = pil.override({"data.name": "imagenet", "data.decoder": "gpu"})
    assert gpu.semantic()["data"]["decoder"] == "gpu"
    assert ExperimentConfig.from_dict(gpu.to_dict()) == gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_the_gpu_path_without_a_gpu_stops_before_any_work(tree):
    with pytest.raises(ValueError, match=r"data.decoder='gpu' needs a CUDA GPU.*use data.decoder='pil'"):
        ImageNetDataModule(DataConfig(name="imagenet", root=str(tree), decoder="gpu"))


def test_without_torchcodec_the_error_says_how_to_install_it(tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec -> ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(ImportError, match=r"data.decoder=gpu needs TorchCodec: pip install -e '\.\[gpu-decode\]'"):
        datamodule(tree, "gpu")


def test_same_images_labels_and_class_order_as_the_pil_path(tree):
    gpu, pil = datamodule(tree, "gpu"), datamodule(tree, "pil")
    assert gpu.class_names == pil.class_names and gpu.num_classes == CLASSES
    for a, b in ((gpu.train_set, pil.train_set), (gpu.val_set, pil.val_set)):
        assert a.samples == b.samples and a.class_to_idx == b.class_to_idx
    x, y = batch_on_cpu(gpu, gpu.val_dataloader())
    xp, yp = next(iter(pil.val_dataloader()))
    assert x.shape == xp.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, yp)
    # Eval: the same resize (shorter side 256/224 of the crop) and centre crop; PIL's and torch's antialiased
    # resizes differ by about one intensity level (~0.017 after normalising by std ~0.23).
    assert (x - xp).abs().mean() < 1e-3 and (x - xp).abs().max() < 0.05


def test_training_crops_are_random_per_image_and_follow_the_seed(tree):
    dm = datamodule(tree, "gpu", size=24)
    same = [jpeg_batch.read_bytes(dm.train_set.samples[0][0])] * 4  # four copies of one image
    pipe = dm.pipeline(train=True, device=torch.device("cpu"))
    torch.manual_seed(0)
    first = pipe(same)
    assert first.shape == (4, 3, 24, 24)
    assert len({hashlib.sha1(t.numpy().tobytes()).hexdigest() for t in first}) == 4  # each copy its own crop
    torch.manual_seed(0)
    assert torch.equal(pipe(same), first)  # a resume restores the RNG, and with it the crops


def _shard(rank: int, world: int, init: str, dataset, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        # What Lightning puts in front of a map-style dataset under DDP: a DistributedSampler, shuffled and seeded.
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=0)
        seen = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler,
                                                 collate_fn=jpeg_batch.collate_encoded)
            seen.append([hashlib.sha1(e.numpy().tobytes()).hexdigest() for enc, _ in loader for e in enc])
        torch.save(seen, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_see_distinct_shards_that_cover_every_image_once_per_epoch(tree, tmp_path):
    dataset = datamodule(tree, "gpu").train_set
    every = sorted(hashlib.sha1(jpeg_batch.read_bytes(p).numpy().tobytes()).hexdigest() for p, _ in dataset.samples)
    assert len(set(every)) == CLASSES * TRAIN_PER_CLASS  # distinct files, so a hash names one image
    torch.multiprocessing.spawn(_shard, args=(2, f"file://{tmp_path / 'rdzv'}", dataset, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for epoch in (0, 1):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert not set(a) & set(b) and sorted(a + b) == every
    assert ranks[0][0] != ranks[0][1]  # reshuffled per epoch
