"""Lightning's surface beyond ``fit`` (issue 13): ``trainer.test`` and ``trainer.predict`` from a checkpoint, FLOPs in
the model summary, typed constructors that keep old checkpoints loading, and one log line per epoch off a terminal."""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_summary import ModelSummary

from ablations.config import DataConfig, ExperimentConfig
from ablations.data import DATAMODULES, DigitsDataModule, build_datamodule
from ablations.training.cost import count_complexity
from ablations.training.epoch_log import EpochLogBar, progress_callbacks
from ablations.training.metrics import TEST_LOSS, TEST_TOP1, TEST_TOP5
from ablations.training.module import SEClassifier
from senet import model_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread_module")


def digits_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}))
    return cfg.override({"data.image_size": 8, "data.batch_size": 32, "wandb.mode": "disabled"})


def trainer(tmp_path, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, max_epochs=1, limit_train_batches=2, limit_val_batches=2,
                      limit_test_batches=2, limit_predict_batches=2, **kw)


def test_test_and_predict_from_a_checkpoint(tmp_path):
    cfg = digits_cfg()
    dm = build_datamodule(cfg.data)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")
    fitted = trainer(tmp_path, callbacks=[ckpt])
    fitted.fit(SEClassifier(cfg), datamodule=dm)
    path = ckpt.best_model_path
    assert Path(path).is_file()

    final = {name: float(value) for name, value in fitted.callback_metrics.items()}

    # A fresh Trainer and a module of other weights: ckpt_path alone decides what is tested.
    tested = trainer(tmp_path).test(SEClassifier(cfg), datamodule=dm, ckpt_path=path, verbose=False)
    assert len(tested) == 1 and set(tested[0]) == {TEST_LOSS, TEST_TOP1, TEST_TOP5}
    # The README's promise: test reads the held-out split validation read, with the checkpoint's weights, so over
    # the same batches it gives the final epoch's validation numbers. The loss, a continuous value, would differ
    # for other weights, another split, another transform or BatchNorm left in training mode.
    assert tested[0][TEST_TOP1] == final["val/top1"] and tested[0][TEST_TOP5] == final["val/top5"]
    assert tested[0][TEST_LOSS] == pytest.approx(final["val/loss"], rel=1e-6)

    module = SEClassifier.load_from_checkpoint(path)
    batches = trainer(tmp_path).predict(module, datamodule=dm)
    assert len(batches) == 2 and all(b.shape == (32, 10) and b.dtype == torch.float32 for b in batches)
    # Logits, in the test split's order: the first prediction belongs to test_set[0].
    module.eval()
    with torch.no_grad():
        first = module(dm.test_set[0][0].unsqueeze(0))
    torch.testing.assert_close(batches[0][:1], first, rtol=1e-4, atol=1e-5)


def test_every_datamodule_serves_test_and_predict_from_the_held_out_split():
    dm = DigitsDataModule(DataConfig(image_size=8))
    dm.setup("test")
    assert dm.test_set is dm.val_set and len(dm.test_dataloader().dataset) == len(dm.val_set)
    for name, cls in DATAMODULES.items():  # typed, with a default of the class's own dataset (LightningCLI)
        cfg = inspect.signature(cls.__init__).parameters["cfg"]
        assert cfg.annotation in (DataConfig, "DataConfig") and cfg.default.name == name, name


def test_summary_counts_flops_at_the_input_size():
    cfg = digits_cfg()
    module = SEClassifier(cfg)
    assert module.example_input_array.shape == (1, 3, 8, 8)  # the config's size when no datamodule is attached
    flops = ModelSummary(module).total_flops
    macs = count_complexity(module).gmacs * 1e9
    assert flops > 0 and flops == pytest.approx(2 * macs, rel=0.05)  # Lightning counts 2 FLOPs per MAC
    sized = SEClassifier(cfg.to_dict(), input_size=(3, 16, 16))
    assert sized.example_input_array.shape == (1, 3, 16, 16)
    assert SEClassifier(cfg.override({"train.compile": "default"})).example_input_array is None


def test_the_callbacks_check_the_data_and_size_the_summary_at_the_images_a_plain_trainer_gives(tmp_path):
    """The datamodule check is a callback the module hands any Trainer: an untrained module given 12 px digits records
    them, and its summary and complexity count take that size; a datamodule whose classes differ is refused."""
    module = SEClassifier(digits_cfg())
    dm = DigitsDataModule(DataConfig(image_size=12, batch_size=32))
    trainer(tmp_path).fit(module, datamodule=dm)
    assert module.cfg.data.image_size == 12 and module.hparams["config"]["data"]["image_size"] == 12
    assert module.example_input_array.shape == (1, 3, 12, 12)
    assert module.complexity.gmacs == count_complexity(SEClassifier(digits_cfg(), input_size=(3, 12, 12))).gmacs
    wrong = SEClassifier(digits_cfg().override({"model.num_classes": 7}))
    with pytest.raises(ValueError, match=r"^model.num_classes=7 but the 'digits' datamodule has 10 classes"):
        trainer(tmp_path / "b").fit(wrong, datamodule=dm)


def test_typed_config_stores_the_plain_dict_and_old_checkpoints_load(tmp_path):
    cfg = digits_cfg()
    typed, plain = SEClassifier(cfg), SEClassifier(cfg.to_dict())
    assert typed.hparams["config"] == plain.hparams["config"] == cfg.to_dict() and typed.cfg == plain.cfg == cfg
    assert SEClassifier().cfg == ExperimentConfig()
    # A checkpoint as the untyped constructor wrote it: hparams {"config": dict, "input_size": ...}, nothing else.
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": plain.state_dict(), "hyper_parameters": {"config": cfg.to_dict(), "input_size": None},
                "pytorch-lightning_version": "2.4.0"}, path)
    assert set(torch.load(path, weights_only=True)["hyper_parameters"]) == {"config", "input_size"}
    again = SEClassifier.load_from_checkpoint(path)
    assert again.cfg == cfg
    x = torch.randn(2, 3, 8, 8)
    plain.eval(), again.eval()
    assert torch.equal(plain(x), again(x))


def test_a_datamodule_with_other_classes_is_refused_and_its_data_section_recorded(tmp_path):
    cfg = digits_cfg()
    synthetic = build_datamodule(DataConfig(name="synthetic", image_size=8, num_samples=16, num_classes=3))
    with pytest.raises(ValueError, match="model.num_classes=10 but the 'synthetic' datamodule has 3 classes"):
        trainer(tmp_path, enable_checkpointing=False).fit(SEClassifier(cfg), datamodule=synthetic)
    module = SEClassifier(cfg)  # the config says 8 px; the datamodule serves 12
    trainer(tmp_path, enable_checkpointing=False).fit(module, datamodule=build_datamodule(DataConfig(image_size=12)))
    assert module.cfg.data.image_size == 12 and module.hparams["config"]["data"]["image_size"] == 12


def test_progress_choice_follows_stdout(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    bar, cbs = progress_callbacks(None)
    assert bar and len(cbs) == 1 and isinstance(cbs[0], EpochLogBar)
    assert progress_callbacks(False) == (False, []) and progress_callbacks(True) == (True, [])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert progress_callbacks(None) == (True, [])  # Lightning's tqdm bar on a terminal


LINE = re.compile(r"^epoch (\d)/2  train/loss \d+\.\d{4}  val/top1 \d+\.\d\d% \(err \d+\.\d\d%\)  val/loss \d+\.\d{4}  "
                  r"\d+ img/s  elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d$")


@pytest.mark.slow
def test_train_writes_one_line_per_epoch_to_a_file(tmp_path):
    log = tmp_path / "slurm-1.out"
    cmd = [sys.executable, "-m", "ablations.cli", "train", "--model", "resnet20_cifar", "--data", "digits",
           "data.image_size=8", "train.epochs=2", "train.threads=1", "train.limit_train_batches=4",
           "train.limit_val_batches=2", "--wandb", "disabled", "--output-dir", str(tmp_path / "runs")]
    with log.open("w") as out:  # stdout and stderr to one file, as #SBATCH --output does
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, timeout=300, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"})
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [int(LINE.match(line).group(1)) for line in lines] == [1, 2], text
    assert lines[-1].endswith("eta 0:00:00")
    assert "\r" not in text  # no tqdm redraws in the file


@pytest.mark.slow
def test_a_runs_checkpoints_test_to_their_recorded_validation_numbers(tmp_path):
    """The README's Python route: ``trainer.test`` of a run's checkpoint with the datamodule its config records gives
    ``result.json``'s final ``val/top1`` (``last.ckpt``) and ``val/top1_best`` (``best.ckpt``), over the whole split.

    Bugs caught: a checkpoint written before its epoch's validation, or after the next optimizer step; a test split
    other than the validation split (another seed, another transform); ``best.ckpt`` not the best epoch's weights."""
    from ablations.training.run import run_config

    cfg = digits_cfg().override({"output_dir": str(tmp_path / "runs"), "train.epochs": 3, "train.threads": 1,
                                 "train.limit_train_batches": 3, "data.val_fraction": 0.1, "seed": 3})
    result = run_config(cfg, progress_bar=False, quiet=True)
    assert result.status == "complete"
    checkpoints = Path(result.run_dir) / "checkpoints"
    for name, metric in (("last.ckpt", "val/top1"), ("best.ckpt", "val/top1_best")):
        module = SEClassifier.load_from_checkpoint(checkpoints / name)
        dm = build_datamodule(module.cfg.data, seed=module.cfg.seed)
        full = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=tmp_path)
        (tested,) = full.test(module, datamodule=dm, verbose=False)
        assert tested[TEST_TOP1] == pytest.approx(result.metrics[metric], abs=1e-6), name
