"""JPEG decoding and the paper's augmentation for a whole batch on the GPU (paper Sec. 5.1; ``data.decoder=gpu``).

On a GPU, ResNet-50 trains faster than DataLoader workers decode JPEGs with PIL, so the ImageNet path can
decode on the device instead: the workers only read each file's bytes (cheap), and the batch is decoded in
one nvJPEG call and augmented there, image by image (each its own random crop and flip, as the PIL path).

Library: TorchCodec's ``decode_jpeg`` (``pip install -e '.[gpu-decode]'``). torchvision's own
``decode_jpeg(device="cuda")`` is deprecated since torchvision 0.29 in favour of it. NVIDIA DALI was the
other candidate (DeepLearningExamples feed their SE-ResNeXt trainer with it); we did not take it because it
brings its own file reader, sharding and loader (the ImageFolder class order, Lightning's DDP sampler and
resume would have to be re-done and kept equal), a CUDA-only wheel of several hundred MB per CUDA major, and
nothing that runs on a CPU to test it. Here the dataset is torchvision's ``ImageFolder`` with a bytes loader,
so labels, class order, the validation split and DDP sharding are the PIL path's by construction, and the
same code runs on the CPU (tests, the benchmark). Written by hand: no library does per-sample
``RandomResizedCrop`` on a list of differently sized decoded images on the device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

INSTALL_HINT = "pip install -e '.[gpu-decode]' (TorchCodec)"


def require_torchcodec() -> None:
    """Raise ``ImportError`` naming the install command when TorchCodec is missing."""
    try:
        import torchcodec.decoders  # noqa: F401
    except ImportError as exc:  # also raised when its native library does not load
        raise ImportError(f"data.decoder=gpu needs TorchCodec: {INSTALL_HINT} ({exc})") from exc


def read_bytes(path: str) -> torch.Tensor:
    """An ``ImageFolder`` loader that returns the file's encoded bytes (1-D uint8), decoded later per batch."""
    return read_file(path)


def collate_encoded(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(encoded images as a list, labels as a tensor): encoded JPEGs differ in length, so they are not stacked."""
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch], dtype=torch.long)


class JpegBatchPipeline:
    """Encoded JPEGs (on the CPU) -> a normalised ``(N, 3, S, S)`` float batch on ``device``.

    Train: RandomResizedCrop(S) with area 8-100 % and aspect 3/4-4/3 (torchvision's sampling), then a
    horizontal flip with probability 1/2, per image. Eval: resize the shorter side to ``eval_resize`` and
    centre-crop S. Both then scale to [0, 1] and normalise by ``mean``/``std``, as the PIL path's transforms.
    The random draws use torch's default generator (the CPU one), so ``seed_everything`` and a resume's
    restored RNG state give the same crops as the run they continue.
    """

    def __init__(self, size: int, *, train: bool, mean: Sequence[float], std: Sequence[float],
                 eval_resize: int | None = None, device: torch.device | str = "cpu") -> None:
        require_torchcodec()
        self.size, self.train, self.device = size, train, torch.device(device)
        self.eval_resize = eval_resize or size
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def decode(self, encoded: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Decode to RGB uint8 ``(3, H, W)`` tensors on the device (one nvJPEG batch call on a GPU)."""
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg(list(encoded), mode="RGB", device=self.device)

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        s = self.size
        if not self.train:
            return F.center_crop(F.resize(image, [self.eval_resize], antialias=True), [s, s])
        top, left, h, w = v2.RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        out = F.resized_crop(image, top, left, h, w, [s, s], antialias=True)
        return out.flip(-1) if torch.rand(1).item() < 0.5 else out

    def __call__(self, encoded: Sequence[torch.Tensor]) -> torch.Tensor:
        images = self.decode(encoded)
        batch = torch.stack([self._crop(img) for img in images])
        return (batch.float().div_(255.0) - self.mean) / self.std

