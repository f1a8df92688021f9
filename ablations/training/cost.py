"""What a run costs: arithmetic counted once, time and memory measured (docs/DESIGN.md, Complexity; paper Sec. 4,
"Computational complexity").

``ComplexityLog`` counts the network's params and GMACs (``senet.complexity``, paper convention) once per module,
on the eager network before ``train.compile`` compiles it (``ablations.training.compiling``), and logs them to every
logger when fitting starts; ``SEClassifier.configure_callbacks`` hands it to any Trainer that fits the module.

GMACs say what an arm costs in arithmetic, not in time: the SE squeeze and scale are a fraction of a
percent of the MACs and 10-50 % of a step on a GPU in channels_last. So every result row carries its
measured cost too (``CostCallback``): training throughput (images/s over all steps after a warm-up), the median
step time, and peak memory (CUDA max allocated on a GPU, the process's peak RSS on the CPU). Steps are timed from
batch start to batch end, with a CUDA synchronize on GPUs as Lightning's ``ThroughputMonitor`` does, so
the time is the kernels', not the launch queue's. Written by hand because ``ThroughputMonitor`` logs a
rolling window at every step (rows in every logger) and keeps no whole-run figure for a result row.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ablations.training.data_check import input_size
from ablations.training.metrics import GMACS, PARAMS

WARMUP_STEPS = 5  # the first steps of an attempt pay for allocator growth, cuDNN autotuning and compilation


def count_complexity(module: pl.LightningModule) -> Any:
    """``senet.complexity.Complexity`` of ``module.model`` at ``data_check.input_size(module)`` (paper convention)."""
    from senet.complexity import complexity

    # The counter runs on meta tensors in eval mode; the RNG is forked as well, because counting must
    # not move the random stream, or a resumed run would diverge from an uninterrupted one.
    with torch.random.fork_rng(devices=[]):
        return complexity(module.model, input_size=input_size(module))


class ComplexityLog(Callback):
    """Sets ``module.complexity`` once, on the eager network, and logs ``params`` and ``gmacs`` when fitting starts.

    Lightning calls the callbacks' ``setup`` before the module's, and this callback comes before the compile in
    ``SEClassifier.configure_callbacks``, so the count sees the network as built: the counter runs its own dispatch
    modes, which a compiled graph does not pass through. ``DataCheck`` comes first and refuses a datamodule whose
    images the network cannot take; one that is not ours (unchecked) with other input channels is not counted here.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or pl_module.complexity is not None:
            return
        if input_size(pl_module)[0] == pl_module.cfg.model.in_chans:
            pl_module.complexity = count_complexity(pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.complexity is None:  # a datamodule the module does not check (not one of ours)
            pl_module.complexity = count_complexity(pl_module)
        record = {PARAMS: float(pl_module.complexity.params), GMACS: float(pl_module.complexity.gmacs)}
        for logger in trainer.loggers:
            logger.log_metrics(record, step=trainer.global_step)


class CostCallback(Callback):
    """Measures throughput, step time and peak memory of the training steps of one attempt (rank 0)."""

    def __init__(self, warmup: int = WARMUP_STEPS) -> None:
        self.warmup = warmup
        self._steps: list[float] = []
        self._samples = 0
        self._seen = 0
        self._t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # The peak is this attempt's training, not an earlier run's in the same process (quickstart/sweep workers).
        reset_peak_memory(trainer.strategy.root_device)
        # Short runs (tests, the quickstart's small arms) keep three quarters of their steps for the measurement.
        total = trainer.estimated_stepping_batches
        if isinstance(total, (int, float)) and total < 4 * self.warmup:
            self.warmup = int(total) // 4

    @staticmethod
    def _sync(trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._sync(trainer)
        step = time.perf_counter() - self._t0
        self._seen += 1
        if self._seen <= self.warmup:
            return
        self._steps.append(step)
        self._samples += int(batch[0].shape[0]) * trainer.world_size

    def cost(self, device: torch.device | None = None) -> dict[str, float | None]:
        """``train_img_per_s``, ``step_time_ms`` (median) and ``peak_mem_mb``; ``None`` where nothing was measured."""
        rate = self._samples / sum(self._steps) if self._steps else None  # all ranks' images per second of step time
        return {"train_img_per_s": None if rate is None else round(rate, 2),
                "step_time_ms": round(1000 * statistics.median(self._steps), 3) if self._steps else None,
                "peak_mem_mb": peak_memory_mb(device)}


def reset_peak_memory(device: torch.device | None = None) -> None:
    """Start a new peak: CUDA's max-allocated counter on a GPU; on Linux the process's peak RSS (``VmHWM``)."""
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # writing "5" to clear_refs resets VmHWM (Linux >= 4.0); elsewhere the lifetime peak stays
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device | None = None) -> float:
    """CUDA max allocated on a GPU device, else this process's peak resident set size since the last reset, in MiB."""
    if device is not None and device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        with open("/proc/self/status") as fh:
            hwm = next((line for line in fh if line.startswith("VmHWM:")), None)
        if hwm is not None:
            return round(int(hwm.split()[1]) / 2**10, 1)  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
