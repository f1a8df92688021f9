"""Metric names, defined once (docs/DESIGN.md, Training): what the module logs, checkpoints monitor and sweeps optimise.

Accuracies are fractions in [0, 1] (top-1 *error*, the paper's column, is ``1 - top1``); losses are
cross-entropy in nats. ``MONITOR`` feeds ``ModelCheckpoint``, pruning callbacks, the Optuna objective
and the result tables, so they can never disagree about what "best" means.
"""
from __future__ import annotations

TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1"
VAL_TOP5 = "val/top5"
VAL_TOP1_BEST = "val/top1_best"
#: ``trainer.test`` over the held-out split: the validation metrics' twins.
TEST_LOSS = "test/loss"
TEST_TOP1 = "test/top1"
TEST_TOP5 = "test/top5"

#: The metric every sweep, checkpoint and table optimises, and its direction.
MONITOR = VAL_TOP1_BEST
MONITOR_MODE = "max"

#: Complexity of the trained network (``senet.complexity``), logged once at fit start and kept in the summary.
PARAMS = "params"
GMACS = "gmacs"

#: Every metric a completed run reports in ``Result.metrics`` (final epoch, except the running best).
RESULT_METRICS = (TRAIN_LOSS, VAL_LOSS, VAL_TOP1, VAL_TOP5, VAL_TOP1_BEST)
