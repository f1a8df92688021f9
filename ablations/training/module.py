"""The classification LightningModule around any ``senet`` model (docs/DESIGN.md, Training; paper Sec. 6 protocol).

``SEClassifier`` is built from an ``ExperimentConfig`` (or its ``to_dict()``), never from ``nn.Module``s, and
stores the plain dict as its hparams, so a checkpoint alone rebuilds it (``SEClassifier.load_from_checkpoint``).
The constructor is typed, so ``LightningCLI(SEClassifier, DigitsDataModule)`` builds it from flags
(``--model.config.train.lr=0.05``). It holds a LightningModule's job: cross-entropy (optionally label-smoothed),
top-1/top-5 with torchmetrics for validation and ``trainer.test``, logits for ``trainer.predict``, the optimizer
and LR schedule of ``cfg.train``, and its checkpoint hooks. What a Trainer does around it comes as callbacks from
``configure_callbacks``, so a plain ``pl.Trainer`` gets them too: the datamodule check (``ablations.training.
data_check.DataCheck``: a trained network is validated, tested and predicted only on the data its config records,
a datamodule that differs in image size, dataset or split is refused with one line naming the field, and an
untrained module takes the datamodule's data), the complexity record (params, GMACs) counted once and logged when
fitting starts (``ablations.training.cost.ComplexityLog``), and ``train.compile`` (``ablations.training.compiling``:
in place, checkpoints keep the eager keys, ``load_from_checkpoint`` stays eager). ``trainer.test(SEClassifier.
load_from_checkpoint(p), datamodule=dm)`` in a user's script gets the same checks.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ablations.config import ExperimentConfig, TrainConfig
from ablations.training.compiling import CompileNetwork
from ablations.training.cost import ComplexityLog
from ablations.training.data_check import DataCheck, example_input, mismatch, served_datamodule
from ablations.training.metrics import (
    TEST_LOSS,
    TEST_TOP1,
    TEST_TOP5,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_TOP1,
    VAL_TOP1_BEST,
    VAL_TOP5,
)
from senet import build_model


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run is recorded as failed with this reason."""


class SEClassifier(pl.LightningModule):
    """Image classification with a registry model, configured by one ``ExperimentConfig``.

    Args:
        config: the experiment, as the dataclass or its ``to_dict()`` (what checkpoints store); ``None`` is
            ``ExperimentConfig()``. ``model`` is built with ``senet.build_model``; ``train`` sets the loss,
            optimizer and schedule.
        input_size: (C, H, W) for the complexity count and the summary's example input; ``None`` takes the
            datamodule's ``input_size`` once a Trainer holds one, else ``(model.in_chans, data.image_size,
            data.image_size)`` (``data_check.example_input``).
    """

    def __init__(self, config: ExperimentConfig | dict | None = None,
                 input_size: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        if config is None:
            config = ExperimentConfig()
        self.cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_dict(config)
        # Plain data only (never the dataclass): checkpoints load with weights_only and stay readable without
        # this package's classes, and every checkpoint of the project, old or new, stores this dict.
        # logger=False: the loggers get the flattened config from run.py (dotted keys), not a nested dict.
        self.save_hyperparameters({"config": self.cfg.to_dict(), "input_size": input_size}, logger=False)
        self.model = build_model(self.cfg.model)
        if self.cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.cfg.train.label_smoothing)
        n = self.cfg.model.num_classes
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
        self.val_top1_best = MaxMetric()
        # The running best must survive a resume, so it is part of the checkpoint's state_dict.
        self.val_top1_best.persistent(True)
        # Separate states for trainer.test, so a test run never mixes into the validation epoch's numbers.
        self.test_loss = MeanMetric()
        self.test_top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
        # Lightning's model summary runs this through the network for in/out shapes and FLOPs (2 x MACs at batch 1;
        # ``gmacs`` is the paper's convention); none with train.compile, where it would compile a batch-1 graph.
        self.example_input_array = None if self.cfg.train.compile is not None else example_input(self.cfg, input_size)
        self.complexity: Any | None = None  # senet.complexity.Complexity, set by ComplexityLog when fitting
        # The experiment the weights were trained on (from the checkpoint, or recorded when fit starts); None for
        # an untrained network, which takes any datamodule's data.
        self.trained_on: ExperimentConfig | None = None

    def configure_callbacks(self) -> list[Callback]:
        """The datamodule check, the complexity count and log, then the compile for ``train.compile``, for every
        Trainer that runs this module. In this order: the callbacks' ``setup`` runs in list order (before the
        module's), the count needs checked data and the eager network. Lightning puts these in place of any Trainer
        callback of the same type. None holds state, so a Trainer that holds all three already (it ran a module
        before: ``fit`` then ``test``) keeps its own, and Lightning prints no line about replacing them."""
        held = {type(c) for c in self._trainer.callbacks} if self._trainer is not None else set()
        own = (DataCheck, ComplexityLog, CompileNetwork)
        return [] if set(own) <= held else [c() for c in own]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Remember the experiment the weights were trained on. When a Trainer restores them to validate, test or
        predict (``ckpt_path=``), this runs after ``setup`` (which saw the module's own config), so its datamodule
        is checked against the checkpoint here. A resumed ``fit`` keeps what ``setup`` recorded."""
        recorded = checkpoint.get("hyper_parameters", {}).get("config")
        dm = served_datamodule(self._trainer)
        if not isinstance(recorded, dict) or (dm is not None and self._trainer.state.fn == "fit"):
            return
        self.trained_on = ExperimentConfig.from_dict(recorded)
        if dm is not None and (line := mismatch(self.trained_on, dm)) is not None:
            raise ValueError(line)

    # ---- forward and steps ---- #

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self(x), y)
        # Fail fast: a NaN loss poisons every later step, so a sweep should record it and move on.
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at epoch {self.current_epoch}, step {self.global_step}")
        self.train_loss(loss.detach(), weight=y.numel())
        self.log(TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, (self.val_loss, self.val_top1, self.val_top5), (VAL_LOSS, VAL_TOP1, VAL_TOP5))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """``trainer.test``: ``test/loss``, ``test/top1``, ``test/top5`` over the datamodule's test split."""
        self._evaluate(batch, (self.test_loss, self.test_top1, self.test_top5), (TEST_LOSS, TEST_TOP1, TEST_TOP5))

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: tuple, names: tuple[str, str, str]) -> None:
        x, y = batch
        logits = self(x)
        loss, top1, top5 = metrics
        loss(self.criterion(logits, y), weight=y.numel())
        top1(logits, y)
        top5(logits, y)
        # Metric objects: Lightning computes them once per epoch, synchronised over all DDP ranks.
        self.log(names[0], loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log(names[1], top1, on_step=False, on_epoch=True, prog_bar=True)
        self.log(names[2], top5, on_step=False, on_epoch=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """``trainer.predict``: (B, num_classes) float32 logits per batch (``softmax(-1)`` gives probabilities).

        Logits rather than probabilities: they lose nothing, and ``argmax`` is the same. ``batch`` is an
        ``(images, labels)`` pair from the datamodule, or images alone from a loader of unlabelled data.
        """
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).float()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # two batches of an untrained net are not a "best"
            return
        self.val_top1_best(self.val_top1.compute())
        # Equal on every rank (val_top1 is synchronised); sync_dist only states that for Lightning.
        self.log(VAL_TOP1_BEST, self.val_top1_best.compute(), prog_bar=True, sync_dist=True)

    # ---- optimisation ---- #

    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        if t.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                                  weight_decay=t.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        if t.schedule == "plateau":
            # The paper's ablation schedule: divide by 10 whenever the validation loss plateaus (Sec. 6).
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=t.gamma,
                                                               patience=t.plateau_patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": VAL_LOSS, "interval": "epoch"}}
        sched = build_scheduler(opt, t)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def build_scheduler(opt: torch.optim.Optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch LR schedule of ``t`` (step, multistep, cosine, constant), after ``t.warmup_epochs`` of linear warm-up."""
    sch = torch.optim.lr_scheduler
    main_epochs = max(1, t.epochs - t.warmup_epochs)
    if t.schedule == "step":
        main = sch.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
    elif t.schedule == "multistep":
        main = sch.MultiStepLR(opt, milestones=[m - t.warmup_epochs for m in t.milestones], gamma=t.gamma)
    elif t.schedule == "cosine":
        main = sch.CosineAnnealingLR(opt, T_max=main_epochs)
    elif t.schedule == "constant":
        main = sch.ConstantLR(opt, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"train.schedule={t.schedule!r} has no per-epoch scheduler here")
    if t.warmup_epochs <= 0:
        return main
    warm = sch.LinearLR(opt, start_factor=1.0 / (t.warmup_epochs + 1), total_iters=t.warmup_epochs)
    return sch.SequentialLR(opt, [warm, main], milestones=[t.warmup_epochs])
