"""Measured cost per arm beside its GMACs (paper Sec. 4, "Computational complexity"; issue: SE arms at their cost).

The SE blocks add well under 1 % GMACs and, on GPUs in channels_last, 10-50 % training time: a table with
GMACs alone understates what an SE arm costs. This one puts each arm's measured training throughput, median
step time and peak memory (``ablations.training.cost``, recorded in every ``result.json``) next to its GMACs, with the
change against the arm's no-SE baseline. The figures come from the runs themselves, on whatever machine ran
them and alongside whatever else ran there, so they are a guide; ``benchmarks/`` measures controlled ratios.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ablations.reporting.compare import ArmSummary
from ablations.reporting.tables import markdown_table

COLUMNS = ("arm", "GMACs", "Δ GMACs", "train img/s", "step (ms)", "Δ step time", "s / run", "Δ s / run",
           "peak mem (MiB)", "Δ peak mem")

NOTE = ("Cost: measured in the runs (`result.json` `cost`, median over an arm's seeds): training images per second "
        "after a warm-up, the median training step, s / run the mean wall time of a run (validation, checkpoints "
        "and start-up included), and peak memory during training (CUDA max allocated on a GPU; on the CPU the "
        "peak resident set of the process, which includes the data and the framework, so SE's share is small); "
        "Δ: against the arm's no-SE baseline. Times depend on the machine and its load while the runs ran: "
        "compare the Δs within one table, and see `benchmarks/` for controlled ratios.")


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _relative(value: float | None, base: float | None) -> str:
    """``+9.3 %``: the change of ``value`` against ``base``; ``–`` when either is missing."""
    if value is None or base is None or not base:
        return "–"
    return f"{100.0 * (value / base - 1.0):+.1f} %"


def table_rows(summaries: Sequence[ArmSummary]) -> list[list[str]]:
    """One list of strings per arm, in ``COLUMNS`` order."""
    by_key = {s.key: s for s in summaries}
    rows = []
    for s in summaries:
        base = None if s.is_baseline else by_key.get(s.baseline_key)
        rows.append([
            s.label + (" (baseline)" if s.is_baseline else ""), f"{s.gmacs:.4f}",
            _relative(s.gmacs, base.gmacs) if base else "–",
            _num(s.img_per_s, ",.0f"), _num(s.step_time_ms, ".1f"),
            _relative(s.step_time_ms, base.step_time_ms) if base else "–",
            _num(s.wall_time_s, ".1f"), _relative(s.wall_time_s, base.wall_time_s) if base else "–",
            _num(s.peak_mem_mb, ",.0f"), _relative(s.peak_mem_mb, base.peak_mem_mb) if base else "–",
        ])
    return rows


def has_cost(summaries: Sequence[ArmSummary]) -> bool:
    """Whether any arm has a measured cost (runs made before costs were recorded have none)."""
    return any(s.img_per_s is not None or s.step_time_ms is not None for s in summaries)


def format_markdown(summaries: Sequence[ArmSummary]) -> str:
    """A GitHub-markdown table of the arms' measured cost."""
    return markdown_table(COLUMNS, table_rows(summaries))
