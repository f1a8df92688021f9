"""A trial's user attributes (docs/DESIGN.md, Sweeps): flat scalars for optuna-dashboard, one compact row per run.

optuna-dashboard and ``optuna trials`` show each user attribute as one column or line, so a run's numbers
are flat scalars (``params``, ``gmacs``, ``val/top5``, ``epochs``, ``wall_time_s``, the measured cost, the
run folder, the W&B run id, ...); a trial of several seeds shows their mean (numbers) or their list (text).
What a report needs beyond them, the run's whole config (an arm's identity and its paired baseline) and
its environment (the provenance line), stays in ``runs``: one compact entry per run holding those two and
only the fields where the run differs from the trial's flat values, so nothing is stored twice.
``trial_rows`` rebuilds the ``Result.to_dict()`` rows from both.
"""
from __future__ import annotations

import datetime
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablations.training.metrics import RESULT_METRICS

#: Result-row fields kept as they are (``metrics`` and ``cost`` are spread into their own keys instead).
ROW_FIELDS = ("seed", "status", "params", "gmacs", "epochs", "wall_time_s", "attempts", "config_hash", "name",
              "run_dir", "git_commit", "reason")
COST_FIELDS = ("train_img_per_s", "step_time_ms", "peak_mem_mb")
#: Facts of the run folder, not of the row: shown on the trial, not needed to rebuild the row.
FOLDER_FIELDS = ("wandb_run_id", "run_started", "reused_run")
#: Per-run keys of a several-seed trial that are listed, not averaged.
LISTED = ("seed",)
#: Trial attributes that identify the trial and are never overwritten by its runs (the grid's dedup key).
KEPT = ("config_hash",)


def run_attrs(row: dict, folder: dict | None = None) -> dict[str, Any]:
    """One result row (and its run-folder facts) as flat scalar attributes; ``None`` fields are left out."""
    out = {k: row.get(k) for k in ROW_FIELDS}
    out.update({m: row.get("metrics", {}).get(m) for m in RESULT_METRICS})
    out.update({k: (row.get("cost") or {}).get(k) for k in COST_FIELDS})
    out.update(folder or {})
    return {k: v for k, v in out.items() if v is not None}


def _combine(key: str, values: list) -> Any:
    """The trial's value of ``key`` over its runs: the common value, the mean of numbers, or the list as text."""
    if all(v == values[0] for v in values):
        return values[0]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numbers and key not in LISTED:
        return round(statistics.fmean(values), 6)
    return ", ".join(map(str, values))


def trial_attrs(rows: Sequence[dict], folders: Sequence[dict], kept: dict[str, Any]) -> dict[str, Any]:
    """The user attributes of a trial whose runs gave ``rows``: flat scalars plus the compact ``runs`` list.

    Args:
        rows: the trial's result rows (``Result.to_dict()``), one per seed.
        folders: each run's folder facts (``folder_attrs``).
        kept: the trial's current attributes; ``KEPT`` keys among them stay as they are.
    """
    per_run = [run_attrs(r, f) for r, f in zip(rows, folders)]
    keys = list(dict.fromkeys(k for a in per_run for k in a))
    flat = {k: _combine(k, [a.get(k) for a in per_run]) for k in keys}
    flat.update({k: kept[k] for k in KEPT if k in kept})
    runs = []
    for row, attrs in zip(rows, per_run):
        # Only what the flat value does not already say for this run; None: a field this run lacks.
        own = {k: attrs.get(k) for k in flat if k not in FOLDER_FIELDS and attrs.get(k) != flat[k]}
        runs.append({"config": row["config"], "env": row.get("env") or {}, **own})
    return {**flat, "runs": runs}


def trial_rows(user_attrs: dict) -> list[dict]:
    """The result rows a trial keeps (``trial_attrs``), rebuilt in ``Result.to_dict()`` form."""
    if "runs" not in user_attrs:  # the older layout of trial attributes: whole rows
        return list(user_attrs.get("results") or ([user_attrs["result"]] if "result" in user_attrs else []))
    rows = []
    for entry in user_attrs["runs"]:
        merged = {**user_attrs, **entry}
        row = {k: merged.get(k) for k in ROW_FIELDS}
        row.update(config=entry["config"], env=entry["env"],
                   metrics={m: merged[m] for m in RESULT_METRICS if merged.get(m) is not None},
                   cost={k: merged.get(k) for k in COST_FIELDS})
        rows.append(row)
    return rows


def folder_attrs(row: dict, trial_start: datetime.datetime | None) -> dict[str, Any]:
    """The run's W&B run id, when its first attempt started, and whether this trial trained it at all.

    ``reused_run`` is true when every training attempt began before the trial did: the run was complete on
    disk and the trial only read its ``result.json``, so Optuna's start/complete times of the trial show
    the lookup's seconds, and ``wall_time_s`` (the attempts' sum) is the run's real training time.
    """
    from ablations.training.run_folder import ATTEMPTS_FILE

    out = {}
    if row.get("wandb_dir"):  # W&B names its run folder <mode>-run-<time>-<run id>; none when W&B is disabled
        out["wandb_run_id"] = Path(row["wandb_dir"]).name.rsplit("-", 1)[-1]
    try:
        attempts = json.loads((Path(row["run_dir"]) / ATTEMPTS_FILE).read_text())
        starts = [datetime.datetime.fromisoformat(a["started"]) for a in attempts]
    except (OSError, ValueError, KeyError, TypeError):
        return out
    if starts:
        out["run_started"] = starts[0].isoformat()
        if trial_start is not None:
            # Attempts record whole seconds (UTC); Optuna's times are local and naive: 1 s of slack.
            local = [s.astimezone().replace(tzinfo=None) for s in starts]
            out["reused_run"] = all(s < trial_start - datetime.timedelta(seconds=1) for s in local)
    return out
