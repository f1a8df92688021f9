"""Lightning's training loop against a plain PyTorch loop: same model, data, optimizer (docs/DESIGN.md, Performance).

``SEClassifier`` under ``lightning.Trainer`` (its loss, metric updates, logging and hooks included) against
a hand-written loop of forward, cross-entropy, backward and SGD step over the same in-memory DataLoader. Both
skip their first epoch (warm-up) and time the rest; they alternate over several rounds and the median
ratio of each round is taken (the two share the machine's load at that moment). Target: ratio >= 0.95.

    python benchmarks/bench_lightning_vs_plain.py [--model se_resnet20_cifar] [--size 32] [--epochs 3] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ablations.config import ExperimentConfig
from ablations.training.module import SEClassifier
from senet import model_config


class EpochTimer(pl.Callback):
    """Seconds from the start of epoch 1 to the end of the last epoch (epoch 0 is the warm-up)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch >= 1:
            self.seconds = time.perf_counter() - self.start


def loader(n: int, size: int, batch: int, classes: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)


def lightning_images_per_s(cfg: ExperimentConfig, dl: DataLoader, epochs: int) -> float:
    torch.manual_seed(0)
    module = SEClassifier(cfg.to_dict(), input_size=(3, cfg.data.image_size, cfg.data.image_size))
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, deterministic="warn", callbacks=[timer])
    trainer.fit(module, train_dataloaders=dl)
    return (epochs - 1) * len(dl) * dl.batch_size / timer.seconds


def plain_images_per_s(cfg: ExperimentConfig, dl: DataLoader, epochs: int) -> float:
    torch.manual_seed(0)
    model = SEClassifier(cfg.to_dict()).model  # the same network, outside Lightning
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    for epoch in range(epochs):
        if epoch == 1:
            start = time.perf_counter()
        for x, y in dl:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        sched.step()
    return (epochs - 1) * len(dl) * dl.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="se_resnet20_cifar")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3, help="per measurement, the first one untimed")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    cfg = ExperimentConfig(model=model_config(args.model)).override(
        {"data.image_size": args.size, "data.batch_size": args.batch, "train.epochs": args.epochs,
         "wandb.mode": "disabled"})
    dl = loader(args.samples, args.size, args.batch, cfg.model.num_classes)
    lit, plain = [], []
    for i in range(args.rounds):
        # Alternate who goes first, and compare within a round: the load of a shared machine drifts slowly.
        if i % 2:
            plain.append(plain_images_per_s(cfg, dl, args.epochs))
            lit.append(lightning_images_per_s(cfg, dl, args.epochs))
        else:
            lit.append(lightning_images_per_s(cfg, dl, args.epochs))
            plain.append(plain_images_per_s(cfg, dl, args.epochs))
    ratio = statistics.median(a / b for a, b in zip(lit, plain))
    print(f"{args.model}, batch {args.batch} at {args.size}x{args.size}, {len(dl)} steps/epoch, "
          f"{args.epochs - 1} timed epochs x {args.rounds} rounds, {torch.get_num_threads()} CPU threads")
    print(f"  Lightning (SEClassifier + Trainer): {statistics.median(lit):7.1f} img/s   rounds: "
          + ", ".join(f"{v:.1f}" for v in lit))
    print(f"  plain PyTorch loop:                 {statistics.median(plain):7.1f} img/s   rounds: "
          + ", ".join(f"{v:.1f}" for v in plain))
    print(f"Lightning / plain throughput: {ratio:.3f} (median of the per-round ratios "
          + ", ".join(f"{a / b:.3f}" for a, b in zip(lit, plain)) + "; target >= 0.95)")


if __name__ == "__main__":
    main()
