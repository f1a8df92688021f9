"""Fashion-MNIST (Xiao et al. 2017): 70 000 real 28x28 grey product images in 10 classes.

Read from the IDX files that Debian's ``dataset-fashion-mnist`` package installs (gzipped, flat in
``/usr/share/datasets/fashion-mnist``) or from torchvision's layout (``<root>/FashionMNIST/raw``).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

from ablations.config import DataConfig
from ablations.data.base import ImageDataModule, TensorImageDataset

# The constructor's default (frozen, so one shared instance is safe): what LightningCLI builds without --data.cfg.
DEFAULT_CONFIG = DataConfig(name="fashion_mnist")

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
APT_HINT = "apt-get install dataset-fashion-mnist"
FILES = {  # split -> (images, labels), the names of the original release
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = tuple(FashionMNIST.classes)  # "T-shirt/top", "Trouser", ...
MEAN, STD = 0.2860, 0.3530  # over the 60 000 training images, pixels scaled to [0, 1]


def read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX file (LeCun's MNIST format), plain or gzipped, as a uint8 tensor.

    Written by hand because torchvision's ``read_sn3_pascalvincent_tensor`` opens plain files only
    (Debian ships the files gzipped) and checks the header with ``assert``. Raises ``ValueError``
    naming the file when the header or the size is wrong.
    """
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot be read as an IDX file ({exc})") from exc
    # magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic bytes {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else None
    count = int(torch.tensor(shape).prod()) if shape else -1
    if shape is None or len(data) - header != count:
        raise ValueError(f"{path}: the header promises shape {shape} but the file holds {len(data) - header} bytes")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)


def find_files(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four files under ``root`` (Debian's flat layout) or ``root/FashionMNIST/raw``; ``None`` if absent."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for split, names in FILES.items():
            paths = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
            if None in paths:
                break
            found[split] = tuple(paths)
        else:
            return found
    return None


def load_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)``, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected images of shape (N, 28, 28), found {tuple(images.shape)}")
    top = int(labels.max()) if labels.numel() else 0
    if labels.ndim != 1 or len(labels) != len(images) or top > 9:
        raise ValueError(f"{labels_path}: expected {len(images)} labels in 0..9 to match {images_path.name}, "
                         f"found shape {tuple(labels.shape)} with maximum {top}")
    return images.unsqueeze(1), labels


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST as ``(3, S, S)`` tensors; the official 10 000-image test split serves as validation.

    ``data.root`` defaults to Debian's folder. With ``data.download=true`` torchvision downloads the
    files into ``<root>/FashionMNIST/raw`` (only then). Augmentation (the paper has none for this
    dataset; ours follows its CIFAR recipe, Sec. 5): pad S/8 and random-crop S, horizontal flip.
    """

    name = "fashion_mnist"

    def __init__(self, cfg: DataConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.num_classes = 10
        self.class_names = list(CLASSES)
        self.root = Path(cfg.root or DEFAULT_ROOT).expanduser()
        if not cfg.download:
            self._locate()  # fail now, before any training, if the files are not there

    def _locate(self) -> dict[str, tuple[Path, Path]]:
        files = find_files(self.root)
        if files is None:
            names = "{" + ",".join(n for pair in FILES.values() for n in pair) + "}[.gz]"
            raise FileNotFoundError(
                f"data.root={self.root}: Fashion-MNIST not found; expected {self.root}/{names} "
                f"(Debian's layout: `{APT_HINT}` puts them in {DEFAULT_ROOT}) or {self.root}/FashionMNIST/raw/"
                f"{names} (torchvision's), or set data.download=true to let torchvision download them")
        return files

    def prepare_data(self) -> None:
        if self.cfg.download and find_files(self.root) is None:
            for train in (True, False):
                FashionMNIST(str(self.root), train=train, download=True)

    def load(self) -> tuple[Dataset, Dataset]:
        files = self._locate()
        (train_x, train_y), (val_x, val_y) = load_split(*files["train"]), load_split(*files["test"])
        size = self.cfg.image_size
        to_float = [v2.ToDtype(torch.float32, scale=True)] + ([v2.Resize(size)] if size != 28 else [])
        normalise = [v2.Normalize([MEAN], [STD]), v2.Grayscale(num_output_channels=3)]
        train_tf = v2.Compose([*to_float, v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip(),
                               *normalise])
        val_tf = v2.Compose([*to_float, *normalise])
        return TensorImageDataset(train_x, train_y, train_tf), TensorImageDataset(val_x, val_y, val_tf)
