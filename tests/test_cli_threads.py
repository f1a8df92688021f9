"""``python -m ablations.commands.lightning_cli`` applies ``--model.config.train.threads`` and refuses the Trainer's fields."""
from __future__ import annotations

import sys

import lightning.pytorch as pl
import pytest
import torch

from ablations.commands.lightning_cli import TRAINER_FIELDS, main


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI warns when ``args`` come with a command line as well (pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["lightning_cli"])


@pytest.fixture
def restored_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


class ThreadProbe(pl.Callback):
    """torch's intra-op thread count as each training step sees it."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_start(self, *args) -> None:
        self.seen.append(torch.get_num_threads())


def fit_args(tmp_path, *extra: str) -> list[str]:
    """Flags for main(..., run=False): no subcommand; the test fits the Trainer itself."""
    return ["--data=DigitsDataModule", "--data.cfg.image_size=8", "--data.cfg.batch_size=32",
            "--model.config.model.arch=resnet20_cifar", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.logger=false", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={tmp_path}", *extra]


def test_train_threads_takes_effect_in_training_steps(tmp_path, restored_threads):
    wanted = restored_threads + 1  # not the process's count, so a flag that does nothing fails
    cli = main(fit_args(tmp_path, f"--model.config.train.threads={wanted}"), run=False)
    probe = ThreadProbe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert probe.seen == [wanted, wanted]


@pytest.mark.parametrize("field", sorted(TRAINER_FIELDS))
def test_trainer_fields_under_the_module_config_are_refused(tmp_path, field, restored_threads):
    value = {"precision": "bf16-mixed", "accelerator": "cpu", "strategy": "ddp", "deterministic": "false"}.get(field, "2")
    with pytest.raises(ValueError, match=rf"model\.config\.train\.{field} is not applied under LightningCLI .*"
                                         rf"--trainer\.{TRAINER_FIELDS[field]}="):
        main(fit_args(tmp_path, f"--model.config.train.{field}={value}"), run=False)
