"""A run's checkpoints: whole or absent, ``best.ckpt`` and ``last.ckpt``, the RNG streams in them, the resume point.

``AtomicCheckpoint`` writes ``last.ckpt``/``best.ckpt`` to a temporary name and renames it, holding interrupts
meanwhile, so a checkpoint is whole or absent (a write that fails, say on a full disk, removes the temporary file
and names it: ``ablations.training.faults``); ``RNGStateCallback`` keeps the RNG streams in it, so a resume is
bit-equal to an uninterrupted run; ``resume_point`` reads where a run folder's ``last.ckpt`` resumes, with
tensors and plain data only (``senet.safe_load``). Written by hand where Lightning's ``ModelCheckpoint`` falls
short: its ``save_last`` lags after an epoch that did not improve, and it keeps no RNG state.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ablations.training import interrupts
from ablations.training.faults import written_whole
from ablations.training.run_history import save_csv_history
from senet import safe_load


def resume_point(ckpt: Path) -> dict[str, int]:
    """``{"epoch", "global_step"}`` of a checkpoint to resume from; ``ValueError`` naming the file if unreadable."""
    hint = "rerun with --no-resume (resume=False) to start this run over"
    if not zipfile.is_zipfile(ckpt):  # torch.save writes a zip whose directory is at the end: truncation shows here
        raise ValueError(f"checkpoint {ckpt} is truncated or not a checkpoint (was the run killed while saving?); {hint}")
    try:
        state = safe_load.load(ckpt, map_location="cpu", mmap=True)
        return {"epoch": int(state["epoch"]), "global_step": int(state["global_step"])}
    except safe_load.UnsafeCheckpoint:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise ValueError(f"checkpoint {ckpt} cannot be read ({type(exc).__name__}: {exc}); {hint}") from None


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files are written to ``<name>.part`` and renamed, with interrupts held meanwhile."""

    saved_epoch: int | None = None  # the epoch index of the last file written

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Raised at the next batch end, not here: the epoch's metrics are logged after its checkpoint, and a
        # resume from this checkpoint starts at the next epoch, so they must reach the CSV history first.
        with interrupts.deferred(raise_at_end=False):
            # The epoch's validation rows are logged by now: on disk before the checkpoint that says the epoch is done.
            save_csv_history(trainer)
            part = filepath + ".part"
            with written_whole(part):
                super()._save_checkpoint(trainer, part)
                if trainer.is_global_zero:
                    os.replace(part, filepath)
            self.saved_epoch = trainer.current_epoch
            self._last_checkpoint_saved = filepath


def checkpoint_callbacks(folder: Path, monitor: str, mode: str) -> list[AtomicCheckpoint]:
    """``best.ckpt`` (the best ``monitor`` so far) and ``last.ckpt`` (the state after every epoch), in that order.

    Lightning's ``save_last`` rewrites ``last.ckpt`` only in an epoch that also wrote a top-k file, so after
    an epoch that did not improve it would hold an older epoch: a resume would train epochs again and the
    analysis tools would read older weights. ``last.ckpt`` is therefore its own callback with no monitor,
    which writes every epoch; it runs second, so it holds the best tracker's state of that same epoch. No
    version counter: the names stay ``best.ckpt``/``last.ckpt``, which resume and the analysis tools read.
    """
    best = AtomicCheckpoint(dirpath=str(folder), filename="best", monitor=monitor, mode=mode, save_top_k=1,
                            enable_version_counter=False)
    last = AtomicCheckpoint(dirpath=str(folder), filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False)
    return [best, last]


class RNGStateCallback(Callback):
    """Keeps the global RNG streams (torch, numpy, random) in the checkpoint, for exact resumes.

    Shuffling and augmentation draw from the global generators, so a resumed run must continue from the
    state the interrupted run had when its epoch-end checkpoint was written. Lightning restores callback
    state before fitting starts; its sanity check runs under ``isolate_rng``, so the next draw after the
    restore is the next epoch's data loader, exactly as in the uninterrupted run.
    """

    def state_dict(self) -> dict:
        states = _collect_rng_states()
        # numpy's state holds an ndarray, which torch.load(weights_only=True) refuses; store a tensor instead.
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        states = state_dict.get("rng")
        if states is not None:
            name, keys, pos, has_gauss, cached = states["numpy"]
            keys = keys.numpy() if torch.is_tensor(keys) else keys  # an ndarray in checkpoints of older code
            _set_rng_states({**states, "numpy": (name, keys.astype(np.uint32), pos, has_gauss, cached)})
