"""Under LightningCLI the LR schedule follows ``--model.config.train.epochs``, not ``--trainer.max_epochs``.

A fit stopped by ``max_epochs`` half-way through ``train.epochs`` has run half of the cosine schedule: the
expected learning rates come from the cosine formula over ``train.epochs``, not from the scheduler code.
"""
from __future__ import annotations

import math
import sys

import lightning.pytorch as pl
import pytest
from lightning.pytorch.cli import LightningCLI

from ablations.data import DigitsDataModule
from ablations.training.module import SEClassifier

pytestmark = pytest.mark.usefixtures("one_thread_module")

LR, EPOCHS, MAX_EPOCHS = 0.05, 4, 2


class EpochLRs(pl.Callback):
    """The learning rate each epoch trains with, and the one left after the last epoch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def cosine(epoch: int, total: int) -> float:
    """CosineAnnealingLR's closed form: lr * (1 + cos(pi * epoch / total)) / 2."""
    return LR * (1 + math.cos(math.pi * epoch / total)) / 2


def test_the_cosine_schedule_spans_train_epochs_when_max_epochs_stops_the_fit_early(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning_cli"])  # LightningCLI warns when pytest's own argv is there too
    record = EpochLRs()
    cli = LightningCLI(SEClassifier, DigitsDataModule, trainer_defaults={"callbacks": [record]}, args=[
        "fit", "--data.cfg.image_size=8", "--data.cfg.batch_size=64", "--model.config.model.arch=resnet20_cifar",
        "--model.config.model.se.reduction=4", f"--model.config.train.lr={LR}",
        "--model.config.train.schedule=cosine", f"--model.config.train.epochs={EPOCHS}",
        f"--trainer.max_epochs={MAX_EPOCHS}", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
        "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.current_epoch == MAX_EPOCHS and cli.model.cfg.train.epochs == EPOCHS
    expected = [cosine(e, EPOCHS) for e in range(MAX_EPOCHS + 1)]  # 0.05, 0.0427, 0.025
    assert record.lrs == pytest.approx(expected, rel=1e-9)
    # A schedule over max_epochs would end at 0 here instead of LR / 2, and at LR / 2 after one epoch.
    (config,) = cli.trainer.lr_scheduler_configs
    assert config.scheduler.T_max == EPOCHS and config.scheduler.last_epoch == MAX_EPOCHS
