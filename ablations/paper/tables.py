"""The paper's complexity tables (Tables 2, 3, 10, 13, 15, 16 and Sec. 4), ours beside the printed values.

The ``operators`` entry holds other papers' values (SE's successors on ResNet-50, ``ablations.paper.operators``):
read and matched the same way, never part of the score.

Pure functions over two inputs: the printed values (``ablations/paper/paper_values.yaml``) and a ``measure``
callable that returns our counts for a registered model (by default: build it on the meta device,
one traced forward). A printed value is *matched* when ours, rounded half-up to the printed number's
decimals, equals it. The score uses one convention for everything (``paper`` MACs, learnable
parameters); every miss gets a one-line explanation: which other convention or setting would
reproduce it and why we do not use it, or, where none does, the layout note from the data file.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

import torch
import yaml

from senet.complexity import CONVENTIONS, OpCounts, count_ops, summarize
from senet.recalibration import se_modules
from senet.registry import build_model, get_arch, model_config

SCORED_TABLES = ("2", "3", "10", "13", "15", "16")
TABLES = SCORED_TABLES + ("sec4", "operators")
# quantity -> divisor of a direct count; None: a change relative to the row's baseline
MAC_QUANTITIES = {"gflops": 1e9, "mflops": 1e6, "gflops_increase_pct": None, "gflops_increase_pct_rounded": None,
                  "gflops_added": None}
PARAM_QUANTITIES = {"params": 1e6, "params_increase": None, "params_increase_pct": None, "params_added": None}
HEADERS = {"gflops": "GFLOPs", "mflops": "MFLOPs", "params": "Params (M)", "gflops_increase_pct": "GFLOPs +%",
           "gflops_increase_pct_rounded": "GFLOPs +% (rounded)", "params_increase": "Params +M",
           "params_increase_pct": "Params +%", "gflops_added": "GFLOPs added", "params_added": "Params added"}
PARAM_CONVENTIONS = {
    "learnable": "learnable parameters",
    "caffe-blobs": "Caffe's blob count (+ BN running mean, var and factor)",
    "no-bn-affine": "conv and FC layers only (no BN gamma, beta)",
}


@dataclass(frozen=True)
class Setting:
    """How a value is counted: a MAC convention, a params convention, and whether the SE bias is flipped."""

    macs: str = "paper"
    params: str = "learnable"
    flip_bias: bool = False


PAPER = Setting()


@dataclass(frozen=True)
class Cell:
    """One printed value: table, row label, our reading of the network, quantity and the printed string."""

    table: str
    label: str
    model: str
    overrides: tuple  # ((dotted key, value), ...) sorted
    quantity: str
    printed: str
    baseline: str | None = None
    note: str = ""
    source: str = ""  # where the printed value was read, when the table's source does not say

    @property
    def setting_text(self) -> str:
        parts = [self.model] + [f"{k}={json.dumps(v)}" for k, v in self.overrides]
        size = get_arch(model_config(self.model).arch).input_size
        return " ".join(parts) + ("" if size[1:] == (224, 224) else f" @{size[1]}x{size[2]}")


@dataclass(frozen=True)
class Measured:
    """What ``measure`` returns for one model: op counts (or None if not needed) and the BN blob sizes."""

    params: int
    bn_stats: int  # running mean + running var elements
    bn_layers: int
    bn_affine: int  # BN gamma + beta elements
    se_bias: int  # SE FC bias elements the model has (0 when se.bias is off)
    se_bias_slots: int  # SE FC bias elements it would have with se.bias on
    counts: OpCounts | None = None


def load_paper_values() -> dict:
    """The printed values, as shipped in the ``senet`` package."""
    return yaml.safe_load(resources.files("ablations.paper").joinpath("paper_values.yaml").read_text())


def cells(data: dict, tables=TABLES) -> list[Cell]:
    """Every printed value of ``tables``, in table and row order."""
    out = []
    for t in (t for t in tables if t in data["tables"]):
        spec = data["tables"][t]
        defaults = (spec.get("defaults") or {}).get("set", {})
        for row in spec["rows"]:
            merged = {**defaults, **row.get("set", {})}
            if model_config(row["model"]).se is None:  # SE knobs mean nothing for a baseline
                merged = {k: v for k, v in merged.items() if not k.startswith("se.")}
            overrides = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in merged.items()))
            for q in (*MAC_QUANTITIES, *PARAM_QUANTITIES):
                if q in row:
                    out.append(Cell(t, row["label"], row["model"], overrides, q, str(row[q]), row.get("baseline"),
                                    row.get("note", ""), row.get("source", "")))
    return out


@functools.cache
def _built(model: str, overrides: tuple):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        return build_model(model, **dict(overrides))


@functools.cache
def default_measure(model: str, overrides: tuple, forward: bool = True) -> Measured:
    """Build ``model`` with ``overrides`` on the meta device and count it (cached)."""
    net = _built(model, overrides)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # SE's own FCs only: the bias flip reads the SE paper's tables (a successor's layers are not SE FCs)
    fcs = [fc for m in se_modules(net).values() for fc in (getattr(m, "fc1", None), getattr(m, "fc2", None))
           if fc is not None]
    counts = count_ops(net, get_arch(net.cfg.arch).input_size, strict=True) if forward else None
    return Measured(params=sum(p.numel() for p in net.parameters()),
                    bn_stats=sum(m.running_mean.numel() + m.running_var.numel() for m in bns if m.running_mean is not None),
                    bn_layers=len(bns), bn_affine=sum(p.numel() for m in bns for p in m.parameters()),
                    se_bias=sum(fc.bias.numel() for fc in fcs if fc.bias is not None),
                    se_bias_slots=sum(fc.out_channels for fc in fcs), counts=counts)


def _params(m: Measured, setting: Setting) -> int:
    params = m.params
    if setting.flip_bias:  # the same network with the SE FC biases switched the other way
        params += m.se_bias_slots if m.se_bias == 0 else -m.se_bias
    if setting.params == "caffe-blobs":
        return params + m.bn_stats + m.bn_layers
    if setting.params == "no-bn-affine":
        return params - m.bn_affine
    return params


def value(cell: Cell, setting: Setting = PAPER, measure: Callable = default_measure) -> float:
    """Our number for ``cell`` in the cell's unit, counted as ``setting`` says."""
    def one(model: str, overrides: tuple):
        if cell.quantity in PARAM_QUANTITIES:
            return _params(measure(model, overrides, forward=False), setting)
        return summarize(measure(model, overrides).counts, setting.macs).macs

    ours = one(cell.model, cell.overrides)
    scale = {**MAC_QUANTITIES, **PARAM_QUANTITIES}[cell.quantity]
    if scale is not None:
        return ours / scale
    base = one(cell.baseline, ())
    if cell.quantity == "gflops_increase_pct_rounded":  # as the paper did: from the printed-precision GFLOPs
        q = Decimal(10) ** -2
        ours, base = (float(Decimal(str(v / 1e9)).quantize(q, ROUND_HALF_UP)) for v in (ours, base))
    if cell.quantity == "params_increase":
        return (ours - base) / 1e6
    if cell.quantity in ("params_added", "gflops_added"):  # what the blocks add: a count, or G multiply-adds
        return (ours - base) / (1 if cell.quantity == "params_added" else 1e9)
    return 100.0 * (ours - base) / base


def decimals(printed: str) -> int:
    return max(0, -Decimal(printed).as_tuple().exponent)


def matches(ours: float, printed: str) -> bool:
    """Whether ``ours`` rounds (half-up) to ``printed`` at the printed number's precision."""
    exp = Decimal(printed).as_tuple().exponent
    return Decimal(repr(ours)).quantize(Decimal(1).scaleb(exp), ROUND_HALF_UP) == Decimal(printed)


def fmt(ours: float, printed: str, extra: int = 2, sign: bool = False) -> str:
    """``ours`` with two more decimals than ``printed``, so the rounding is visible."""
    return f"{ours:{'+' if sign else ''}.{decimals(printed) + extra}f}"


@dataclass(frozen=True)
class Row:
    """One printed value beside ours, as the tables print it."""

    cell: Cell
    ours: float
    match: bool
    explanation: str

    @property
    def deviation(self) -> float:
        return self.ours - float(self.cell.printed)

    @property
    def deviation_pct(self) -> float:
        return 100.0 * self.deviation / float(self.cell.printed) if float(self.cell.printed) else 0.0


def _alternatives(cell: Cell) -> list[tuple[Setting, str]]:
    if cell.quantity in MAC_QUANTITIES:
        return [(Setting(macs=c), f"the `{c}` convention") for c in CONVENTIONS if c != "paper"]
    has_se = any(model_config(m).se is not None for m in (cell.model, cell.baseline) if m)
    bias = dict(cell.overrides).get("se.bias", True)
    flip = "with SE FC biases" if not bias else "without SE FC biases"
    out = []
    for flip_bias in ((False, True) if has_se else (False,)):
        for pc, text in PARAM_CONVENTIONS.items():
            if (pc, flip_bias) != ("learnable", False):
                words = [text] if pc != "learnable" else []
                out.append((Setting(params=pc, flip_bias=flip_bias), ", ".join(words + ([flip] if flip_bias else []))))
    return out


def _why_not(cell: Cell, setting: Setting, pool: list[Cell], measure: Callable) -> str:
    """Why we do not use ``setting``: the paper setting it contradicts, or what it loses elsewhere."""
    if setting.flip_bias and setting.params == "learnable":
        bias = dict(cell.overrides).get("se.bias", True)
        return ("not used: the ablations remove the SE FC biases (Sec. 6.1)" if not bias
                else "not used: the released models have SE FC biases")
    is_macs = cell.quantity in MAC_QUANTITIES
    same_kind = [c for c in pool if (c.quantity in MAC_QUANTITIES) == is_macs]
    paper_hits = {c: matches(value(c, PAPER, measure), c.printed) for c in same_kind}
    alt_hits = {c: matches(value(c, setting, measure), c.printed) for c in same_kind}
    n, alt = sum(paper_hits.values()), sum(alt_hits.values())
    if is_macs:
        text = f"not used: it reproduces {alt}/{len(same_kind)} printed FLOPs values, the paper convention {n}"
    else:
        text = f"not used: we count learnable parameters ({alt}/{len(same_kind)} printed params match it, {n} ours)"
    lost = [c for c in same_kind if paper_hits[c] and not alt_hits[c]]
    if lost:
        text += f"; it breaks {lost[0].label} ({fmt(value(lost[0], setting, measure), lost[0].printed)} vs {lost[0].printed})"
    return text


def explain(cell: Cell, pool: list[Cell], measure: Callable = default_measure) -> str:
    """One line on why ``cell`` misses: a setting that would match and why we do not use it, or the note."""
    for setting, text in _alternatives(cell):
        alt = value(cell, setting, measure)
        if matches(alt, cell.printed):
            return f"{text} gives {fmt(alt, cell.printed)} = {cell.printed}; {_why_not(cell, setting, pool, measure)}"
    if cell.note:
        return cell.note
    closest = min(_alternatives(cell), key=lambda s: abs(value(cell, s[0], measure) - float(cell.printed)))
    return (f"no counting convention we know reproduces it; closest: {closest[1]} "
            f"{fmt(value(cell, closest[0], measure), cell.printed)}")


def build_rows(table: str, data: dict, measure: Callable = default_measure) -> list[Row]:
    """The rows of one table, ours beside the paper's, every miss explained."""
    pool = cells(data, SCORED_TABLES)
    rows = []
    for cell in cells(data, (table,)):
        ours = value(cell, PAPER, measure)
        ok = matches(ours, cell.printed)
        rows.append(Row(cell, ours, ok, "" if ok else explain(cell, pool, measure)))
    return rows


def score(rows: list[Row]) -> tuple[int, int]:
    """(matched, total) over the scored tables' rows."""
    scored = [r for r in rows if r.cell.table in SCORED_TABLES]
    return sum(r.match for r in scored), len(scored)


def convention_scores(data: dict, measure: Callable = default_measure) -> dict[str, tuple[int, int]]:
    """For reference: the score if every FLOPs value were counted with another convention (params unchanged)."""
    pool = cells(data, SCORED_TABLES)
    return {c: (sum(matches(value(x, Setting(macs=c), measure), x.printed) for x in pool), len(pool))
            for c in CONVENTIONS}


def settings_json(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows as plain dicts (the ``--format json`` output)."""
    return [{"table": r.cell.table, "model": r.cell.label, "setting": r.cell.setting_text,
             "quantity": HEADERS[r.cell.quantity], "paper": r.cell.printed, "ours": round(r.ours, 6),
             "deviation": round(r.deviation, 6), "deviation_pct": round(r.deviation_pct, 4), "match": r.match,
             "explanation": r.explanation} for r in rows]
