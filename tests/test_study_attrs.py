"""Studies readable in optuna-dashboard (issue 13): metric names, flat trial attributes, one curve point per epoch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from test_sweep_local import write

from ablations.sweep.attrs import folder_attrs, trial_attrs, trial_rows
from ablations.sweep.spec import load_spec
from ablations.sweep.study import load_study, setup_study
from ablations.sweep.worker import run_worker
from ablations.training.result import Result

FLAT = ("seed", "status", "params", "gmacs", "val/top1", "val/top5", "val/top1_best", "epochs", "wall_time_s",
        "train_img_per_s", "step_time_ms", "peak_mem_mb", "run_dir", "name", "config_hash", "git_commit")


def _sweep(tmp_path: Path, db: str) -> optuna.Study:
    path = write(tmp_path, name="attrs", baseline=True, space={"model.se.reduction": [4]}, budget={"epochs": 2})
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / db}"
    setup_study(spec, url, "attrs")
    run_worker(spec, url, "attrs")
    return load_study(spec, url, "attrs")


@pytest.mark.slow
def test_trials_carry_flat_attributes_metric_names_and_curves(tmp_path, one_thread):
    study = _sweep(tmp_path, "study.db")
    assert study.metric_names == ["val/top1_best"]
    trials = study.trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)  # no pruner: none stopped
    for t in trials:
        attrs = t.user_attrs
        assert set(FLAT) <= set(attrs), set(FLAT) - set(attrs)
        assert all(not isinstance(attrs[k], (dict, list)) for k in attrs if k != "runs")
        assert "result" not in attrs and "results" not in attrs
        assert attrs["epochs"] == 2 and attrs["reused_run"] is False and attrs["train_img_per_s"] > 0
        # One entry per run holding only the config and environment: nothing twice.
        assert [set(e) for e in attrs["runs"]] == [{"config", "env"}]
        assert len(json.dumps(attrs)) < 2500, len(json.dumps(attrs))
        # The learning curve: one value per epoch (0, 1), the last being the trial's value (the running best).
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.intermediate_values[1] == pytest.approx(t.value)
        # The report rebuilds the run's result row from the attributes.
        disk = Result.load(attrs["run_dir"]).to_dict()
        row = trial_rows(attrs)[0]
        assert {k: disk[k] for k in row} == row
    from ablations.sweep.report import write_report

    text = write_report(study, tmp_path / "report", html=False, plots=False).read_text()
    cost = text.split("## Cost\n\n")[1].split("\n\n")[0].splitlines()
    assert len(cost) == 4 and cost[2].startswith("| no SE (baseline) | ") and "%" in cost[3]


@pytest.mark.slow
def test_a_reused_run_keeps_its_real_wall_time_and_curve(tmp_path, one_thread):
    first = _sweep(tmp_path, "first.db")
    again = _sweep(tmp_path, "again.db")  # same study name and run folders: every run is complete on disk
    for old, new in zip(first.trials, again.trials):
        assert new.user_attrs["reused_run"] is True
        assert new.user_attrs["wall_time_s"] == old.user_attrs["wall_time_s"] > 0
        assert new.user_attrs["run_started"] == old.user_attrs["run_started"]
        assert new.intermediate_values == old.intermediate_values  # from the run folder's history
        assert new.value == old.value


def _row(seed: int, top1: float, status: str = "complete") -> dict:
    return {"config": {"seed": seed}, "config_hash": f"h{seed}", "seed": seed, "git_commit": "abc", "params": 10,
            "gmacs": 0.5, "metrics": {"val/top1": top1, "val/top5": 1.0}, "epochs": 3, "wall_time_s": 2.0 + seed,
            "status": status, "reason": None, "run_dir": f"runs/s{seed}", "name": f"s{seed}", "attempts": 1,
            "env": {"torch": "2"}, "cost": {"train_img_per_s": 100.0, "step_time_ms": 5.0, "peak_mem_mb": None},
            "wandb_dir": None}


def test_several_seeds_show_means_and_rebuild_each_row():
    rows = [_row(0, 0.5), _row(1, 0.7)]
    attrs = trial_attrs(rows, [{}, {}], {"config_hash": "h0", "worker": "w"})
    assert attrs["config_hash"] == "h0"  # the grid's dedup key stays
    assert attrs["val/top1"] == pytest.approx(0.6) and attrs["seed"] == "0, 1" and attrs["params"] == 10
    assert "peak_mem_mb" not in attrs and "reason" not in attrs  # nothing measured: no attribute
    rebuilt = trial_rows({**attrs, "worker": "w"})
    for got, want in zip(rebuilt, rows):
        want = {k: v for k, v in want.items() if k != "wandb_dir"}
        assert got == want


def test_old_attributes_still_read():
    assert trial_rows({"results": [{"a": 1}], "result": {"a": 1}}) == [{"a": 1}]
    assert trial_rows({"result": {"a": 2}}) == [{"a": 2}]


def test_folder_attrs_wandb_id_and_reuse(tmp_path):
    import datetime

    (tmp_path / "attempts.json").write_text(json.dumps([{"started": "2026-01-02T03:04:05+00:00"}]))
    row = {"run_dir": str(tmp_path), "wandb_dir": str(tmp_path / "wandb" / "offline-run-20260102_030405-ab12cd34")}
    later = datetime.datetime(2026, 1, 3)
    assert folder_attrs(row, later) == {"wandb_run_id": "ab12cd34", "run_started": "2026-01-02T03:04:05+00:00",
                                        "reused_run": True}
    assert folder_attrs(row, datetime.datetime(2025, 12, 31))["reused_run"] is False
    shutil.rmtree(tmp_path)
    assert folder_attrs({"run_dir": str(tmp_path), "wandb_dir": None}, later) == {}


def test_epoch_report_reports_and_never_asks_the_pruner():
    import torch

    from ablations.sweep.curves import EpochReport

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    report = EpochReport(trial, "val/top1_best")
    for epoch, sanity in ((0, True), (0, False), (1, False)):
        trainer = SimpleNamespace(callback_metrics={"val/top1_best": torch.tensor(0.5 + epoch / 4)},
                                  sanity_checking=sanity, is_global_zero=True, current_epoch=epoch)
        report.on_validation_end(trainer, None)  # this pruner would prune every value: it is never asked
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.75} and trial.should_prune()
