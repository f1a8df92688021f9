"""What every DataModule shares: the attributes the trainer reads, the loaders, layout errors.

Subclasses validate their folder in ``__init__`` (cheap existence checks, so a wrong path stops
before any training), download only in ``prepare_data`` and load in ``setup``. Each subclass types its
``cfg`` with a ``DataConfig`` default of its own ``name``, so ``LightningCLI(SEClassifier, CIFAR10DataModule)``
builds it from ``--data.cfg.root=...`` alone. ``trainer.test`` and ``trainer.predict`` read the held-out split:
every dataset here has exactly one (the official test split of CIFAR and Fashion-MNIST, ImageNet's val, the
seeded split of digits and synthetic), and it is the validation split as well; no third split is carved out.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ablations.config import DataConfig


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor ``(N, C, H, W)``, with a per-sample transform.

    ``torch.utils.data.TensorDataset`` has no transform hook; random augmentation has to run per sample
    (each image its own crop), so this small wrapper is written by hand.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform: Callable | None = None) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images, self.targets, self.transform = images, targets.long(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class ImageDataModule(pl.LightningDataModule):
    """Base class: ``num_classes``, ``input_size`` (C, H, W), ``class_names`` and the loaders.

    Args:
        cfg: the data section of the experiment.
        seed: seeds whatever the dataset draws itself (the digits split, the synthetic tensors);
            shuffling and augmentation follow the global seed that Lightning's ``seed_everything`` sets.
    """

    name: ClassVar[str] = ""
    # Whether samples are decoded from files (worth worker processes) or already tensors in memory.
    decodes_files: ClassVar[bool] = False
    # The DataConfig fields besides ``name`` that decide which images the held-out split holds, at what size and
    # normalisation: a trained network is evaluated only where they are the ones it was trained with
    # (``ablations.training.data_check``). ``seed`` is this module's ``seed`` argument, for datasets that draw their split.
    experiment_fields: ClassVar[tuple[str, ...]] = ("image_size",)
    # The DataLoader's collate function (None: torch's default, stacking tensors); the GPU-decoding path
    # batches encoded JPEGs of different lengths as a list.
    collate_fn: Callable | None = None

    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        super().__init__()
        if cfg.name != self.name:
            raise ValueError(f"data.name={cfg.name!r} given to the {self.name!r} DataModule")
        self.cfg = cfg
        self.seed = seed
        self.num_classes: int = 0
        self.class_names: list[str] = []
        # Every dataset is served as 3-channel squares so that any registered model takes it unchanged.
        self.input_size: tuple[int, int, int] = (3, cfg.image_size, cfg.image_size)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # ---- Lightning hooks ---- #

    def setup(self, stage: str | None = None) -> None:
        """Load both splits once (Lightning calls this for fit, validate, ...; later calls are no-ops)."""
        if self.train_set is None:
            self.train_set, self.val_set = self.load()

    def load(self) -> tuple[Dataset, Dataset]:
        """Build the (train, val) datasets; subclasses implement it."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The held-out split, in order: the same images as validation (see the module docstring)."""
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order, so prediction ``i`` belongs to ``test_set[i]`` (labels are passed along)."""
        return self._loader(self.test_set, shuffle=False)

    @property
    def test_set(self) -> Dataset | None:
        """What ``trainer.test`` and ``trainer.predict`` read; subclasses with a separate test split override it."""
        return self.val_set

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a DataLoader")
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=self.collate_fn,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    @property
    def num_workers(self) -> int:
        """The DataLoader workers: ``data.num_workers``, or ``auto_workers`` where it is ``null``."""
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        return auto_workers() if self.decodes_files else 0

    def summary(self) -> dict:
        """Plain facts for logs and result rows (split sizes are known after ``setup``)."""
        sizes = {k: len(v) for k, v in (("train_size", self.train_set), ("val_size", self.val_set)) if v is not None}
        return {"name": self.name, "root": self.cfg.root, "num_classes": self.num_classes,
                "input_size": list(self.input_size), "num_workers": self.num_workers, **sizes}


def local_devices() -> int:
    """Training processes on this node: torchrun's ``LOCAL_WORLD_SIZE``, SLURM's tasks per node, else the visible
    GPUs (Lightning's DDP starts one process per device), else 1."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "").split("(")[0]  # SLURM may write "4(x2)"
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, torch.cuda.device_count())


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity, which SLURM and containers narrow (all cores where the
    platform has no affinity, e.g. macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(cores: int | None = None, devices: int | None = None) -> int:
    """Workers per training process for a dataset decoded from files: this process's CPU cores (its affinity,
    which SLURM and containers narrow) shared among the node's training processes, less one for the process
    itself; at least 1. Decoding is the bottleneck (``results/input/cpu.md``: one core decodes ~120-150 ImageNet
    images/s), so every spare core goes to it."""
    cores = usable_cores() if cores is None else cores
    devices = local_devices() if devices is None else devices
    return max(1, cores // max(1, devices) - 1)


# ---- Folder checks: one message naming the path and the layout we expected ---- #


def require_root(cfg: DataConfig, title: str, expected: str, hint: str = "") -> Path:
    """``cfg.root`` as a Path; ``FileNotFoundError`` if it is unset or not a folder.

    ``hint`` ends the message (e.g. ", or set data.download=true ...").
    """
    if cfg.root is None:
        raise FileNotFoundError(f"data.root is not set: {title} needs the folder that holds {expected}{hint}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={cfg.root}: no such folder; {title} expects {root}/{expected}{hint}")
    return root


def missing(paths: list[Path]) -> list[str]:
    """Names of the paths that do not exist."""
    return [p.name for p in paths if not p.exists()]
