"""compare: result rows -> arms (mean ± std over seeds), tested deltas to each arm's own no-SE baseline, table, CSV, plot."""
from __future__ import annotations

import csv
import math
import statistics

import pytest

from ablations.config import ExperimentConfig
from ablations.reporting import compare, verdicts
from ablations.reporting import plot as compare_plot
from ablations.reporting.wandb_log import summary_metrics
from senet import model_config


def row(cfg: ExperimentConfig, top1: float, params: int, gmacs: float, status: str = "complete") -> dict:
    return {"config": cfg.to_dict(), "config_hash": cfg.hash(), "seed": cfg.seed, "git_commit": "abc", "params": params,
            "gmacs": gmacs, "metrics": {"val/top1": top1, "val/top5": 1.0} if status == "complete" else {},
            "epochs": 3, "wall_time_s": 2.0, "status": status, "reason": None if status == "complete" else "boom",
            "run_dir": "runs/x", "name": f"n{cfg.seed}"}


BASE = ExperimentConfig()
SE4 = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}))
R32 = ExperimentConfig(model=model_config("resnet32_cifar"))
SE32 = ExperimentConfig(model=model_config("se_resnet32_cifar"))


@pytest.fixture
def rows() -> list[dict]:
    return [
        row(BASE.replace(seed=0), 0.90, 1000, 0.010), row(BASE.replace(seed=1), 0.92, 1000, 0.010),
        row(SE4.replace(seed=0), 0.95, 1100, 0.0101), row(SE4.replace(seed=1), 0.96, 1100, 0.0101),
        row(SE4.replace(seed=2), 0.0, 1100, 0.0101, status="failed"),
        row(R32, 0.80, 2000, 0.020), row(SE32, 0.85, 2200, 0.0202),
    ]


def test_arms_group_seeds_and_compare_to_their_own_baseline(rows):
    arms = compare.aggregate(rows)
    assert [a.label for a in arms] == ["resnet20_cifar", "se_resnet20_cifar-r4", "resnet32_cifar", "se_resnet32_cifar"]
    base, se4, r32, se32 = arms
    assert base.is_baseline and not se4.is_baseline
    assert se4.seeds == (0, 1) and se4.failed == 1  # the failed seed is counted, not averaged
    assert se4.top1_err == pytest.approx((5.0, 4.0))
    assert se4.top1_err_mean == pytest.approx(4.5) and se4.top1_err_std == pytest.approx(statistics.stdev([5.0, 4.0]))
    assert se4.d_top1_err == pytest.approx(4.5 - 9.0) and se4.d_params == 100 and se4.d_gmacs == pytest.approx(1e-4)
    # ResNet-32's SE arm is measured against ResNet-32, not against ResNet-20.
    assert se32.d_top1_err == pytest.approx(15.0 - 20.0) and se32.d_params == 200
    assert math.isnan(r32.top1_err_std)  # one seed: no spread to report
    assert base.d_top1_err == 0.0


def test_an_arm_without_its_baseline_has_no_deltas(rows):
    (se4,) = [a for a in compare.aggregate(rows[2:4]) if a.label == "se_resnet20_cifar-r4"]
    assert se4.d_top1_err is None and se4.d_params is None and se4.top1_test is None and se4.verdict == "–"
    assert verdicts.conclusion([se4]).startswith("No arm ran beside its no-SE baseline")


def test_markdown_and_text_tables(rows):
    arms = compare.aggregate(rows)
    md = compare.format_markdown(arms)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| arm | seeds | top-1 err (%) | Δ top-1 (pp) [95 % CI] | test | p | p Holm | verdict "
                               "| seeds for 80 % power |") and len(lines) == 2 + len(arms)
    # seeds 0, 1 of both arms: paired; differences -5, -4 -> mean -4.5, sd 0.707, t(1) CI +- 12.706 * 0.5
    assert "| se_resnet20_cifar-r4 | 2 (+1 failed) | 4.50 ± 0.71 | -4.50 [-10.85, +1.85] | paired t | 0.07 | 0.07 | n.s. |" in md
    assert "| resnet32_cifar (baseline) | 1 | 20.00 | – | – | – | – | – | – |" in md
    assert "| se_resnet32_cifar | 1 | 15.00 | -5.00 | – | – | – | – | – |" in md  # one seed: no test
    assert "+100 (+10.0 %)" in md and "resnet20_cifar (baseline)" in md
    text = compare.format_text(arms)
    assert text.splitlines()[0].split()[:2] == ["arm", "seeds"]


def test_tests_pair_by_seed_and_holm_runs_over_the_arms_of_one_baseline():
    base = [row(BASE.replace(seed=s), t, 1000, 0.01) for s, t in enumerate((0.90, 0.92, 0.91))]
    better = [row(SE4.replace(seed=s), t, 1100, 0.0101) for s, t in enumerate((0.95, 0.96, 0.955))]
    se16 = ExperimentConfig(model=model_config("se_resnet20_cifar"))
    other = [row(se16.replace(seed=s), t, 1050, 0.0101) for s, t in zip((0, 1, 5), (0.89, 0.93, 0.92))]
    arms = compare.aggregate(base + better + other, min_effect=0.5)
    _, b, o = arms
    assert b.top1_test.test == "paired t" and o.top1_test.test == "Welch t"  # seed 5 has no partner: Welch
    assert b.verdict == "better" and o.verdict == "n.s." and b.top1_test.p_holm == pytest.approx(2 * b.top1_test.p)
    assert b.top1_test.effect == 0.5 and b.top5_test.delta == 0.0
    words = verdicts.conclusion(arms, "digits", 0.5)
    assert words.startswith("se_resnet20_cifar-r4 is better than the baseline on digits (Δ top-1 error -4.50 pp")
    assert "se_resnet20_cifar does not differ from the baseline beyond seed noise on digits" in words
    assert "Detecting 0.5 pp at 80 % power would take about" in words
    assert summary_metrics(arms)["compare/se_resnet20_cifar-r4/verdict"] == "better"


def test_provenance_line_names_what_differs(rows):
    assert verdicts.provenance_line(rows).startswith("Provenance: all 7 runs from code abc; environment not recorded")
    env = {"torch": "2.14", "cpu": "EPYC", "isa": "AVX2", "threads": 1, "precision": "32-true", "deterministic": True}
    mixed = [dict(r, env=dict(env, threads=1 + (i % 2)), git_commit=f"c{i % 2}") for i, r in enumerate(rows)]
    line = verdicts.provenance_line(mixed)
    assert "2 code commits" in line and "threads (1, 2)" in line and line.count("\n") == 0


def test_labels_disambiguate_when_arms_share_a_model(rows):
    other = [row(BASE, 0.9, 1000, 0.01), row(BASE.override({"train.lr": 0.05}), 0.9, 1000, 0.01)]
    assert [a.label for a in compare.aggregate(other)] == ["resnet20_cifar_digits", "resnet20_cifar_digits-lr0.05"]


def test_csv_has_one_line_per_run(rows, tmp_path):
    path = compare.write_csv(rows, tmp_path / "runs.csv")
    with path.open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == len(rows)
    assert lines[2]["top1_err"] == "5.000" and lines[4]["status"] == "failed" and lines[4]["reason"] == "boom"


def test_plot_is_written(rows, tmp_path):
    path = compare_plot.plot(compare.aggregate(rows), tmp_path / "p.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
