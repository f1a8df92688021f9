"""One result row (docs/DESIGN.md, Training): what ran, on what, what it cost, what it scored.

``Result`` is the ``result.json`` of a run folder, written by ``run_experiment`` and read by the
quickstart, the sweep objective, ``compare`` and the reports. ``status`` is one of ``STATUSES``:
``complete`` only when training reached its planned end; ``interrupted`` (a signal, or a fault of the machine
such as a full disk: ``ablations.training.faults``) resumes on a rerun.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ablations.training.faults import written_whole

RESULT_FILE = "result.json"
STATUSES = ("complete", "failed", "pruned", "interrupted")


@dataclass
class Result:
    """One result row: what ran, what it cost, what it scored. ``metrics`` uses ``ablations.training.metrics`` names."""

    config: dict
    config_hash: str
    seed: int
    git_commit: str | None
    params: int
    gmacs: float
    metrics: dict[str, float]
    epochs: int
    wall_time_s: float
    status: str
    reason: str | None
    run_dir: str
    name: str = ""
    wandb_dir: str | None = None
    attempts: int = 1  # training attempts (the first run and every resume); wall_time_s is their sum
    env: dict = dataclasses.field(default_factory=dict)  # provenance.collect(): what changes the digits
    # cost.CostCallback of the last attempt: train_img_per_s, step_time_ms (median), peak_mem_mb
    cost: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a ``result.json`` (or a run folder holding one)."""
        path = Path(path)
        return cls.from_dict(json.loads((path / RESULT_FILE if path.is_dir() else path).read_text()))

    def save(self) -> Path:
        """Write ``<run_dir>/result.json`` atomically (a reader never sees half a row)."""
        path = Path(self.run_dir) / RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        with written_whole(tmp):
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n")
            os.replace(tmp, path)
        return path


def git_commit() -> str | None:
    """The commit of the code that ran (``-dirty`` if the tree had uncommitted changes), or ``None``.

    Only a clone of this repository has one: an installed package (a wheel in site-packages) has ``None``
    even inside someone's git work tree, whose commit says nothing of this code. Its version is in
    ``env`` (``provenance.collect``).
    """
    root = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=False, cwd=root, capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None
        sha = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
