"""cost_table: each arm's measured cost (medians over seeds) beside GMACs, Δ against its own baseline."""
from __future__ import annotations

import sys

import pytest

from ablations.config import ExperimentConfig
from ablations.reporting import compare, cost_table
from ablations.training.cost import peak_memory_mb, reset_peak_memory
from senet import model_config

BASE = ExperimentConfig()
SE4 = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}))


def row(cfg: ExperimentConfig, seed: int, img_s: float | None, step_ms: float | None, mem: float, wall: float,
        status: str = "complete") -> dict:
    cost = {} if img_s is None else {"train_img_per_s": img_s, "step_time_ms": step_ms, "peak_mem_mb": mem}
    return {"config": cfg.replace(seed=seed).to_dict(), "seed": seed, "params": 1000, "gmacs": 0.0100 if
            cfg.model.se is None else 0.0101, "metrics": {"val/top1": 0.9, "val/top5": 1.0}, "epochs": 3,
            "wall_time_s": wall, "status": status, "cost": cost}


def test_cost_is_the_median_over_seeds_and_its_delta_is_against_the_baseline():
    rows = [row(BASE, 0, 1000.0, 10.0, 500.0, 20.0), row(BASE, 1, 900.0, 12.0, 520.0, 22.0),
            row(BASE, 2, 100.0, 90.0, 510.0, 21.0),  # one run on a busy machine: the median ignores it
            row(SE4, 0, 800.0, 12.5, 530.0, 30.0), row(SE4, 1, 850.0, 13.0, 540.0, 30.0),
            row(SE4, 2, 10.0, 1.0, 1.0, 1.0, status="failed")]  # failed runs do not count
    base, se = compare.aggregate(rows)
    assert (base.img_per_s, base.step_time_ms, base.peak_mem_mb) == (900.0, 12.0, 510.0)
    assert (se.img_per_s, se.step_time_ms, se.peak_mem_mb) == (825.0, 12.75, 535.0)
    table = cost_table.format_markdown([base, se])
    header, rule, base_line, se_line = table.strip().splitlines()
    assert header.count("|") == rule.count("|") == len(cost_table.COLUMNS) + 1
    cells = dict(zip(cost_table.COLUMNS, (c.strip() for c in se_line.strip("|").split("|"))))
    assert cells["train img/s"] == "825" and cells["step (ms)"] == "12.8"
    assert cells["Δ step time"] == f"{100 * (12.75 / 12.0 - 1):+.1f} %" == "+6.2 %"
    assert cells["Δ s / run"] == f"{100 * (30.0 / 21.0 - 1):+.1f} %"
    assert cells["Δ peak mem"] == "+4.9 %" and cells["Δ GMACs"] == "+1.0 %"
    assert "(baseline)" in base_line and base_line.count("–") == 4  # no Δ for the baseline itself


def test_runs_without_a_measured_cost_show_dashes_and_no_table_is_claimed():
    rows = [row(BASE, 0, None, None, 0.0, 20.0), row(SE4, 0, None, None, 0.0, 25.0)]
    arms = compare.aggregate(rows)
    assert not cost_table.has_cost(arms)
    se_line = cost_table.format_markdown(arms).strip().splitlines()[-1]
    assert se_line.count("–") == 5  # img/s, step, Δ step, peak mem, Δ peak mem; s / run is always known


def test_the_cpu_peak_is_the_attempts_own_not_an_earlier_runs_in_the_same_process():
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM reset is Linux-only")
    big = bytearray(400 * 2**20)  # an earlier run's peak, ~400 MiB, touched so it is resident
    before = peak_memory_mb()
    del big
    reset_peak_memory()
    after = peak_memory_mb()
    assert before - after > 300, (before, after)
