"""A checkpoint never runs code, and ``last.ckpt`` is the run's last epoch (issue 20).

A pickle whose loading calls ``os.system`` is planted where the project reads checkpoints: given to
``excitation``, sitting as a run folder's ``last.ckpt`` that a rerun resumes, and given as released weights.
Each is refused with one line and the command never runs (a marker file it would create stays absent). The
project's own checkpoints, in today's layout and in the older one (numpy RNG state, one checkpoint callback),
still resume bit-equal and still load in ``excitation``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume import Interrupt  # stops a run at an epoch's start, after the previous epoch's checkpoint

from ablations.cli import main
from ablations.config import ExperimentConfig
from ablations.excitation.analysis import load_module
from ablations.training.run import run_config
from senet import build_model, model_config
from senet.weights import load_legacy_weights, read_state_dict

TRAIN = ["--model", "se_resnet20_cifar", "--data", "digits", "data.image_size=8", "train.epochs=1",
         "train.limit_train_batches=0.2", "train.threads=1", "--no-progress", "--wandb", "disabled"]
RUN = "se_resnet20_cifar_digits_s0"


class RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint in a shared folder does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile(path: Path, marker: Path, protocol: int = 2) -> Path:
    """A checkpoint that runs ``touch marker`` when unpickled; ``protocol`` 2 is torch.save's default, a later one
    is what ``pickle`` itself writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {}, "payload": RunsCode(marker)}, path,
               pickle_protocol=protocol)
    return path


# What the one line names: the call the pickle asks for, or the protocol that cannot be checked.
REASON = {2: "loading it would call posix.system", 4: "pickled with protocol 4", 5: "pickled with protocol 5"}


def one_refusal_line(err: str, path: Path, protocol: int = 2) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and "refused" in lines[0] and REASON[protocol] in lines[0], lines[0]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_excitation_refuses_a_checkpoint_that_runs_code(tmp_path, capsys, protocol):
    marker = tmp_path / "ran"
    ckpt = hostile(tmp_path / "evil.ckpt", marker, protocol)
    assert main(["excitation", str(ckpt)]) == 2
    one_refusal_line(capsys.readouterr().err, ckpt, protocol)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_hostile_last_ckpt_in_a_run_folder_is_never_resumed(tmp_path, capsys, protocol):
    marker = tmp_path / "ran"
    ckpt = hostile(tmp_path / "out" / RUN / "checkpoints" / "last.ckpt", marker, protocol)
    assert main(["train", *TRAIN, "--output-dir", str(tmp_path / "out")]) == 2
    one_refusal_line(capsys.readouterr().err, ckpt, protocol)
    assert not marker.exists() and not (tmp_path / "out" / RUN / "result.json").exists()


def test_hostile_weights_files_are_refused(tmp_path):
    marker = tmp_path / "ran"
    for name in ("evil.pth", "evil.ckpt"):
        path = hostile(tmp_path / name, marker)
        with pytest.raises(ValueError, match="refused: loading it would call posix.system") as info:
            load_legacy_weights(build_model("se_resnet50"), path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(ValueError, match="refused"):
            read_state_dict(path)
    assert not marker.exists()


def config(out: Path, lr: float = 0.1) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}), output_dir=str(out))
    return cfg.override({"data.image_size": 8, "data.batch_size": 128, "train.epochs": 3, "wandb.mode": "disabled",
                         "train.lr": lr, "train.threads": 1})


def old_layout(ckpt: Path) -> None:
    """Rewrite a checkpoint as the project wrote it before: numpy's RNG state as an ndarray, and one checkpoint
    callback (best, with ``save_last``) instead of the best and last pair."""
    state = torch.load(ckpt, weights_only=True)
    name, keys, pos, has_gauss, cached = state["callbacks"]["RNGStateCallback"]["rng"]["numpy"]
    state["callbacks"]["RNGStateCallback"]["rng"]["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss,
                                                              cached)
    state["callbacks"] = {k: v for k, v in state["callbacks"].items() if "'monitor': None" not in k}
    torch.save(state, ckpt)
    with pytest.raises(Exception, match="numpy"):  # the older layout really needs the numpy allowlist
        torch.load(ckpt, weights_only=True)


@pytest.mark.slow
def test_old_and_new_checkpoints_resume_bit_equal_and_load_in_excitation(tmp_path):
    straight = run_config(config(tmp_path / "a"), progress_bar=False, quiet=True)
    for layout in ("new", "old"):
        cut = run_config(config(tmp_path / layout), callbacks=[Interrupt(at=2)], progress_bar=False, quiet=True)
        assert (cut.status, cut.epochs) == ("failed", 2)
        last = Path(cut.run_dir) / "checkpoints" / "last.ckpt"
        if layout == "old":
            old_layout(last)
        assert load_module(last).cfg.hash() == straight.config_hash  # excitation reads it
        resumed = run_config(config(tmp_path / layout), progress_bar=False, quiet=True)
        assert (resumed.status, resumed.epochs, resumed.attempts) == ("complete", 3, 2)
        assert resumed.metrics == straight.metrics, layout


@pytest.mark.slow
def test_last_ckpt_holds_the_last_epoch_when_later_epochs_do_not_improve(tmp_path):
    # lr = 0: the weights never change, and on one validation batch the accuracy stays at epoch 0's, so
    # val/top1_best improves in epoch 0 only and best.ckpt stays there (asserted: the case this test is for).
    cfg = config(tmp_path, lr=0.0).override({"data.batch_size": 32, "train.limit_train_batches": 0.5,
                                             "train.limit_val_batches": 1})
    done = run_config(cfg, progress_bar=False, quiet=True)
    ckpts = Path(done.run_dir) / "checkpoints"
    assert done.status == "complete" and done.epochs == 3
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 2  # epoch indices: the third, the last
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_lightning_cli_refuses_a_hostile_checkpoint_in_one_line_and_evaluates_an_old_one(tmp_path, monkeypatch):
    import shutil

    from ablations.commands import lightning_cli

    monkeypatch.chdir(tmp_path)  # LightningCLI writes its config.yaml into the working folder
    marker = tmp_path / "ran"
    done = run_config(config(tmp_path / "run").override({"train.epochs": 1}), progress_bar=False, quiet=True)
    old = tmp_path / "old.ckpt"
    shutil.copy(Path(done.run_dir) / "checkpoints" / "last.ckpt", old)
    old_layout(old)
    flags = ["--data=DigitsDataModule", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    for protocol in (2, 4):
        evil = hostile(tmp_path / f"evil{protocol}.ckpt", marker, protocol)
        with pytest.raises(ValueError, match=f"^checkpoint {evil} is refused: ") as info:
            lightning_cli.main(["test", *flags, f"--ckpt_path={evil}"])
        assert REASON[protocol] in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    cli = lightning_cli.main(["test", *flags, f"--ckpt_path={old}"])  # numpy RNG state: the allowlist reads it
    assert cli.trainer.callback_metrics["test/top1"] >= 0
    assert cli.model.cfg.model == ExperimentConfig.from_dict(done.config).model  # the network the checkpoint records
