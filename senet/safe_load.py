"""Reading a torch file (checkpoint, weights) without running it: ``torch.load(weights_only=True)`` and one line for a refusal.

A checkpoint is a pickle, and a pickle can call any function while it loads. Run folders are shared on
a cluster, so every file the project reads with ``torch.load`` (a resume, ``excitation``, released weights) goes through
torch's restricted unpickler, which builds tensors and plain data (dicts, lists, numbers, strings) and
refuses anything else. The project's own checkpoints hold nothing else: their RNG streams are tensors
(``ablations.training.checkpoints.RNGStateCallback``); the older layout stores numpy's state as an ndarray, so
numpy's array reconstructors are allowed too (they rebuild data; an object array's items still pass
through the same restricted unpickler). A file that needs more is refused with one line naming it and
what it asked for; it is never executed.
"""
from __future__ import annotations

import contextlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _numpy_globals() -> list:
    """numpy's ndarray reconstruction (numpy 1.x and 2.x spell the module differently)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32)]
    return [_reconstruct, np.ndarray, np.dtype, *dtypes]


class UnsafeCheckpoint(ValueError):
    """A checkpoint asks the unpickler for more than tensors and plain data; it was not loaded."""


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """The allowlist for every restricted load inside the block (Lightning's own ``weights_only=True`` loads too).

    torch's warning about a pickle protocol other than its own is silenced: such a file is refused (``refusal``)
    in one line, and the warning would make that line three."""
    with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        yield


def pickle_protocol(path: str | Path) -> int | None:
    """The pickle protocol of a torch zip file's ``data.pkl`` (its PROTO opcode); ``None`` if it cannot tell."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            head = archive.open(name).read(2) if name else b""
    except (OSError, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else None


def refusal(path: str | Path, exc: BaseException) -> UnsafeCheckpoint | None:
    """The one-line refusal for ``exc`` if it is the restricted unpickler saying no, else ``None``."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)|global '?([\w.]+)'?", str(exc))
    if found is None:
        # torch.save writes protocol 2, the restricted unpickler's; a later protocol's opcodes are "Unsupported
        # operand", so what such a file would call cannot be checked. A damaged file fails the same way: that is
        # unreadable, not refused, and the caller says so.
        protocol = pickle_protocol(path) if "Unsupported operand" in str(exc) else None
        if protocol is None or protocol <= 2:
            return None
        return UnsafeCheckpoint(f"checkpoint {path} is refused: it is pickled with protocol {protocol}, which torch's "
                                "restricted unpickler (torch.load weights_only=True) cannot check for code, so "
                                "senet-ablate does not load it. Use a checkpoint written by senet-ablate train "
                                "(torch.save's protocol 2), or your own trusted copy")
    asked = next(g for g in found.groups() if g)
    return UnsafeCheckpoint(f"checkpoint {path} is refused: loading it would call {asked}, and senet-ablate reads "
                            "torch files as tensors and plain data only (torch.load weights_only=True); it was "
                            "not loaded. Use a checkpoint written by senet-ablate train, or your own trusted copy")


def load(path: str | Path, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)`` with the allowlist; ``UnsafeCheckpoint`` for a refused file."""
    try:
        with safe_loading():
            return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        refused = refusal(path, exc)
        if refused is None:
            raise
        raise refused from None
