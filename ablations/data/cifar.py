"""CIFAR-10 and CIFAR-100 (paper Sec. 5, Tables 4 and 5) from torchvision's on-disk format.

The layout (``cifar-10-batches-py/``, ``cifar-100-python/``) and the file checksums are torchvision's;
the official test split serves as validation, as in the paper's tables.
"""
from __future__ import annotations

import pickle
from typing import ClassVar

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.transforms import v2

from ablations.config import DataConfig
from ablations.data.base import ImageDataModule, missing, require_root

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
CIFAR10_CONFIG = DataConfig(name="cifar10")
CIFAR100_CONFIG = DataConfig(name="cifar100")


class CIFARDataModule(ImageDataModule):
    """CIFAR as ``(3, S, S)`` tensors with the paper's augmentation (Sec. 5, after He et al. 2016).

    Train: zero-pad S/8 pixels (4 at S=32), random S x S crop, horizontal flip, per-channel mean/std
    normalisation; validation: normalisation only. ``S = data.image_size``; other sizes than 32 resize
    first. Nothing downloads unless ``data.download=true`` (then torchvision fetches the archive into
    ``data.root`` in ``prepare_data``).
    """

    dataset_cls: ClassVar[type] = CIFAR10
    title: ClassVar[str] = ""
    n_classes: ClassVar[int] = 0
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)

    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        tv = self.dataset_cls
        self.files = [name for name, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
        self.expected = f"{tv.base_folder}/{{{','.join(self.files)}}} (torchvision's format)"
        self.num_classes = self.n_classes
        if not cfg.download:
            self.class_names = self._check_layout()
        elif cfg.root is None:  # the folder itself may not exist yet: prepare_data creates it
            raise FileNotFoundError(f"data.root is not set: name the folder that torchvision should download "
                                    f"{self.title} into")

    def _check_layout(self) -> list[str]:
        """Fail before training if the folder or a file is missing; return the class names from the meta file."""
        hint = ", or set data.download=true to let torchvision download it"
        root = require_root(self.cfg, self.title, self.expected, hint)
        folder = root / self.dataset_cls.base_folder
        absent = missing([folder / name for name in self.files])
        if absent:
            what = "not found" if not folder.is_dir() else f"incomplete ({', '.join(absent)} missing)"
            raise FileNotFoundError(f"data.root={self.cfg.root}: {self.title} {what}; expected {root}/{self.expected}"
                                    + hint)
        meta = folder / self.dataset_cls.meta["filename"]
        try:
            with open(meta, "rb") as f:
                names = pickle.load(f, encoding="latin1")[self.dataset_cls.meta["key"]]
        except Exception as exc:  # any unpickling failure means the file is not CIFAR's meta
            raise ValueError(f"data.root={self.cfg.root}: {meta} is not {self.title}'s meta file ({exc!r})") from exc
        if len(names) != self.num_classes:
            raise ValueError(f"{meta}: {len(names)} class names, {self.title} has {self.num_classes}")
        return list(names)

    def prepare_data(self) -> None:
        if self.cfg.download:
            for train in (True, False):
                self.dataset_cls(self.cfg.root, train=train, download=True)

    def transforms(self) -> tuple[v2.Compose, v2.Compose]:
        """(train, eval) transforms from PIL images to normalised float tensors."""
        size = self.cfg.image_size
        resize = [v2.Resize(size)] if size != 32 else []
        tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        train = v2.Compose([v2.ToImage(), *resize, v2.RandomCrop(size, padding=size // 8),
                            v2.RandomHorizontalFlip(), *tail])
        return train, v2.Compose([v2.ToImage(), *resize, *tail])

    def load(self) -> tuple[Dataset, Dataset]:
        self.class_names = self._check_layout()
        train_tf, val_tf = self.transforms()
        try:
            train = self.dataset_cls(self.cfg.root, train=True, transform=train_tf)
            val = self.dataset_cls(self.cfg.root, train=False, transform=val_tf)
        except RuntimeError as exc:  # torchvision's integrity check: the md5 of a file does not match
            raise ValueError(f"data.root={self.cfg.root}: {self.title} files failed torchvision's checksum "
                             f"check (corrupted, or not the official release): {exc}") from exc
        return train, val


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 50 000 train / 10 000 test images, 10 classes."""

    name = "cifar10"
    dataset_cls = CIFAR10
    title = "CIFAR-10"
    n_classes = 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # over the training images

    def __init__(self, cfg: DataConfig = CIFAR10_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)  # only for the typed default that LightningCLI reads


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 50 000 train / 10 000 test images, 100 fine classes."""

    name = "cifar100"
    dataset_cls = CIFAR100
    title = "CIFAR-100"
    n_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

    def __init__(self, cfg: DataConfig = CIFAR100_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)  # only for the typed default that LightningCLI reads
