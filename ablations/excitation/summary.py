"""How class-specific and how saturated each SE block's gates are (paper Sec. 7.2), per run and across a sweep.

Pure functions over ``ExcitationStats``. Class-specificity is a per-channel one-way ANOVA of the gate
values on the class label: between-class variance (of the class means, weighted by class size) over
the within-class variance, averaged over channels; ``eta2`` is the same split as a share of the total
variance (0: class-agnostic, as the paper's SE_2_3; 1: the class alone decides the gate). Saturation
is the share of (sample, channel) gate values below / above the recording thresholds (SE_5_2 in the
paper: most gates near 1, the rest near 0).
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ablations.excitation.recorder import ExcitationStats
from ablations.reporting.tables import markdown_table
from senet.tree import flatten

SUMMARY_FIELDS = ("block", "channels", "samples", "classes", "mean_gate", "specificity", "eta2",
                  "saturation_low", "saturation_high", "saturation")
VAR_FLOOR = 1e-6  # gate variance (std 0.001) below which a channel counts as not varying at all


def variance_split(stats: ExcitationStats, block: str) -> tuple[np.ndarray, np.ndarray]:
    """(C,) between-class and (C,) within-class variance of one block's gate values (population form)."""
    seen = stats.count > 0
    n = stats.count[seen].astype(np.float64)
    total = n.sum()
    mean, _ = stats.pooled(block)
    between = (n[:, None] * (stats.mean[block][seen] - mean) ** 2).sum(0) / total
    within = stats.m2[block][seen].sum(0) / total
    return between, within


def class_specificity(stats: ExcitationStats, block: str) -> tuple[float, float]:
    """(mean over channels of between/within variance, mean over channels of between/total variance).

    Channels whose total variance is below ``VAR_FLOOR`` (gates that never move, e.g. saturated ones)
    count as 0, so rounding noise on a constant gate reads as class-agnostic; the within-class variance
    is floored at ``VAR_FLOOR`` too, so a channel that varies only between classes gives a large but
    finite ratio. ``eta2`` is bounded in [0, 1]: the number to compare across models.
    """
    between, within = variance_split(stats, block)
    flat = (between + within) < VAR_FLOOR
    ratio = np.where(flat, 0.0, between / np.maximum(within, VAR_FLOOR))
    eta2 = np.where(flat, 0.0, between / np.maximum(between + within, VAR_FLOOR))
    return float(ratio.mean()), float(eta2.mean())


def saturation(stats: ExcitationStats, block: str) -> tuple[float, float]:
    """(share of gate values below thresholds[0], share above thresholds[1]) over samples and channels."""
    cells = stats.num_samples * stats.mean[block].shape[1]
    return float(stats.low[block].sum() / cells), float(stats.high[block].sum() / cells)


def block_summary(stats: ExcitationStats, block: str) -> dict:
    """One row of the per-run summary table (``SUMMARY_FIELDS``)."""
    spec, eta2 = class_specificity(stats, block)
    low, high = saturation(stats, block)
    mean, _ = stats.pooled(block)
    return {
        "block": block, "channels": int(stats.mean[block].shape[1]), "samples": stats.num_samples,
        "classes": int((stats.count > 0).sum()), "mean_gate": float(mean.mean()), "specificity": spec,
        "eta2": eta2, "saturation_low": low, "saturation_high": high, "saturation": low + high,
    }


def summarize(stats: ExcitationStats, blocks: Iterable[str] | None = None) -> list[dict]:
    """The summary rows of ``blocks`` (default: every recorded block), in forward order."""
    wanted = stats.blocks if blocks is None else [b for b in stats.blocks if b in set(blocks)]
    return [block_summary(stats, b) for b in wanted]


def write_csv(rows: list[dict], path: str | Path, fields: Iterable[str] | None = None) -> Path:
    """Write rows as CSV (floats with 6 significant digits); the header is ``fields`` or the first row's keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or (rows[0].keys() if rows else SUMMARY_FIELDS))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
    return path


def format_table(rows: list[dict], fields: Iterable[str]) -> str:
    """A markdown table of ``rows`` over ``fields`` (floats with 3 decimals)."""
    fields = list(fields)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
    return markdown_table(fields, ([fmt(r.get(k)) for k in fields] for r in rows)).rstrip("\n")


# ---- Across a sweep: one row per (run, block), with the config keys that vary between runs ---- #

_NOT_FACTORS = ("output_dir", "name", "wandb.")


def _flatten(d: dict) -> dict:
    """Dotted keys, lists as JSON text (a CSV cell and a hashable factor level)."""
    return {k: json.dumps(v) if isinstance(v, list) else v for k, v in flatten(d).items()}


def sweep_rows(run_dirs: Iterable[str | Path], metric: str = "val/top1_best") -> tuple[list[dict], list[str]]:
    """Rows (run, arm, varying config keys, ``metric``, per-block summary), one per run and recorded block.

    Runs without ``excitation/stats.npz`` (the no-SE baseline) get one row with an empty ``block``, so the
    table still shows their accuracy. Returns the rows and the config keys that differ between the runs
    with statistics (the ablated factors, ``seed`` included when there are several).
    """
    runs = []
    for d in map(Path, run_dirs):
        result = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else {}
        stats_path = d / "excitation" / "stats.npz"
        stats = ExcitationStats.load(stats_path) if stats_path.is_file() else None
        runs.append((d, result, stats, _flatten(result.get("config", {}))))
    analysed = [cfg for _, _, stats, cfg in runs if stats is not None]
    keys = sorted({k for c in analysed for k in c})
    varying = [k for k in keys if not k.startswith(_NOT_FACTORS)
               and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in analysed}) > 1]
    rows = []
    for d, result, stats, cfg in runs:
        base = {"run": d.name, "arm": re.sub(r"_s\d+$", "", d.name), **{k: cfg.get(k) for k in varying},
                metric: (result.get("metrics") or {}).get(metric)}
        rows += [{**base, **row} for row in summarize(stats)] if stats is not None else [{**base, "block": ""}]
    return rows, varying


def arm_pivot(rows: list[dict], field: str, metric: str = "val/top1_best") -> tuple[list[dict], list[str]]:
    """One row per arm (runs that differ only in the seed): ``metric`` and each block's ``field``, means over seeds.

    Returns the rows (``arm``, ``seeds``, ``metric``, one column per block) and the block columns in order.
    """
    blocks = list(dict.fromkeys(r["block"] for r in rows if r["block"]))
    arms: dict[str, dict[str, list]] = {}
    for r in rows:
        cell = arms.setdefault(r["arm"], {"runs": [], metric: [], **{b: [] for b in blocks}})
        if r["run"] not in cell["runs"]:
            cell["runs"].append(r["run"])
            if r.get(metric) is not None:
                cell[metric].append(float(r[metric]))
        if r["block"]:
            cell[r["block"]].append(float(r[field]))
    mean = lambda v: float(np.mean(v)) if v else None
    out = [{"arm": arm, "seeds": len(c["runs"]), metric: mean(c[metric]), **{b: mean(c[b]) for b in blocks}}
           for arm, c in arms.items()]
    return out, blocks
