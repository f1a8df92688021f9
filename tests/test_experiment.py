"""The one resolve step (``ablations.experiment``): files and flags, or a config, to the ``Experiment`` that trains,
settled once: nothing downstream rebuilds the network with real weights, renames or rehashes the run (issue 22)."""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import senet
from ablations.commands.train import _parse_overrides, add_arguments
from ablations.config import ExperimentConfig
from ablations.experiment import Experiment, resolve, resolve_experiment, settle
from ablations.naming import run_name
from ablations.training import module as module_file
from ablations.training.run import run_config, run_experiment

FLAGS = ["--data", "synthetic", "--model", "se_resnet20_cifar", "data.image_size=8", "data.num_samples=32",
         "data.num_classes=4", "data.batch_size=16", "--epochs", "1", "--wandb", "disabled", "se.reduction=4"]


def typed(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_intermixed_args([*FLAGS, "--output-dir", str(tmp_path), *extra])  # as senet-ablate parses


def test_resolve_returns_the_settled_experiment_with_its_identity(tmp_path):
    args = typed(tmp_path)
    overrides = _parse_overrides(args)
    exp = resolve(args.config, args.model, overrides)
    plain = resolve_experiment(args.config, args.model, overrides)
    assert plain.model.num_classes == 10  # the registry's default for a CIFAR network: the data has not spoken yet
    assert (exp.config.model.num_classes, exp.config.model.in_chans) == (4, 3)  # the data decides
    assert exp.config == plain.replace(model=exp.config.model)  # nothing else moved
    assert exp.name == run_name(exp.config) and exp.config_hash == exp.config.hash()
    assert exp.input_size == (3, 8, 8) and exp.datamodule.num_classes == 4
    assert settle(plain) == exp  # the same experiment from a config (the sweep arms' and scripts' path)


def test_a_flag_the_data_overrules_is_refused_by_the_resolve_step(tmp_path):
    args = typed(tmp_path, "model.num_classes=7")
    with pytest.raises(ValueError, match=r"^model.num_classes=7 is not allowed with data 'synthetic', which has 4 "
                                         r"classes: the data sets it; drop model.num_classes or set "
                                         r"data.num_classes=7$"):
        resolve(args.config, args.model, _parse_overrides(args))


def test_the_network_is_built_once_with_weights_and_the_run_keeps_the_experiments_identity(tmp_path, monkeypatch):
    """settle() checks the network on the meta device; the run builds it once with real weights; the result's
    name and hash are the experiment's, and a config run through the same function gives the same row."""
    devices: list[str] = []
    real_build = senet.build_model

    def counting(cfg, **kw):
        net = real_build(cfg, **kw)
        devices.append(next(net.parameters()).device.type)
        return net

    monkeypatch.setattr(senet, "build_model", counting)
    monkeypatch.setattr(module_file, "build_model", counting)
    args = typed(tmp_path / "a")
    exp = resolve(args.config, args.model, _parse_overrides(args))
    assert devices == ["meta"]
    result = run_experiment(exp, progress_bar=False, quiet=True)
    assert devices == ["meta", "cpu"]  # one network with weights: the one that trained
    assert result.status == "complete"
    assert (result.name, result.config_hash) == (exp.name, exp.config_hash)
    assert ExperimentConfig.from_dict(result.config) == exp.config
    again = run_config(exp.config.replace(output_dir=str(tmp_path / "b")), progress_bar=False, quiet=True)
    assert (again.name, again.config_hash, again.metrics) == (result.name, result.config_hash, result.metrics)


def test_a_run_builds_one_trainer_and_a_refused_setting_leaves_no_folder(tmp_path, monkeypatch):
    """The run's Trainer is built once, before the run folder is touched: the one that fits is the one that was
    checked, and a setting Lightning refuses is one line with nothing written."""
    from ablations.training import run as run_file

    built = []
    real = run_file.make_trainer

    def counting(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(run_file, "make_trainer", counting)
    exp = resolve(*_config_model_overrides(typed(tmp_path / "a")))
    assert run_experiment(exp, progress_bar=False, quiet=True).status == "complete"
    assert len(built) == 1 and built[0].current_epoch == 1  # the Trainer that was built is the one that trained
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^train.accelerator/devices/strategy/precision: .*gpu"):
            run_experiment(resolve(*_config_model_overrides(typed(tmp_path / "b", "train.accelerator=gpu"))))
        assert not (tmp_path / "b").exists()


def test_the_folder_is_read_again_under_the_lock(tmp_path, monkeypatch):
    """An attempt that held the folder may write after this run first read it (a retry waiting on a busy folder):
    under the lock the run reads the folder again and resumes from what is there now, keeping its history."""
    import json

    from ablations.training import run as run_file

    args = typed(tmp_path, "--epochs", "2")
    exp = resolve(*_config_model_overrides(args))
    stop = run_file.interrupts.RunInterrupted
    with pytest.raises(stop):  # the earlier attempt: interrupted after its first epoch's checkpoint
        run_experiment(exp, callbacks=[_StopAfterFirstEpoch()], progress_bar=False, quiet=True)
    real, calls = run_file._folder_state, []

    def stale_first(run_dir, resume):  # the first read happened before that attempt wrote anything
        calls.append(run_dir)
        return (None, None) if len(calls) == 1 else real(run_dir, resume)

    monkeypatch.setattr(run_file, "_folder_state", stale_first)
    result = run_experiment(exp, progress_bar=False, quiet=True)
    entries = json.loads((Path(result.run_dir) / "attempts.json").read_text())
    assert result.status == "complete" and len(calls) == 2
    assert [e["resumed_from_epoch"] for e in entries] == [None, 1]


class _StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_while_a_config_settles_is_the_runs_interruption(tmp_path, monkeypatch):
    from ablations.training import run as run_file

    def unguarded(*_):
        raise RuntimeError("the signal reached no guard")

    previous = signal.signal(signal.SIGUSR1, unguarded)
    real = run_file.settle

    def signalled(cfg, baseline=None):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(cfg, baseline)

    monkeypatch.setattr(run_file, "settle", signalled)
    try:
        with pytest.raises(run_file.RunInterrupted, match="SIGUSR1"):
            run_config(resolve_experiment(*_config_model_overrides(typed(tmp_path))))
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _config_model_overrides(args: argparse.Namespace) -> tuple:
    return args.config, args.model, _parse_overrides(args)


def test_an_experiment_is_frozen():
    exp = settle(ExperimentConfig().override({"data.name": "synthetic", "data.image_size": 8, "wandb.mode": "disabled"}))
    assert isinstance(exp, Experiment)
    with pytest.raises(AttributeError):
        exp.name = "other"  # type: ignore[misc]
    assert torch.Size(exp.input_size) == torch.Size([3, 8, 8])
