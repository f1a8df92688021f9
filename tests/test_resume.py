"""Resume equivalence: a run interrupted after an epoch and resumed from ``last.ckpt`` ends exactly where an
uninterrupted run ends (same epochs, same metrics, same weights) on CPU with deterministic settings.

Digits with random-shift augmentation and shuffling: both draw from the global RNG, so this also checks that
the RNG state travels in the checkpoint (``RNGStateCallback``).
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ablations.config import ExperimentConfig
from ablations.training.run import RESULT_FILE, Result, run_config
from senet import model_config

pytestmark = pytest.mark.slow


class Interrupt(pl.Callback):
    """Kills the run at the start of epoch ``at``, after the checkpoint of epoch ``at - 1`` was written."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            raise RuntimeError("preempted")


def config(out: Path) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}), output_dir=str(out))
    # One torch thread: two would oversubscribe CI's two cores, shared with the data loader.
    return cfg.override({"data.image_size": 8, "data.batch_size": 128, "train.epochs": 3, "wandb.mode": "disabled",
                         "train.schedule": "step", "train.step_size": 1, "train.gamma": 0.5, "train.threads": 1})


def weights(result: Result) -> dict[str, torch.Tensor]:
    return torch.load(Path(result.run_dir) / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Result:
    """The uninterrupted run both resumes must end equal to (its folder is only read)."""
    return run_config(config(tmp_path_factory.mktemp("straight")), progress_bar=False, quiet=True)


def test_resumed_run_equals_uninterrupted_run(tmp_path, straight):

    cut = run_config(config(tmp_path / "b"), callbacks=[Interrupt(at=2)], progress_bar=False, quiet=True)
    assert (cut.status, cut.epochs, cut.reason) == ("failed", 2, "RuntimeError: preempted")
    resumed = run_config(config(tmp_path / "b"), progress_bar=False, quiet=True)

    assert straight.status == resumed.status == "complete"
    assert resumed.epochs == straight.epochs == 3
    assert resumed.metrics == straight.metrics  # bit-for-bit: same batches, same augmentation, same updates
    assert resumed.config_hash == straight.config_hash
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Result.load(Path(resumed.run_dir) / RESULT_FILE).status == "complete"
    # The comparison can fail: the resumed epoch moved the metrics away from where the cut run stopped.
    assert cut.metrics != resumed.metrics


class DieAtTheEnd(pl.Callback):
    """Kills the run after its last epoch-end checkpoint, before the result is written (a preemption there)."""

    def on_train_end(self, trainer, pl_module):
        raise RuntimeError("preempted after the last checkpoint")


def test_a_resume_from_the_last_epochs_checkpoint_reports_that_epochs_metrics(tmp_path, straight):
    """Nothing is left to train, so Lightning logs nothing: the metrics come from the run's CSV history (seen in
    CI: a sweep worker stopped there, and the rerun's trial failed with "the run reported no val/top1_best")."""
    cut = run_config(config(tmp_path / "b"), callbacks=[DieAtTheEnd()], progress_bar=False, quiet=True)
    assert cut.status == "failed" and cut.epochs == 3
    resumed = run_config(config(tmp_path / "b"), progress_bar=False, quiet=True)
    assert (resumed.status, resumed.epochs, resumed.attempts) == ("complete", 3, 2)
    val = {k: v for k, v in straight.metrics.items() if k.startswith("val/")}
    assert val and {k: resumed.metrics.get(k) for k in val} == val  # bit-equal: the same epoch's logged values
