"""SE against its successors on ResNet-50: what each operator costs, beside what its paper printed.

Two parts, both from the ``operators`` entry of ``paper_values.yaml``. The cost table: one network per operator
(``se.operator``) at its paper's default knobs and placement, all in our ResNet-50, so that the deltas to
ResNet-50 and to SE-ResNet-50 compare; params are ``sum(p.numel())`` of the built model, GMACs the ``paper``
convention of the SE tables. The printed values: each paper's ResNet-50 numbers on our reading of its network,
matched and explained as the SE tables are (``ablations.paper.tables``), never part of their score; an operator
whose paper printed nothing we could find says so and where we looked (``not_printed``).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

from ablations.paper import tables as T
from ablations.reporting.tables import cell, markdown_table
from senet.complexity import summarize

TABLE = "operators"
BASELINE, REFERENCE = "resnet50", "se_resnet50"  # the deltas: to the plain network and to SE
COST_COLUMNS = ("operator", "paper", "knobs", "where", "our setting", "Params (M)", "Params vs ResNet-50",
                "Params vs SE-ResNet-50", "GMACs", "GMACs vs ResNet-50", "GMACs vs SE-ResNet-50")
PRINTED_COLUMNS = ("model", "our setting", "quantity", "paper", "ours", "deviation", "match", "why it differs",
                   "source")
OPERATOR_COUNTING = ("For a successor, its squeeze and scale are its own context aggregation and final combination, "
                     "each counted as its module's docstring in senet/attention/ says.")
CSV_COLUMNS = ("kind", "operator", "label", "setting", "quantity", "paper", "ours", "vs_resnet50",
               "vs_se_resnet50", "deviation", "deviation_pct", "match", "explanation", "source")


@dataclass(frozen=True)
class Operator:
    """One row of the cost table: an operator at its paper's defaults, and where its printed values stand."""

    operator: str
    label: str
    model: str
    overrides: tuple  # ((dotted key, value), ...) sorted
    knobs: str
    where: str
    paper: str
    not_printed: str = ""

    @property
    def setting_text(self) -> str:
        return " ".join([self.model] + [f"{k}={json.dumps(v)}" for k, v in self.overrides])


@dataclass(frozen=True)
class Cost:
    """An operator's params and paper-convention MACs, and the same for ResNet-50 and SE-ResNet-50."""

    op: Operator
    params: int
    macs: int
    base: tuple[int, int]  # ResNet-50 (params, macs)
    reference: tuple[int, int]  # SE-ResNet-50 (params, macs)

    def delta(self, other: tuple[int, int]) -> tuple[int, int]:
        return self.params - other[0], self.macs - other[1]


def operators(data: dict) -> list[Operator]:
    """The cost table's networks, in the data file's order."""
    out = []
    for row in data["tables"][TABLE]["operators"]:
        sets = {k: tuple(v) if isinstance(v, list) else v for k, v in (row.get("set") or {}).items()}
        out.append(Operator(row["operator"], row["label"], row["model"], tuple(sorted(sets.items())), row["knobs"],
                            row["where"], row["paper"], row.get("not_printed", "")))
    return out


def _count(model: str, overrides: tuple, measure: Callable) -> tuple[int, int]:
    m = measure(model, overrides)
    return m.params, summarize(m.counts, "paper").macs


def costs(data: dict, measure: Callable = T.default_measure) -> list[Cost]:
    """Every operator's cost beside ResNet-50's and SE-ResNet-50's (paper convention, learnable parameters)."""
    base, ref = _count(BASELINE, (), measure), _count(REFERENCE, (), measure)
    return [Cost(op, *_count(op.model, op.overrides, measure), base, ref) for op in operators(data)]


def _params_delta(d: int, of: int) -> str:
    return f"{d:+,} ({100.0 * d / of:+.2f} %)"


def _macs_delta(d: int, of: int) -> str:
    return f"{d / 1e9:+.4f} ({100.0 * d / of:+.2f} %)"


def cost_cells(c: Cost) -> dict[str, str]:
    """The cost table's numbers as printed (the README quotes these strings)."""
    (dpb, dmb), (dpr, dmr) = c.delta(c.base), c.delta(c.reference)
    return {"Params (M)": f"{c.params / 1e6:.3f}", "Params vs ResNet-50": _params_delta(dpb, c.base[0]),
            "Params vs SE-ResNet-50": _params_delta(dpr, c.reference[0]), "GMACs": f"{c.macs / 1e9:.4f}",
            "GMACs vs ResNet-50": _macs_delta(dmb, c.base[1]), "GMACs vs SE-ResNet-50": _macs_delta(dmr, c.reference[1])}


def _printed_cells(r: T.Row) -> list[str]:
    c = r.cell
    return [cell(c.label), f"`{c.setting_text}`", T.HEADERS[c.quantity], c.printed, T.fmt(r.ours, c.printed),
            f"{T.fmt(r.deviation, c.printed, sign=True)} ({r.deviation_pct:+.2f} %)", "✓" if r.match else "✗",
            cell(r.explanation), cell(c.source)]


def render_md(spec: dict, cost: list[Cost], rows: list[T.Row], command: str, convention: str) -> str:
    head = [f"<!-- generated by `{command}`; do not edit by hand -->", f"## {spec['title']}", "",
            f"Source: {spec['source']}.", "", f"{convention} {OPERATOR_COUNTING}", "", "### What each operator costs", "", ""]
    table = [[cell(c.op.label), cell(c.op.paper), cell(c.op.knobs), cell(c.op.where), f"`{c.op.setting_text}`",
              *cost_cells(c).values()] for c in cost]
    printed = [_printed_cells(r) for r in rows]
    printed += [[cell(c.op.label), f"`{c.op.setting_text}`", "Params (M), GFLOPs",
                 c.op.not_printed.split(":")[0], "", "", "–", cell(c.op.not_printed.split(": ", 1)[-1]),
                 cell(c.op.paper)] for c in cost if c.op.not_printed]
    hit = sum(r.match for r in rows)
    return ("\n".join(head) + markdown_table(COST_COLUMNS, table)
            + "\n".join(["", "### What their papers printed (ResNet-50)", "", ""])
            + markdown_table(PRINTED_COLUMNS, printed)
            + f"\nReproduced to the printed precision: {hit}/{len(rows)} (not part of the SE tables' score).\n")


def render_csv(cost: list[Cost], rows: list[T.Row], command: str | None) -> str:
    """Long format: two ``cost`` rows per operator (params, GMACs), then one ``printed`` row per printed value."""
    buf = io.StringIO()
    if command is not None:
        buf.write(f"# generated by {command}; do not edit by hand\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in cost:
        v = cost_cells(c)
        for q in ("Params (M)", "GMACs"):
            w.writerow(["cost", c.op.operator, c.op.label, c.op.setting_text, q, c.op.not_printed.split(":")[0],
                        v[q], v[f"{q.split(' ')[0]} vs ResNet-50"], v[f"{q.split(' ')[0]} vs SE-ResNet-50"],
                        "", "", "", c.op.not_printed.split(": ", 1)[-1], c.op.paper])
    for r in rows:
        c = r.cell
        w.writerow(["printed", "", c.label, c.setting_text, T.HEADERS[c.quantity], c.printed, T.fmt(r.ours, c.printed),
                    "", "", T.fmt(r.deviation, c.printed, sign=True), f"{r.deviation_pct:+.2f}",
                    "yes" if r.match else "no", r.explanation, c.source])
    return buf.getvalue()
