"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits, upsampled.

1 797 real images (UCI optical digits) that ship inside scikit-learn, so the quickstart needs no
download and no folder. A fixed, seeded, stratified split stands in for the missing validation set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ablations.config import DataConfig
from ablations.data.base import ImageDataModule, TensorImageDataset

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
DEFAULT_CONFIG = DataConfig(name="digits")

GREY_LEVELS = 16.0  # load_digits pixels are counts 0..16 of "on" cells in a 4x4 block


class DigitsDataModule(ImageDataModule):
    """scikit-learn digits as ``(3, S, S)`` tensors, ``S = data.image_size`` (default 32).

    The 8x8 grey images are scaled to [0, 1], upsampled bilinearly to S x S once in ``setup`` and kept
    in memory; they are normalised with the mean/std of the training split and repeated to 3 channels.
    Training adds a random shift of up to S/16 pixels (half an original pixel), never a flip: a
    mirrored digit is another symbol. The stratified split is drawn with ``seed``: the same seed gives
    the same split, so an SE arm and its baseline at one seed see the same images.
    """

    name = "digits"
    # The split, and the normalisation computed from its training part, follow val_fraction and the seed.
    experiment_fields = ("image_size", "val_fraction", "seed")

    def __init__(self, cfg: DataConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.num_classes = 10
        self.class_names = [str(d) for d in range(10)]

    def load(self) -> tuple[Dataset, Dataset]:
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / GREY_LEVELS  # (N, 1, 8, 8)
        targets = torch.as_tensor(digits.target)
        size = self.cfg.image_size
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)

        train_idx, val_idx = train_test_split(
            torch.arange(len(targets)).numpy(), test_size=self.cfg.val_fraction,
            stratify=targets.numpy(), random_state=self.seed,
        )
        train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
        mean = images[train_idx].mean().item()
        std = images[train_idx].std().item()
        normalise = [v2.Normalize([mean], [std]), v2.Grayscale(num_output_channels=3)]
        shift = max(1, size // 16)
        train_tf = v2.Compose([v2.RandomCrop(size, padding=shift), *normalise])
        val_tf = v2.Compose(normalise)
        return (TensorImageDataset(images[train_idx], targets[train_idx], train_tf),
                TensorImageDataset(images[val_idx], targets[val_idx], val_tf))
