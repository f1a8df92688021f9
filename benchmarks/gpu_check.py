"""GPU path check: AMP, channels_last, DDP over NCCL and throughput ratios (docs/DESIGN.md, Performance).

Run on a machine with a CUDA GPU: ``python benchmarks/gpu_check.py [--batch 128] [--steps 20]``.
Prints, all measured in this one run (the ratios are what to compare across machines):
- train-step throughput of ResNet-50 and SE-ResNet-50 (paper layout) in fp32, bf16 autocast, and
  bf16 + channels_last, with the SE/no-SE step-time ratio (paper, 8 Titan X: 209/190 ms = 1.10);
- ours against timm's ``legacy_seresnet50`` (the released architecture) in the fastest setting;
- the Lightning loop (``SEClassifier`` + ``Trainer(strategy="ddp")``, so the NCCL process group is
  really initialised) against a plain PyTorch loop over the same model and synthetic batches.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn


def step_time(model: nn.Module, batch: int, steps: int, amp: bool, channels_last: bool, size: int = 224) -> float:
    """Mean seconds per SGD train step (forward, backward, update) after warm-up, timed with CUDA sync."""
    dev = torch.device("cuda")
    model = model.to(dev).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=dev)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    loss_fn = nn.CrossEntropyLoss()

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        one()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def lightning_vs_plain(batch: int, steps: int) -> tuple[float, float, str]:
    """Images/s of the Lightning loop and of a plain loop, same model, data and precision; and the backend."""
    import lightning.pytorch as pl
    import torch.distributed as dist

    from ablations.config import DataConfig, ExperimentConfig, TrainConfig
    from ablations.data import build_datamodule
    from ablations.training.module import SEClassifier
    from senet import model_config

    cfg = ExperimentConfig(
        model=model_config("se_resnet50"),
        data=DataConfig(name="synthetic", image_size=224, batch_size=batch, num_samples=batch * (steps + 5),
                        num_classes=1000, num_workers=4),
        train=TrainConfig(epochs=1, precision="bf16-mixed", channels_last=True, deterministic=False,
                          schedule="constant"),
    )
    dm = build_datamodule(cfg.data, seed=0)
    dm.setup("fit")
    backend = {}

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            if batch_idx == 5:
                torch.cuda.synchronize()
                self.t0 = time.perf_counter()
            backend["name"] = dist.get_backend() if dist.is_initialized() else "none"

        def on_train_epoch_end(self, trainer, pl_module):
            torch.cuda.synchronize()
            self.dt = time.perf_counter() - self.t0

    timer = Timer()
    module = SEClassifier(cfg.to_dict(), input_size=(3, 224, 224))
    trainer = pl.Trainer(accelerator="gpu", devices=1, strategy="ddp", precision="bf16-mixed", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, callbacks=[timer], enable_model_summary=False)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    lightning_ips = batch * (len(dm.train_dataloader()) - 5) / timer.dt

    model = SEClassifier(cfg.to_dict(), input_size=(3, 224, 224)).model.cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    n = 0
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = x.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.cuda(non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        n += x.shape[0] if i >= 5 else 0
    torch.cuda.synchronize()
    plain_ips = n / (time.perf_counter() - t0)
    return lightning_ips, plain_ips, backend.get("name", "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from senet import build_model

    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | batch {args.batch} at 224x224")
    print("| setting | ResNet-50 img/s | SE-ResNet-50 img/s | SE/no-SE step time |")
    print("|---|---|---|---|")
    for label, amp, cl in (("fp32", False, False), ("bf16 autocast", True, False), ("bf16 + channels_last", True, True)):
        t_base = step_time(build_model("resnet50"), args.batch, args.steps, amp, cl)
        t_se = step_time(build_model("se_resnet50"), args.batch, args.steps, amp, cl)
        print(f"| {label} | {args.batch / t_base:.0f} | {args.batch / t_se:.0f} | {t_se / t_base:.3f} |")
    try:
        import timm

        t_timm = step_time(timm.create_model("legacy_seresnet50"), args.batch, args.steps, True, True)
        t_ours = step_time(build_model("se_resnet50"), args.batch, args.steps, True, True)
        print(f"ours / timm legacy_seresnet50 step time (bf16 + channels_last): {t_ours / t_timm:.3f}")
    except ImportError:
        print("timm not installed: ours-vs-timm ratio skipped")
    lit, plain, backend = lightning_vs_plain(args.batch, args.steps)
    print(f"Lightning (strategy=ddp, backend {backend}) {lit:.0f} img/s vs plain loop {plain:.0f} img/s: "
          f"ratio {lit / plain:.3f}")


if __name__ == "__main__":
    main()
