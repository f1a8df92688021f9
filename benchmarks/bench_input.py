"""ImageNet input speed (paper Sec. 5.1 augmentation): the training loader end to end, per path and worker count.

Writes a seeded ImageFolder tree of real JPEGs (ImageNet-like: about 500x375 on average, quality 90) to a
temporary folder and times ``ImageNetDataModule``'s training loader as a run uses it: decode,
RandomResizedCrop 224, flip, normalise, collate, and the host-to-device copy (pinned) where a GPU exists.
Paths: ``pil`` (DataLoader workers decode with PIL and augment per sample), ``pil, uint8`` (the same, the
workers stopping at uint8 crops and the batch normalised after the copy: what a GPU run does; without a GPU
the main process normalises, inside the timing) and ``gpu`` (workers read bytes; the batch is decoded with
TorchCodec's nvJPEG and augmented per image on the GPU; a GPU only). A first table
times one image on one core: decoding alone with PIL and with TorchCodec, and the PIL path's whole
per-sample work, to say where the time goes. img/s per core divides by the cores the path keeps
busy (the workers, or the main process when there are none). ``--train`` (GPU) also feeds SE-ResNet-50 training
(bf16, channels_last) from each path and from one synthetic batch held on the device, the upper bound.

    python benchmarks/bench_input.py [--images 2000] [--batch 64] [--workers 0 1 2] [--batches 20]
                                     [--train] [--out results/input/cpu.md]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ablations.config import DataConfig
from ablations.data.base import auto_workers
from ablations.data.imagenet import ImageNetDataModule
from ablations.reporting.tables import invocation, publish


def make_tree(root: Path, images: int, classes: int = 10, seed: int = 0) -> float:
    """``root/{train,val}/c<k>/<i>.jpg``; returns the mean file size in kB. Smooth colour fields plus noise
    compress like photographs (tens of kB), unlike pure noise."""
    rng = np.random.default_rng(seed)
    sizes = []
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            w = int(np.clip(rng.normal(500, 80), 250, 800))
            h = int(np.clip(w * rng.uniform(0.6, 0.9), 200, 800))
            base = Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
            noisy = np.clip(np.asarray(base, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{i}.jpg"
            Image.fromarray(noisy).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1e3


#: The paths timed: (label, data.decoder, uint8 batches normalised after the transfer).
PATHS = (("pil", "pil", False), ("pil, uint8", "pil", True), ("gpu", "gpu", False))


def datamodule(root: Path, decoder: str, workers: int, batch: int, uint8: bool = False) -> ImageNetDataModule:
    dm = ImageNetDataModule(DataConfig(name="imagenet", root=str(root), image_size=224, batch_size=batch,
                                       num_workers=workers, decoder=decoder))
    dm.uint8_batches = uint8  # what a GPU trainer picks for the PIL path; here explicit, with or without one
    dm.setup()
    return dm


def device_batches(dm: ImageNetDataModule, device: torch.device, n: int):
    """Yield ``n`` training batches as a run gets them: through Lightning's transfer and after-transfer hooks."""
    dm.trainer = type("Fitting", (), {"training": True})()  # the hooks ask the trainer which augmentation to use
    it = iter(dm.train_dataloader())
    for _ in range(n):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            batch = next(it)
        yield dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, device, 0), 0)


def loader_rate(dm: ImageNetDataModule, device: torch.device, batches: int) -> float:
    """Images per second after the first batch (worker start-up excluded)."""
    gen = device_batches(dm, device, batches + 1)
    next(gen)
    start, seen = time.perf_counter(), 0
    for x, _ in gen:
        seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def decode_ms(root: Path, n: int = 200) -> dict[str, float]:
    """Milliseconds per image, one core: decoding alone (PIL, TorchCodec; both libjpeg-turbo), and the PIL
    path's whole per-sample work (decode + augmentation), to say where the loader's time goes."""
    files = sorted((root / "train").rglob("*.jpg"))[:n]
    data = [f.read_bytes() for f in files]
    out = {}
    start = time.perf_counter()
    for f in files:
        Image.open(f).convert("RGB")
    out["PIL decode"] = (time.perf_counter() - start) / len(files) * 1e3
    try:
        from torchcodec.decoders import decode_jpeg
    except ImportError:
        pass
    else:
        start = time.perf_counter()
        for d in data:
            decode_jpeg(d)
        out["TorchCodec decode (CPU)"] = (time.perf_counter() - start) / len(files) * 1e3
    tf = ImageNetDataModule(DataConfig(name="imagenet", root=str(root), image_size=224)).transforms()[0]
    start = time.perf_counter()
    for f in files:
        tf(Image.open(f).convert("RGB"))
    out["PIL path: decode + RandomResizedCrop 224 + flip + normalise"] = (time.perf_counter() - start) / len(files) * 1e3
    return out


def train_rate(source, device: torch.device, steps: int) -> float:
    """SE-ResNet-50 training img/s (bf16, channels_last) fed by ``source``: an iterator of (x, y) on ``device``."""
    from senet import build_model

    model = build_model("se_resnet50").to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen, start = 0, 0.0
    for i, (x, y) in enumerate(source):
        if i == 2:  # two warm-up steps
            torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(x)
        if i + 1 >= steps:
            break
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="training JPEGs to generate")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+",
                        help="worker counts to time (default: 0, 1, 2 and what data.num_workers: null picks here)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per path and worker count")
    parser.add_argument("--train", action="store_true", help="GPU only: SE-ResNet-50 training fed by each path")
    parser.add_argument("--out", type=Path, help="write the markdown report here too")
    args = parser.parse_args(argv)
    auto = auto_workers()
    args.workers = sorted(set(args.workers or (0, 1, 2, auto)))  # gpu_all.sh passes the auto count: time it once

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name() if cuda else "no GPU"
    lines = [(f"Machine: {os.cpu_count()} CPU cores, {where}; torch {torch.__version__}; batch {args.batch}, "
             f"{args.batches} timed batches after the first; data.num_workers: null picks {auto} workers "
              "per training process here."), ""]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        kb = make_tree(Path(tmp), args.images)
        lines += [f"Tree: {args.images} training JPEGs, mean {kb:.0f} kB (made in {time.perf_counter() - t0:.0f} s).", ""]
        torch.set_num_threads(1)
        lines += ["| one image, one core | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in decode_ms(Path(tmp)).items()]
        torch.set_num_threads(os.cpu_count() or 1)
        lines += ["", "| path | workers | img/s | img/s per core |", "|---|---|---|---|"]
        loaders = {}
        for label, decoder, uint8 in PATHS:
            for w in args.workers:
                try:
                    dm = datamodule(Path(tmp), decoder, w, args.batch, uint8)
                except (ImportError, ValueError) as exc:  # no TorchCodec: the PIL path alone
                    lines.append(f"| {label} | {w} | – ({exc}) | – |")
                    break
                rate = loader_rate(dm, device, args.batches)
                lines.append(f"| {label} | {w} | {rate:,.0f} | {rate / max(w, 1):,.0f} |")
                loaders[(label, w)] = (dm, rate)
                print(lines[-1], flush=True)
        if args.train and cuda:
            lines += ["", "| SE-ResNet-50 training fed by | img/s | share of synthetic |", "|---|---|---|"]
            x = torch.randn(args.batch, 3, 224, 224, device=device)
            y = torch.randint(0, 10, (args.batch,), device=device)
            steps = 3 * args.batches
            synthetic = train_rate(iter(lambda: (x, y), None), device, steps)
            lines.append(f"| synthetic batch on the GPU | {synthetic:,.0f} | 100 % |")
            for label, _, _ in PATHS:
                best = max((k for k in loaders if k[0] == label), key=lambda k: loaders[k][1], default=None)
                if best is not None:
                    rate = train_rate(device_batches(loaders[best][0], device, steps), device, steps)
                    lines.append(f"| {label}, {best[1]} workers | {rate:,.0f} | {100 * rate / synthetic:.0f} % |")
    text = "\n".join(lines) + "\n"
    publish(text, args.out, "ImageNet input speed", invocation("benchmarks/bench_input.py", argv))


if __name__ == "__main__":
    main()
