"""Tests for the operators table (issue 25): SE's successors on ResNet-50, their cost beside their papers' values."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from ablations.cli import main
from ablations.paper import operators as O
from ablations.paper import render as R
from ablations.paper import tables as T
from senet.complexity import complexity
from senet.config import OPERATORS
from senet.registry import build_model, get_arch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "complexity"


@pytest.fixture(scope="module")
def data():
    return T.load_paper_values()


@pytest.fixture(scope="module")
def costs(data):
    return O.costs(data)


def test_one_row_per_registered_operator_each_with_its_paper(data):
    ops = O.operators(data)
    assert [o.operator for o in ops] == list(OPERATORS)
    assert all(o.paper and o.knobs and o.where for o in ops)
    for o in ops:  # the operator the row names is the one it builds
        assert dict(o.overrides).get("se.operator", "se") == o.operator


def test_costs_are_the_built_models_counts(costs):
    for c in costs:
        with torch.device("meta"):
            net = build_model(c.op.model, **dict(c.op.overrides))
        assert c.params == sum(p.numel() for p in net.parameters()), c.op.label
        if c.op.operator in ("eca", "coord"):  # one traced forward each: two stand for all (the table shares the path)
            assert c.macs == complexity(net, get_arch(net.cfg.arch).input_size, "paper").macs, c.op.label
    se = next(c for c in costs if c.op.operator == "se")
    assert (se.params, se.macs) == se.reference  # SE-ResNet-50 is the reference of the deltas
    for c in costs:  # the two deltas differ by SE-ResNet-50's own cost over ResNet-50
        (pb, mb), (pr, mr) = c.delta(c.base), c.delta(c.reference)
        assert (pb - pr, mb - mr) == (c.reference[0] - c.base[0], c.reference[1] - c.base[1])
    by = {c.op.operator: c for c in costs}
    assert by["simam"].params == by["ge"].params == se.base[0]  # parameter-free operators add nothing
    assert by["eca"].params - se.base[0] == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7  # Eq. 12 as released: k = 5, 5, 5, 7


def test_every_printed_value_has_a_source_and_every_operator_a_value_or_a_reason(data):
    spec = data["tables"][O.TABLE]
    assert spec["source"] and spec["rows"]
    cells = T.cells(data, (O.TABLE,))
    assert cells and all(c.source for c in cells)
    printed_ops = {dict(c.overrides).get("se.operator", "se") for c in cells}
    for op in O.operators(data):
        if op.operator in printed_ops:
            assert not op.not_printed, op.label
        else:
            assert re.match(r"not (printed|found): \S", op.not_printed), op.label
    assert not {c.table for c in cells} & set(T.SCORED_TABLES)
    assert T.score(T.build_rows(O.TABLE, synthetic([{"label": "A", "model": "resnet50", "params": "25.6",
                                                      "source": "s"}]), fake_measure())) == (0, 0)


# ---- Match marks and the added-cost quantities, with an injected measurement ---- #


def fake_measure(params=25_557_118, base_params=25_557_032, macs=3_869_099_776, base_macs=3_857_973_248):
    def measure(model, overrides, forward=True):
        p, m = (base_params, base_macs) if model == "resnet50" else (params, macs)
        cats = {"conv": m, "linear": 0, "se_squeeze": 0, "se_scale": 0, "bn": 0, "add": 0, "elementwise": 0}
        counts = T.OpCounts(params=p, categories=cats, se=dict.fromkeys(cats, 0))
        return T.Measured(params=p, bn_stats=0, bn_layers=0, bn_affine=0, se_bias=0, se_bias_slots=0, counts=counts)
    return measure


def synthetic(rows):
    return {"tables": {O.TABLE: {"title": "t", "source": "s", "rows": rows}}}


def test_added_params_and_gflops_are_counts_over_the_baseline_and_marked():
    rows = T.build_rows(O.TABLE, synthetic([
        {"label": "k", "model": "se_resnet50", "baseline": "resnet50", "params_added": "86", "gflops_added": "0.011",
         "source": "s"},
        {"label": "m", "model": "se_resnet50", "baseline": "resnet50", "params_added": "80", "gflops_added": "4.7e-4",
         "source": "s", "note": "why"}]), fake_measure())
    by = {(r.cell.label, r.cell.quantity): r for r in rows}
    assert by["k", "params_added"].ours == 86 and by["k", "params_added"].match
    assert by["k", "gflops_added"].ours == pytest.approx(0.011126528) and by["k", "gflops_added"].match
    assert not by["m", "params_added"].match and by["m", "params_added"].explanation == "why"
    assert not by["m", "gflops_added"].match and by["m", "gflops_added"].explanation == "why"
    assert T.matches(0.00047, "4.7e-4") and not T.matches(0.00048, "4.7e-4")
    cost = [O.Cost(O.Operator("se", "SE", "se_resnet50", (), "k", "w", "p"), 2, 3, (1, 1), (2, 3))]
    md = O.render_md({"title": "t", "source": "s"}, cost, rows, "cmd", "conv")
    assert "| 86 | 86.00 | +0.00 (+0.00 %) | ✓ |" in md and "| 80 | 86.00 | +6.00 (+7.50 %) | ✗ | why | s |" in md
    assert md.rstrip().endswith("Reproduced to the printed precision: 2/4 (not part of the SE tables' score).")


# ---- The command, the committed files and the README ---- #


@pytest.mark.slow  # ~12 s: each miss's explanation scores the other conventions over every SE table's model
def test_cli_writes_the_operator_files_with_their_command(tmp_path, capsys):
    assert main(["complexity", "--table", "operators", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("score: the operators table is not scored")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operators.csv", "operators.md"]
    assert (tmp_path / "operators.md").read_text().splitlines()[0] == (
        "<!-- generated by `senet-ablate complexity --table operators`; do not edit by hand -->")
    for name in ("operators.md", "operators.csv"):  # the committed files are what the command writes
        assert (RESULTS / name).read_text() == (tmp_path / name).read_text(), (
            f"results/complexity/{name} is stale: run `senet-ablate complexity --table all`")


def committed_costs() -> dict[tuple[str, str], dict]:
    lines = [ln for ln in (RESULTS / "operators.csv").read_text().splitlines() if not ln.startswith("#")]
    return {(r["operator"], r["quantity"]): r for r in csv.DictReader(lines) if r["kind"] == "cost"}


def test_committed_csv_holds_the_cost_table_as_computed(costs):
    rows = committed_costs()
    for c in costs:
        printed = O.cost_cells(c)
        for q in ("Params (M)", "GMACs"):
            row = rows[c.op.operator, q]
            assert (row["ours"], row["vs_resnet50"], row["vs_se_resnet50"]) == (
                printed[q], printed[f"{q.split()[0]} vs ResNet-50"], printed[f"{q.split()[0]} vs SE-ResNet-50"])


def test_readme_operator_table_quotes_the_generated_csv():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- operators-table: results/complexity/operators.csv -->\n(.*?)<!-- /operators-table -->",
                      readme, re.S)
    assert block, "README.md lost its operators table"
    body = [ln for ln in block.group(1).splitlines()[2:] if ln.startswith("|")]
    rows = committed_costs()
    assert len(body) == len(OPERATORS)
    for line in body:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        op = cells[0].strip("`")
        params, gmacs = rows[op, "Params (M)"], rows[op, "GMACs"]
        assert cells[4:] == [params["ours"], params["vs_resnet50"], gmacs["ours"], gmacs["vs_resnet50"]], op


def test_summary_links_the_operators_table():
    assert "[operators](operators.md)" in (RESULTS / "summary.md").read_text()
    assert R.FILE_NAMES[O.TABLE] == "operators"
