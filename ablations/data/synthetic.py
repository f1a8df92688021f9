"""Random tensors of any shape, for speed and memory benchmarks (no files, no learning signal)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ablations.config import DataConfig
from ablations.data.base import ImageDataModule, TensorImageDataset
from senet.tree import check_int

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
DEFAULT_CONFIG = DataConfig(name="synthetic")


class SyntheticDataModule(ImageDataModule):
    """``data.num_samples`` standard-normal images of shape ``(3, S, S)`` with uniform random labels.

    The validation split holds ``round(num_samples * val_fraction)`` more (at least one). Both are drawn
    from a generator seeded with ``seed``, so two runs with the same seed see the same tensors. Memory:
    ``num_samples * 3 * S * S * 4`` bytes (512 images at 224 px: 308 MB).
    """

    name = "synthetic"
    # Every tensor and label is drawn from the seed, in numbers set by these fields.
    experiment_fields = ("image_size", "val_fraction", "num_samples", "num_classes", "seed")

    def __init__(self, cfg: DataConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        for field in ("num_samples", "num_classes"):
            check_int(f"data.{field}", getattr(cfg, field))
        self.num_classes = cfg.num_classes
        self.class_names = [f"class_{i}" for i in range(cfg.num_classes)]

    def load(self) -> tuple[Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.seed)
        n_val = max(1, round(self.cfg.num_samples * self.cfg.val_fraction))

        def draw(n: int) -> TensorImageDataset:
            images = torch.randn((n, *self.input_size), generator=generator)
            labels = torch.randint(0, self.num_classes, (n,), generator=generator)
            return TensorImageDataset(images, labels)

        return draw(self.cfg.num_samples), draw(n_val)
