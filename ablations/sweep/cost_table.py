"""The measured cost of each arm beside its GMACs (DESIGN: Performance; issue 12): the sweep report's "Cost" table.

GMACs say what SE costs in arithmetic (a fraction of a percent); the time is what a user pays, and SE's
pooling and broadcast scale are memory-bound, so the two differ. Per arm, over its complete runs (means
over seeds): training throughput, median step time and its Δ against the no-SE baseline in %, wall time
per run and its Δ, peak memory (``ablations.cost``). A separate table: the main one is already wide.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ablations import compare

NOTE = ("Measured in each run (`ablations.cost`): img/s is training throughput over the steps after a warm-up, "
        "step the median training step, s / run the run's wall time (validation, checkpoints and start-up "
        "included), peak mem the CUDA max allocated on a GPU or the process's peak resident memory on a CPU "
        "(there it includes the data set and the framework, so SE's share is small); means over the seeds, Δ "
        "against the arm's no-SE baseline in %. Times depend on the machine and its load while the runs ran "
        "(see the provenance line): compare the Δs within one study, not the absolute numbers across machines. "
        "A grid runs every arm's first seed, then every arm's second, ..., so a change of load reaches all arms "
        "alike; on a shared machine the Δs still carry that noise. `benchmarks/bench_se_overhead.py` times SE "
        "against no SE in alternating rounds of one process, which is the measurement of SE's own overhead.")


def _mean(rows: Sequence[dict], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else math.nan


def _num(value: float, fmt: str) -> str:
    return "–" if math.isnan(value) else format(value, fmt)


def _pct(value: float, base: float | None) -> str:
    if base is None or math.isnan(value) or math.isnan(base) or base == 0:
        return "–"
    return f"{100 * (value / base - 1):+.1f} %"


def arm_costs(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """arm key -> mean ``train_img_per_s``, ``step_time_ms``, ``peak_mem_mb`` and ``wall_time_s`` of its complete runs."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "complete":
            groups.setdefault(compare.arm_key(r["config"]), []).append({**(r.get("cost") or {}), "wall": r["wall_time_s"]})
    return {key: {"img_s": _mean(rs, "train_img_per_s"), "step_ms": _mean(rs, "step_time_ms"),
                  "mem_mb": _mean(rs, "peak_mem_mb"), "wall_s": _mean(rs, "wall")} for key, rs in groups.items()}


def format_cost(arms: Sequence[compare.ArmSummary], rows: Sequence[dict]) -> str:
    """The markdown table: one line per arm with a complete run, in the order of ``arms``."""
    costs = arm_costs(rows)
    lines = ["| arm | GMACs | Δ GMACs | img/s | step (ms) | Δ step | s / run | Δ s / run | peak mem (MiB) | Δ mem |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        c = costs.get(a.key)
        if c is None:
            continue
        base = None if a.is_baseline else costs.get(a.baseline_key)
        ref = {k: (base or {}).get(k) for k in c}
        base_arm = next((b for b in arms if b.key == a.baseline_key), None)
        d_gmacs = "–" if a.is_baseline or base_arm is None else _pct(a.gmacs, base_arm.gmacs)
        lines.append(f"| {a.label}{' (baseline)' if a.is_baseline else ''} | {a.gmacs:.4f} | {d_gmacs} | "
                     f"{_num(c['img_s'], ',.0f')} | {_num(c['step_ms'], '.1f')} | {_pct(c['step_ms'], ref['step_ms'])} | "
                     f"{_num(c['wall_s'], '.1f')} | {_pct(c['wall_s'], ref['wall_s'])} | "
                     f"{_num(c['mem_mb'], ',.0f')} | {_pct(c['mem_mb'], ref['mem_mb'])} |")
    return "\n".join(lines) + "\n"
