"""``LightningCLI(SEClassifier, <DataModule>)`` builds both from typed flags and trains (issue 13), and so does
``python -m ablations.commands.lightning_cli`` with the data class named by ``--data``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from ablations.commands.lightning_cli import main
from ablations.data import DigitsDataModule
from ablations.training.metrics import TEST_LOSS, TEST_TOP1, TEST_TOP5, VAL_LOSS, VAL_TOP1, VAL_TOP5
from ablations.training.module import SEClassifier

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI warns when ``args`` come with a command line as well (pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["lightning_cli"])


def tiny_trainer(root: Path) -> list[str]:
    return ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=2", "--trainer.logger=false", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={root}"]


def test_lightning_cli_fits_digits_and_the_checkpoint_reloads(tmp_path):
    cli = LightningCLI(SEClassifier, DigitsDataModule, args=[
        "fit", "--data.cfg.image_size=8", "--data.cfg.batch_size=32", "--model.config.model.arch=resnet20_cifar",
        "--model.config.model.se.reduction=4", "--model.config.train.lr=0.05", *tiny_trainer(tmp_path)])
    assert cli.trainer.current_epoch == 1  # one epoch done
    final = {name: float(value) for name, value in cli.trainer.callback_metrics.items()}
    ckpts = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 1 and (tmp_path / "config.yaml").is_file()  # LightningCLI's own record of the flags
    module = SEClassifier.load_from_checkpoint(ckpts[0])
    assert module.cfg.train.lr == 0.05 and module.cfg.model.se.reduction == 4
    assert module.cfg.data.image_size == 8  # the datamodule's flags, not the model config's default 32
    assert torch.load(ckpts[0], weights_only=True)["hyper_parameters"]["config"]["train"]["lr"] == 0.05
    # ``test`` of that checkpoint reads the split validation read (same batches): the final validation numbers.
    tested = LightningCLI(SEClassifier, DigitsDataModule, args=[
        "test", "--data.cfg.image_size=8", "--data.cfg.batch_size=32", f"--ckpt_path={ckpts[0]}",
        *tiny_trainer(tmp_path / "test")]).trainer.callback_metrics
    assert float(tested[TEST_TOP1]) == final[VAL_TOP1] and float(tested[TEST_TOP5]) == final[VAL_TOP5]
    assert float(tested[TEST_LOSS]) == pytest.approx(final[VAL_LOSS], rel=1e-6)  # continuous: the same weights


def test_module_entry_point_takes_any_datamodule_and_tests_a_checkpoint(tmp_path, capsys):
    data = ["--data=SyntheticDataModule", "--data.cfg.image_size=8", "--data.cfg.num_samples=32",
            "--data.cfg.batch_size=16", "--data.cfg.num_classes=3", "--model.config.model.num_classes=3"]
    fit = main(["fit", *data, *tiny_trainer(tmp_path / "fit")])
    final = {name: float(value) for name, value in fit.trainer.callback_metrics.items()}
    path = fit.trainer.checkpoint_callback.best_model_path
    tested = main(["test", *data, f"--ckpt_path={path}", *tiny_trainer(tmp_path / "test")]).trainer.callback_metrics
    assert set(tested) >= {TEST_LOSS, TEST_TOP1, TEST_TOP5}
    assert float(tested[TEST_TOP1]) == final[VAL_TOP1] and float(tested[TEST_LOSS]) == pytest.approx(
        final[VAL_LOSS], rel=1e-6)
    with pytest.raises(SystemExit):  # --data has no default: it must be named
        main(["fit", *tiny_trainer(tmp_path / "none")])
    assert "fit.data" in capsys.readouterr().err


def test_the_data_sets_the_networks_classes_and_channels_as_in_train(tmp_path):
    """The one resolve step's rule under Lightning's CLI: ``model.num_classes``/``in_chans`` not written take the
    datamodule's (4 synthetic classes, whatever the model's default of 10 says); a written one that disagrees is
    refused in one line naming the flag."""
    data = ["--data=SyntheticDataModule", "--data.cfg.image_size=8", "--data.cfg.num_samples=32",
            "--data.cfg.batch_size=16", "--data.cfg.num_classes=4"]
    fit = main(["fit", *data, *tiny_trainer(tmp_path / "fit")])
    assert fit.trainer.current_epoch == 1
    assert (fit.model.cfg.model.num_classes, fit.model.cfg.model.in_chans) == (4, 3)
    assert fit.model.model.get_classifier().out_features == 4
    recorded = torch.load(fit.trainer.checkpoint_callback.best_model_path, weights_only=True)["hyper_parameters"]
    assert recorded["config"]["model"]["num_classes"] == 4
    with pytest.raises(ValueError, match=r"^model.num_classes=5 but the 'synthetic' datamodule has 4 classes; set "
                                         r"model.num_classes=4 \(--model.config.model.num_classes\)$"):
        main(["fit", *data, "--model.config.model.num_classes=5", *tiny_trainer(tmp_path / "written")])
