"""ImageNet (ILSVRC 2012) or any ImageFolder tree with ``train/`` and ``val/`` (paper Sec. 5.1).

The paper's augmentation: random-size crops (scale and aspect ratio, after Szegedy et al.) to 224 and
horizontal flips for training; evaluation resizes the shorter side to 256 and centre-crops 224. With
``data.decoder=gpu`` the same augmentation runs on the GPU for the whole batch (``jpeg_batch``): the workers
only read bytes, and Lightning's batch hooks decode and augment after the labels reach the device. With the
PIL path on a GPU the workers stop at uint8 crops and the batch is normalised on the device, after the copy:
a quarter of the bytes to collate, pin and copy, and ~0.5 ms less per image on a worker core (FFCV and DALI
do the same). Same functions (torchvision's ``to_dtype`` and ``normalize``), so the same numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from ablations.config import DataConfig
from ablations.data import jpeg_batch
from ablations.data.base import ImageDataModule, require_root

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
DEFAULT_CONFIG = DataConfig(name="imagenet")

# torchvision's ImageNet statistics. The paper subtracts the mean RGB only; dividing by the std as well is
# our (documented) choice: every torchvision/timm ImageNet model does it, and BN makes the difference small.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALISE = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
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
    decodes_files = True

    def __init__(self, cfg: DataConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        if cfg.download:
            raise ValueError("data.download=true is not allowed for imagenet: ImageNet cannot be downloaded "
                             "automatically; set data.root to an ImageFolder tree " + LAYOUT)
        self.root = require_root(cfg, "ImageNet", LAYOUT)
        self.class_names = self._check_layout()
        self.num_classes = len(self.class_names)
        self._pipelines: dict[bool, jpeg_batch.JpegBatchPipeline] = {}
        #: PIL path: uint8 batches normalised after the transfer; ``None`` decides by the trainer's device (a GPU).
        self.uint8_batches: bool | None = None
        if cfg.decoder == "gpu":
            jpeg_batch.require_torchcodec()
            if not torch.cuda.is_available():
                raise ValueError("data.decoder='gpu' needs a CUDA GPU and this machine has none "
                                 "(torch.cuda.is_available() is False); use data.decoder='pil'")
            self.collate_fn = jpeg_batch.collate_encoded

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

    def transforms(self, normalise: bool = True) -> tuple[v2.Compose, v2.Compose]:
        """(train, eval) transforms from PIL images to normalised float tensors (``normalise=False``: uint8 crops)."""
        size = self.cfg.image_size
        tail = [v2.ToImage(), *(NORMALISE.transforms if normalise else ())]
        train = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), *tail])
        val = v2.Compose([v2.Resize(round(size * EVAL_RESIZE), antialias=True), v2.CenterCrop(size), *tail])
        return train, val

    def load(self) -> tuple[Dataset, Dataset]:
        gpu = self.cfg.decoder == "gpu"
        # The GPU path: the same ImageFolder (same samples, labels and class order), loading bytes only.
        train_tf, val_tf = (None, None) if gpu else self.transforms()
        loader = {"loader": jpeg_batch.read_bytes} if gpu else {}
        sets = []
        for split, tf in (("train", train_tf), ("val", val_tf)):
            try:
                sets.append(ImageFolder(str(self.root / split), transform=tf, **loader))
            except FileNotFoundError as exc:  # a class folder without a single image file
                raise FileNotFoundError(f"data.root={self.cfg.root}: {exc}; expected {self.root}/{LAYOUT}") from exc
        return sets[0], sets[1]

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is not None and self.cfg.decoder == "pil":  # uint8 or float crops: decided once a trainer runs
            train, val = self.transforms(normalise=not self._normalise_on_device())
            dataset.transform = train if dataset is self.train_set else val
        return super()._loader(dataset, shuffle)

    def _normalise_on_device(self) -> bool:
        if self.uint8_batches is not None:
            return self.uint8_batches
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return device is not None and device.type == "cuda"

    # ---- Lightning's batch hooks: data.decoder=gpu, and uint8 batches of the PIL path ---- #

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Labels to the device; encoded JPEGs stay on the CPU, where the decoder reads them."""
        if self.cfg.decoder != "gpu":
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        encoded, labels = batch
        return encoded, labels.to(device, non_blocking=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """GPU path: decode and augment the batch on the labels' device (training crops while fitting, else eval
        crops). PIL path: normalise uint8 batches where they arrived; float batches pass through."""
        if self.cfg.decoder != "gpu":
            images, labels = batch
            return (NORMALISE(images) if images.dtype == torch.uint8 else images), labels
        encoded, labels = batch
        train = bool(self.trainer is not None and self.trainer.training)
        return self.pipeline(train, labels.device)(encoded), labels

    def pipeline(self, train: bool, device: torch.device) -> jpeg_batch.JpegBatchPipeline:
        """The (cached) batch pipeline with this module's augmentation for ``train`` or eval."""
        if train not in self._pipelines:
            size = self.cfg.image_size
            self._pipelines[train] = jpeg_batch.JpegBatchPipeline(
                size, train=train, mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_resize=round(size * EVAL_RESIZE),
                device=device)
        return self._pipelines[train]
