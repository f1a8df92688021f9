"""A checkpoint is evaluated on the experiment it records (issue 20): fit at 16 px, then LightningCLI ``test`` as the
README writes it, ``trainer.test``/``validate``/``predict`` in Python, and the one line that refuses or adapts."""
from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ablations.commands.lightning_cli import main
from ablations.config import DataConfig, ExperimentConfig
from ablations.data import DigitsDataModule, SyntheticDataModule
from ablations.training.data_check import adapt_to_record, mismatch, model_mismatch
from ablations.training.metrics import TEST_TOP1
from ablations.training.module import SEClassifier

pytestmark = pytest.mark.usefixtures("one_thread_module")
BATCHES = 4  # per loop: enough for a network a little better than chance, on a CPU shared with other work


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """LightningCLI warns when ``args`` come with a command line as well (pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["lightning_cli"])


def flags(root: Path) -> list[str]:
    return ["--trainer.max_epochs=1", f"--trainer.limit_train_batches={BATCHES * 2}",
            f"--trainer.limit_val_batches={BATCHES}", f"--trainer.limit_test_batches={BATCHES}",
            f"--trainer.limit_predict_batches={BATCHES}", "--trainer.logger=false", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={root}"]


def trainer(root: Path) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=root, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=BATCHES, limit_test_batches=BATCHES,
                      limit_predict_batches=BATCHES)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """The README's ``fit`` at 16 px, one short epoch: the checkpoint's path."""
    root = tmp_path_factory.mktemp("fit")
    cli = main(["fit", "--data=DigitsDataModule", "--data.cfg.image_size=16", "--model.config.model.arch=resnet20_cifar",
                "--model.config.model.se.reduction=8", "--model.config.train.lr=0.05", *flags(root)])
    path = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["config"]["data"]["image_size"] == 16
    return path


def same_network(path: Path) -> SEClassifier:
    """An untrained module of the checkpoint's network, for ``ckpt_path=`` to fill."""
    return SEClassifier(torch.load(path, weights_only=True)["hyper_parameters"]["config"])


def at(size: int, **data) -> DigitsDataModule:
    return DigitsDataModule(DataConfig(image_size=size, **data))


def test_readme_test_line_evaluates_at_the_checkpoints_size(fitted, tmp_path, capsys):
    # The README's line: --data and --ckpt_path, no image size; the datamodule's default would be 32 px.
    cli = main(["test", "--data=DigitsDataModule", f"--ckpt_path={fitted}", *flags(tmp_path)])
    err = capsys.readouterr().err
    assert "test: --data.cfg.image_size=16: taken from the checkpoint, which was trained with it " \
           "(DigitsDataModule's default: 32)" in err.splitlines()
    assert cli.datamodule.cfg.image_size == 16
    # An independent evaluation at the right size gives the same top-1.
    independent = trainer(tmp_path).test(SEClassifier.load_from_checkpoint(fitted), datamodule=at(16), verbose=False)
    assert float(cli.trainer.callback_metrics[TEST_TOP1]) == pytest.approx(independent[0][TEST_TOP1])


@pytest.mark.parametrize("size", [24, 32])  # 32 is the class's default, written out: the user's choice all the same
def test_cli_refuses_a_size_written_against_the_checkpoint(fitted, tmp_path, capsys, size):
    with pytest.raises(ValueError, match=rf"^data.image_size: the model was trained with 16, the DigitsDataModule "
                                         rf"gives {size}; pass --data.cfg.image_size=16 \(LightningCLI\) or "
                                         r"DataConfig\(image_size=16, \.\.\.\) \(Python\)$"):
        main(["test", "--data=DigitsDataModule", f"--data.cfg.image_size={size}", f"--ckpt_path={fitted}",
              *flags(tmp_path)])
    assert "taken from the checkpoint" not in capsys.readouterr().err  # a value the user wrote is never replaced


def test_cli_predict_and_validate_take_the_checkpoints_size(fitted, tmp_path, capsys):
    cli = main(["predict", "--data=DigitsDataModule", f"--ckpt_path={fitted}", *flags(tmp_path / "predict")])
    assert cli.datamodule.cfg.image_size == 16 and "predict: --data.cfg.image_size=16" in capsys.readouterr().err
    independent = trainer(tmp_path).predict(SEClassifier.load_from_checkpoint(fitted), datamodule=at(16))
    torch.testing.assert_close(torch.cat(cli.trainer.predict_loop.predictions), torch.cat(independent))
    cli = main(["validate", "--data=DigitsDataModule", f"--ckpt_path={fitted}", *flags(tmp_path / "validate")])
    assert cli.datamodule.cfg.image_size == 16


def test_python_test_and_predict_refuse_the_default_datamodule(fitted, tmp_path):
    line = (r"^data.image_size: the model was trained with 16, the DigitsDataModule gives 32; "
            r"pass --data.cfg.image_size=16 \(LightningCLI\) or DataConfig\(image_size=16, \.\.\.\) \(Python\)$")
    with pytest.raises(ValueError, match=line):
        trainer(tmp_path).test(SEClassifier.load_from_checkpoint(fitted), datamodule=DigitsDataModule())
    with pytest.raises(ValueError, match=line):
        trainer(tmp_path).predict(SEClassifier.load_from_checkpoint(fitted), datamodule=DigitsDataModule())
    with pytest.raises(ValueError, match=line):  # weights by ckpt_path: checked when the Trainer restores them
        trainer(tmp_path).validate(same_network(fitted), datamodule=DigitsDataModule(), ckpt_path=fitted)


def test_python_matching_datamodule_tests_and_predicts(fitted, tmp_path):
    module = SEClassifier.load_from_checkpoint(fitted)
    tested = trainer(tmp_path).test(module, datamodule=at(16, batch_size=32), verbose=False)  # batch size is free
    assert 0.0 <= tested[0][TEST_TOP1] <= 1.0
    by_path = trainer(tmp_path).test(same_network(fitted), datamodule=at(16, batch_size=32), ckpt_path=fitted,
                                     verbose=False)
    assert by_path[0][TEST_TOP1] == pytest.approx(tested[0][TEST_TOP1])
    dm = at(16)
    batches = trainer(tmp_path).predict(module, datamodule=dm)
    module.eval()
    with torch.no_grad():
        first = module(dm.test_set[0][0].unsqueeze(0))
    torch.testing.assert_close(batches[0][:1], first, rtol=1e-4, atol=1e-5)


def test_a_trained_module_is_tested_on_its_own_data_and_a_fresh_one_on_any(tmp_path):
    cfg = ExperimentConfig().override({"data.image_size": 8, "data.batch_size": 32, "wandb.mode": "disabled"})
    module = SEClassifier(cfg)
    t = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                   limit_test_batches=1, default_root_dir=tmp_path)
    # fit records the datamodule's 12 px over the config's 8, and the seed that drew its split
    t.fit(module, datamodule=DigitsDataModule(DataConfig(image_size=12), seed=2))
    assert module.cfg.data.image_size == 12 and module.cfg.seed == 2 and module.hparams["config"]["seed"] == 2
    with pytest.raises(ValueError, match="^data.image_size: the model was trained with 12, the DigitsDataModule gives 8;"):
        t.test(module, datamodule=DigitsDataModule(DataConfig(image_size=8), seed=2))
    with pytest.raises(ValueError, match=r"^seed: the model was trained on the split drawn with seed 2, the "
                                         r"DigitsDataModule draws it with 0; pass --data.seed=2 \(LightningCLI\)"):
        t.test(module, datamodule=at(12))
    t.test(module, datamodule=DigitsDataModule(DataConfig(image_size=12), seed=2), verbose=False)
    fresh = SEClassifier(cfg)
    t.test(fresh, datamodule=at(16), verbose=False)  # untrained: takes the datamodule's data, as fit does
    assert fresh.cfg.data.image_size == 16


def test_the_lines_name_each_defining_field():
    trained = ExperimentConfig().override({"data.image_size": 16, "data.val_fraction": 0.25, "seed": 3})
    line = mismatch(trained, DigitsDataModule(DataConfig(image_size=16)))
    assert line == ("data.val_fraction: the model was trained with 0.25, the DigitsDataModule gives 0.2; pass "
                    "--data.cfg.val_fraction=0.25 (LightningCLI) or DataConfig(val_fraction=0.25, ...) (Python); "
                    "seed: the model was trained on the split drawn with seed 3, the DigitsDataModule draws it with 0; "
                    "pass --data.seed=3 (LightningCLI) or DigitsDataModule(cfg, seed=3) (Python)")
    assert mismatch(trained, DigitsDataModule(DataConfig(image_size=16, val_fraction=0.25, root="x", batch_size=7),
                                              seed=3)) is None  # root and batch size do not change the images
    other = mismatch(trained, SyntheticDataModule(DataConfig(name="synthetic", image_size=8)))
    assert other.startswith("data.name: the model was trained with 'digits', the SyntheticDataModule gives "
                            "'synthetic'; pass --data=DigitsDataModule (LightningCLI)") and other.count(";") == 1
    grey = trained.override({"model.in_chans": 1})
    assert model_mismatch(grey, DigitsDataModule()).startswith("model.in_chans=1 but the 'digits' datamodule serves "
                                                               "3-channel images; set model.in_chans=3")
    # The CLI changes only what the user did not write; a value written stays (and the module refuses it).
    given = {**vars(DataConfig()), "seed": 0}
    changes, said = adapt_to_record(trained, DigitsDataModule, given, explicit=set())
    assert changes == {"image_size": 16, "val_fraction": 0.25, "seed": 3}
    assert said.startswith("--data.cfg.image_size=16, --data.cfg.val_fraction=0.25, --data.seed=3: taken from")
    assert adapt_to_record(trained, DigitsDataModule, given, explicit={"image_size", "seed"})[0] == {"val_fraction": 0.25}
