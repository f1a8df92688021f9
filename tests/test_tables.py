"""Tests for the complexity tables: printed-precision matching, explanations, the score, the CLI and staleness."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablations.cli import main
from ablations.paper import render as cmd
from ablations.paper import tables as T
from senet.complexity import OpCounts

RESULTS = Path(__file__).resolve().parents[1] / "results" / "complexity"


@pytest.mark.parametrize("ours, printed, ok", [
    (3.85797, "3.86", True), (3.8715, "3.87", True), (7.5702, "7.58", False), (7.9951, "8.00", True),
    (3.855, "3.86", True),  # half-up, not banker's rounding
    (568.74, "569", True), (25.557, "25", False), (25.557, "25.6", True), (2.4419, "2.4", True), (0.2591, "0.26", True),
])
def test_matches_rounds_half_up_to_the_printed_precision(ours, printed, ok):
    assert T.matches(ours, printed) is ok


def test_paper_values_cover_the_six_tables_with_sources():
    data = T.load_paper_values()
    cells = T.cells(data, T.SCORED_TABLES)
    assert len(cells) == 50
    per_table = {t: sum(c.table == t for c in cells) for t in T.SCORED_TABLES}
    assert per_table == {"2": 16, "3": 8, "10": 6, "13": 10, "15": 4, "16": 6}
    assert all(data["tables"][t]["source"] for t in T.TABLES)
    for c in cells:  # ablation tables: bias-free SE FCs on every SE model, nothing for baselines
        bias = dict(c.overrides).get("se.bias")
        se_model = c.model.startswith("se_")
        assert bias is (False if c.table in ("10", "13", "15", "16") and se_model else None), c


# ---- Pure logic with an injected measurement ---- #


def fake_measure(conv: int, add: int = 0, params: int = 25_600_000):
    cats = {"conv": conv, "linear": 0, "se_squeeze": 0, "se_scale": 0, "bn": 0, "add": add, "elementwise": 0}
    counts = OpCounts(params=params, categories=cats, se=dict.fromkeys(cats, 0))

    def measure(model, overrides, forward=True):
        return T.Measured(params=params, bn_stats=50_000, bn_layers=50, bn_affine=50_000, se_bias=0,
                          se_bias_slots=0, counts=counts)
    return measure


def synthetic(rows):
    return {"tables": {"2": {"title": "t", "source": "s", "rows": rows}}}


def test_a_miss_names_the_convention_that_would_match_and_why_not():
    data = synthetic([{"label": "A", "model": "resnet50", "gflops": "3.86"},
                      {"label": "B", "model": "resnet50", "gflops": "3.85"}])
    rows = T.build_rows("2", data, fake_measure(conv=3_850_000_000, add=10_000_000))
    assert [r.match for r in rows] == [False, True]
    assert rows[0].explanation.startswith("the `paper+add` convention gives 3.8600 = 3.86; not used")
    assert "B (3.8600 vs 3.85)" in rows[0].explanation  # what that convention would break
    assert rows[0].deviation == pytest.approx(-0.01)
    assert T.score(rows) == (1, 2)


def test_a_miss_no_convention_explains_falls_back_to_the_layout_note():
    data = synthetic([{"label": "A", "model": "resnet50", "gflops": "9.99", "note": "layout differs"}])
    assert T.build_rows("2", data, fake_measure(conv=3_850_000_000))[0].explanation == "layout differs"
    data = synthetic([{"label": "A", "model": "resnet50", "gflops": "9.99"}])
    assert "no counting convention" in T.build_rows("2", data, fake_measure(conv=3_850_000_000))[0].explanation


def test_params_miss_is_explained_by_the_caffe_blob_count():
    data = synthetic([{"label": "A", "model": "resnet50", "params": "25.7"}])
    row = T.build_rows("2", data, fake_measure(conv=1, params=25_640_000))[0]
    assert not row.match and row.explanation.startswith("Caffe's blob count")
    assert "25.690 = 25.7" in row.explanation


# ---- The real tables (small ones here; the full set in the slow tests) ---- #


def test_table16_and_the_sec4_numbers():
    data = T.load_paper_values()
    rows = {(r.cell.label, r.cell.quantity): r for r in T.build_rows("16", data)}
    assert all(r.match for r in rows.values())
    assert T.fmt(rows["NoSqueeze", "gflops"].ours, "4.27") == "4.2745"
    assert round(rows["ResNet-50", "gflops"].ours, 2) == 3.86 and round(rows["SE", "gflops"].ours, 2) == 3.87
    assert (round(rows["ResNet-50", "params"].ours, 1), round(rows["SE", "params"].ours, 1)) == (25.6, 28.1)


@pytest.mark.slow  # its explanation scores the alternatives over every printed value
def test_table15_se3x3_gflops_match_and_its_params_miss_is_explained():
    rows = {(r.cell.label, r.cell.quantity): r for r in T.build_rows("15", T.load_paper_values())}
    assert rows["SE 3x3", "gflops"].match
    miss = rows["SE 3x3", "params"]
    assert not miss.match and "Caffe's blob count" in miss.explanation and "25.767 = 25.8" in miss.explanation


def test_cli_writes_the_table_files_with_their_command_and_prints_the_score(tmp_path, capsys):
    assert main(["complexity", "--table", "16", "--format", "csv", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("score: 6/6 printed complexity values of Table 16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table16.csv", "table16.md"]
    assert (tmp_path / "table16.md").read_text().splitlines()[0] == (
        "<!-- generated by `senet-ablate complexity --table 16`; do not edit by hand -->")
    assert (tmp_path / "table16.csv").read_text().startswith("# generated by senet-ablate complexity --table 16")


def test_cli_counts_one_model(capsys):
    assert main(["complexity", "--model", "se_resnet50", "--set", "se.reduction=8", "--set", "se.bias=false",
                 "--format", "json", "--convention", "paper+bn"]) == 0
    info = json.loads(capsys.readouterr().out)
    eq5 = 2 * (3 * 256**2 + 4 * 512**2 + 6 * 1024**2 + 3 * 2048**2) // 8  # paper Eq. 5, r = 8
    assert info["params"] == 25_557_032 + eq5 and info["convention"] == "paper+bn"
    assert info["breakdown"]["other"] == 10_587_136


def test_cli_bad_override_is_one_error_line(capsys):
    assert main(["complexity", "--model", "se_resnet50", "--set", "se.reduction"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


# ---- Full regeneration ---- #


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("complexity")
    files, rows = cmd.generate(list(T.TABLES))
    for name, text in files.items():
        (out / name).write_text(text)
    return out, rows


@pytest.mark.slow
def test_committed_results_are_not_stale(regenerated):
    out, _ = regenerated
    committed = sorted(p.name for p in RESULTS.iterdir())
    assert committed == sorted(p.name for p in out.iterdir()), "run `senet-ablate complexity --table all`"
    for name in committed:
        assert (RESULTS / name).read_text() == (out / name).read_text(), (
            f"results/complexity/{name} is stale: run `senet-ablate complexity --table all`")


@pytest.mark.slow
def test_every_miss_is_explained_by_a_setting_or_a_layout_note(regenerated):
    _, rows = regenerated
    misses = [r for r in rows if not r.match]
    assert misses and all(r.explanation for r in misses)
    assert not [r.cell.label for r in misses if r.explanation.startswith("no counting convention")]
    assert all("\n" not in r.explanation for r in misses)
