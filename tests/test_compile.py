"""``train.compile``: a compiled run trains like the eager one, and its checkpoints are the eager model's.

Inductor compiles on the CPU too (about a minute per graph on two busy cores), so this is the slow tier.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from ablations.config import ExperimentConfig
from ablations.data import build_datamodule
from ablations.excitation import ExcitationRecorder
from ablations.module import SEClassifier
from senet import model_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread_module")]


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def config(**overrides) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}))
    # 64 samples at batch 16: two full batches per epoch, so the compiled graph never meets a new shape.
    return cfg.override({"data.name": "synthetic", "data.image_size": 8, "data.num_samples": 64,
                         "data.batch_size": 16, "wandb.mode": "disabled", **overrides})


def fit(cfg: ExperimentConfig, root, epochs: int = 1, ckpt_path=None) -> tuple[SEClassifier, pl.Trainer, list[float]]:
    pl.seed_everything(0, verbose=False)
    module, record = SEClassifier(cfg.to_dict()), StepLosses()
    trainer = pl.Trainer(accelerator="cpu", devices=1, default_root_dir=root, max_epochs=epochs, limit_train_batches=2,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, deterministic=True, callbacks=[record])
    trainer.fit(module, datamodule=build_datamodule(cfg.data, seed=0), ckpt_path=ckpt_path)
    return module, trainer, record.losses


def test_compile_is_off_by_default_checked_and_out_of_the_eager_hash():
    cfg = config()
    assert cfg.train.compile is None and "compile" not in cfg.semantic()["train"]
    compiled = cfg.override({"train.compile": "default"})
    assert compiled.semantic()["train"]["compile"] == "default" and compiled.hash() != cfg.hash()
    with pytest.raises(ValueError, match="train.compile='fast' is not allowed; choose one of: default"):
        cfg.override({"train.compile": "fast"})


def test_compiled_run_matches_eager_and_its_checkpoint_is_the_eager_models(tmp_path):
    _, _, eager = fit(config(), tmp_path / "eager")
    module, trainer, compiled = fit(config(**{"train.compile": "default"}), tmp_path / "compiled")
    assert module.model._compiled_call_impl is not None  # it did compile
    assert len(eager) == len(compiled) == 2
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    eager_module = SEClassifier.load_from_checkpoint(path)  # no Trainer: stays eager
    assert eager_module.model._compiled_call_impl is None
    loaded, trained = eager_module.state_dict(), module.state_dict()
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in loaded)
    with ExcitationRecorder(eager_module.model, num_classes=10) as rec:  # what the excitation analysis does
        rec.record(torch.randn(4, 3, 8, 8), torch.arange(4))
    assert rec.stats().count.sum() == 4 and len(rec.stats().blocks) == 9

    # And back: the compiled run resumes from its checkpoint, as an eager run would from the same file.
    _, _, resumed = fit(config(**{"train.compile": "default"}), tmp_path / "compiled", epochs=2, ckpt_path=path)
    _, _, eager_resumed = fit(config(), tmp_path / "eager", epochs=2, ckpt_path=path)
    assert len(resumed) == len(eager_resumed) == 2
    assert resumed == pytest.approx(eager_resumed, rel=1e-5, abs=1e-5)
