"""ImageNet (ILSVRC 2012) or any ImageFolder tree with ``train/`` and ``val/`` (paper Sec. 5.1).

The paper's augmentation: random-size crops (scale and aspect ratio, after Szegedy et al.) to 224 and
horizontal flips for training; evaluation resizes the shorter side to 256 and centre-crops 224.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from ablations.config import DataConfig
from ablations.data.base import ImageDataModule, require_root

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
DEFAULT_CONFIG = DataConfig(name="imagenet")

# torchvision's ImageNet statistics. The paper subtracts the mean RGB only; dividing by the std as well is
# our (documented) choice: every torchvision/timm ImageNet model does it, and BN makes the difference small.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE = 256 / 224  # shorter side before the centre crop, relative to the crop
LAYOUT = "{train,val}/<class>/<image> (an ImageFolder tree; val/ sorted into the same class folders as train/)"


def class_folders(split: Path) -> list[str]:
    """Sorted names of the sub-folders of ``split`` (ImageFolder's class order)."""
    return sorted(entry.name for entry in split.iterdir() if entry.is_dir())


class ImageNetDataModule(ImageDataModule):
    """An ImageFolder tree as ``(3, S, S)`` tensors, ``S = data.image_size`` (set it to 224 for the paper).

    Train: ``RandomResizedCrop(S)`` (area 8-100 %, aspect 3/4-4/3) and a horizontal flip. Eval: resize
    the shorter side to ``round(S * 256 / 224)`` and centre-crop ``S``. The class list (and so
    ``num_classes``) is read from ``train/`` in ``__init__``; ``val/`` must hold exactly the same class
    folders, or the labels of the two splits would not agree.
    """

    name = "imagenet"

    def __init__(self, cfg: DataConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        if cfg.download:
            raise ValueError("data.download=true is not allowed for imagenet: ImageNet cannot be downloaded "
                             "automatically; set data.root to an ImageFolder tree " + LAYOUT)
        self.root = require_root(cfg, "ImageNet", LAYOUT)
        self.class_names = self._check_layout()
        self.num_classes = len(self.class_names)

    def _check_layout(self) -> list[str]:
        """Class names of ``train/``; errors name the folder and the layout we expected."""
        where = f"data.root={self.cfg.root}"
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(f"{where}: no {split}/ folder; expected {self.root}/{LAYOUT}")
        train, val = class_folders(self.root / "train"), class_folders(self.root / "val")
        if not train:
            raise ValueError(f"{where}: train/ has no class folders; expected {self.root}/{LAYOUT}")
        if not val:
            loose = any(p.suffix.lower() in IMG_EXTENSIONS for p in (self.root / "val").iterdir())
            hint = (" (its images lie loose in val/: sort them into one folder per class, as ImageNet's "
                    "devkit ground truth says)" if loose else "")
            raise ValueError(f"{where}: val/ has no class folders{hint}; expected {self.root}/{LAYOUT}")
        if train != val:
            only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
            raise ValueError(f"{where}: train/ and val/ hold different class folders (only in train: "
                             f"{only_train[:5]}{' ...' if len(only_train) > 5 else ''}; only in val: "
                             f"{only_val[:5]}{' ...' if len(only_val) > 5 else ''}); expected {LAYOUT}")
        return train

    def transforms(self) -> tuple[v2.Compose, v2.Compose]:
        """(train, eval) transforms from PIL images to normalised float tensors."""
        size = self.cfg.image_size
        tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        train = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), *tail])
        val = v2.Compose([v2.Resize(round(size * EVAL_RESIZE), antialias=True), v2.CenterCrop(size), *tail])
        return train, val

    def load(self) -> tuple[Dataset, Dataset]:
        train_tf, val_tf = self.transforms()
        sets = []
        for split, tf in (("train", train_tf), ("val", val_tf)):
            try:
                sets.append(ImageFolder(str(self.root / split), transform=tf))
            except FileNotFoundError as exc:  # a class folder without a single image file
                raise FileNotFoundError(f"data.root={self.cfg.root}: {exc}; expected {self.root}/{LAYOUT}") from exc
        return sets[0], sets[1]
