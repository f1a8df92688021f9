"""``train.compile``: a compiled run trains like the eager one, and its checkpoints are the eager model's.

Inductor compiles on the CPU too (about a minute per graph on two busy cores), so this is the slow tier.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ablations.config import ExperimentConfig
from ablations.data import build_datamodule
from ablations.excitation import ExcitationRecorder
from ablations.training.module import SEClassifier
from ablations.training.checkpoints import RNGStateCallback
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


def fit(cfg: ExperimentConfig, root, epochs: int, ckpt_path=None, save_every_epoch: bool = False
        ) -> tuple[SEClassifier, pl.Trainer, list[float]]:
    pl.seed_everything(0, verbose=False)
    module, record = SEClassifier(cfg.to_dict()), StepLosses()
    # Every epoch's checkpoint as epoch=<n>.ckpt, written at the epoch's end as a run's last.ckpt is; with the RNG
    # state in it (as in a run), a resume draws the batches the uninterrupted fit draws.
    saves = [ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1)] if save_every_epoch else []
    trainer = pl.Trainer(accelerator="cpu", devices=1, default_root_dir=root, max_epochs=epochs, limit_train_batches=2,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=bool(saves),
                         enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                         callbacks=[record, RNGStateCallback(), *saves])
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
    """One compiled fit (Inductor's minute per graph is the cost): it resumes from an eager checkpoint, trains
    epochs 2 and 3 as eager runs do, and its epoch-2 checkpoint is the eager model's, which an eager run resumes."""
    _, eager_trainer, _ = fit(config(), tmp_path / "eager", epochs=1)
    start = tmp_path / "eager.ckpt"
    eager_trainer.save_checkpoint(start)

    module, _, compiled = fit(config(**{"train.compile": "default"}), tmp_path / "compiled", epochs=3,
                              ckpt_path=start, save_every_epoch=True)
    assert module.model._compiled_call_impl is not None  # it did compile
    _, _, eager_2 = fit(config(), tmp_path / "eager", epochs=2, ckpt_path=start)
    assert len(compiled) == 4 and len(eager_2) == 2
    # Inductor's fused kernels round differently: step losses agree to ~1e-5 relative (a wrong state or batch moves
    # them by 0.1 or more).
    assert compiled[:2] == pytest.approx(eager_2, rel=1e-4, abs=1e-5)  # the compiled resume trains as eager does

    path = tmp_path / "compiled" / "epoch=1.ckpt"  # after epoch 2 of 3, written by the compiled run
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert state and not [k for k in state if "_orig_mod" in k]
    eager_module = SEClassifier.load_from_checkpoint(path)  # no Trainer: stays eager
    assert eager_module.model._compiled_call_impl is None
    with ExcitationRecorder(eager_module.model, num_classes=10) as rec:  # what the excitation analysis does
        rec.record(torch.randn(4, 3, 8, 8), torch.arange(4))
    assert rec.stats().count.sum() == 4 and len(rec.stats().blocks) == 9
    final = torch.load(tmp_path / "compiled" / "epoch=2.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    trained = module.state_dict()
    assert final.keys() == trained.keys() and all(torch.equal(final[k], trained[k]) for k in final)

    # And back: an eager run resumes from the compiled run's checkpoint and trains epoch 3 as the compiled run did.
    _, _, eager_3 = fit(config(), tmp_path / "eager", epochs=3, ckpt_path=path)
    assert len(eager_3) == 2
    assert eager_3 == pytest.approx(compiled[2:], rel=1e-4, abs=1e-5)
