"""Local sweeps (SQLite, one worker): fast refusals, pruning, multi-objective Pareto fronts (docs/DESIGN.md, Sweeps)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import load_spec
from ablations.sweep.study import load_study, setup_study
from ablations.sweep.worker import run_worker

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
        "data": {"name": "digits", "image_size": 8, "batch_size": 64},
        "train": {"recipe": "quick", "limit_train_batches": 4, "limit_val_batches": 2},
        "wandb": {"mode": "disabled"}}


def write(tmp_path: Path, **spec) -> Path:
    spec.setdefault("base", {**TINY, "output_dir": str(tmp_path / "runs")})
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ablations.cli", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("case, extra, message", [
    ("typo", {"spaec": {"model.se.reduction": [4]}}, "unknown key spaec; allowed keys: name, description"),
    ("unreachable", {"storage": "postgresql://nobody@127.0.0.1:1/nothing"},
     "storage postgresql+psycopg2://nobody@127.0.0.1:1/nothing cannot be reached"),
    ("sqlite-workers", {}, "is SQLite, which cannot be shared by 2 workers"),
])
def test_bad_sweeps_stop_fast_with_one_message(tmp_path, case, extra, message):
    spec = {"name": case, "space": {"model.se.reduction": [4, 8]}, **extra}
    path = write(tmp_path, **spec)
    # Fast means the checks run before torch is imported (seconds of a loaded machine's start-up): -X importtime
    # lists every module the refusing process imported, on stderr beside the message.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ablations.cli", "sweep", str(path),
                           *(["--workers", "2"] if case == "sqlite-workers" else [])], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    imported = [ln.rsplit("|", 1)[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("import time:")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("senet-ablate sweep: error:") and message in lines[0], lines
    assert "ablations.sweep.storage" in imported  # the listing is there, the sweep command's checks among it
    assert not [m for m in imported if m.split(".")[0] in ("torch", "lightning", "torchvision")]
    assert not (tmp_path / "runs").exists()  # nothing was created


@pytest.mark.parametrize("extra, message", [
    ({"base": {"train": {"lrr": 0.1}}}, "base: unknown key train.lrr; allowed keys: train.recipe"),
    ({"space": {"model.se.reductoin": [4]}}, "space.model.se.reductoin: value 4 gives no valid config: unknown key"),
])
def test_nested_typos_stop_before_any_work(tmp_path, extra, message):
    # These need the config classes (and so torch): still one line, still before anything is created.
    spec = {"name": "nested", "space": {"model.se.reduction": [4, 8]}, **extra}
    spec["base"] = {**TINY, "output_dir": str(tmp_path / "runs"), **spec.get("base", {})}
    proc, _ = sweep_cli(str(write(tmp_path, **spec)))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_hopeless_arm_is_pruned(tmp_path, one_thread):
    # lr 1e-5 cannot leave chance level in three epochs; the median rule stops it after its first epoch.
    path = write(tmp_path, name="prune", space={"train.lr": [0.1, 0.00001]}, objectives=["val/top1_best"],
                 pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, budget={"epochs": 3})
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 'prune.db'}"
    setup_study(spec, url, "prune")
    run_worker(spec, url, "prune")
    good, hopeless = load_study(spec, url, "prune").trials
    assert good.params["train.lr"] == 0.1 and good.state == optuna.trial.TrialState.COMPLETE
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    row = trial_rows(hopeless.user_attrs)[0]
    assert row["status"] == "pruned" and row["epochs"] < 3
    assert max(hopeless.intermediate_values.values()) < min(good.intermediate_values.values())
    # The report command reads the same study: one row per run, the pruned arm marked as not complete.
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "ablations.cli", "report", "prune", "--storage", url, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"report.md", "runs.csv", "arms.png", "accuracy_vs_gmacs.png",
                                                 "optuna_parallel_coordinate.html", "optuna_history.html"}
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 3 and sum(",pruned," in line for line in runs) == 1
    report = (out / "report.md").read_text()
    assert "| lr=0.1 | 1 |" in report and not re.search(r"\bnan\b", report)  # ("Provenance" holds "nan")
    assert "## Runs that did not complete" in report and "| lr=1e-05 | 0 | pruned |" in report


def dominates(a, b, directions) -> bool:
    sign = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(sign, a, b))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(sign, a, b))


@pytest.mark.slow
def test_multi_objective_front_holds_only_non_dominated_arms(tmp_path, one_thread):
    path = write(tmp_path, name="pareto", baseline=True,
                 space={"model.se.reduction": [2, 16], "model.se.squeeze": ["avg", "none"]},
                 objectives=[{"val/top1_best": "maximize"}, {"gmacs": "minimize"}],
                 sampler={"type": "nsga2", "seed": 0, "population_size": 3}, budget={"n_trials": 6, "epochs": 1})
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 'pareto.db'}"
    setup_study(spec, url, "pareto")
    assert run_worker(spec, url, "pareto") == 6
    study = load_study(spec, url, "pareto")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6
    front = study.best_trials
    assert front
    for t in front:
        assert not any(dominates(o.values, t.values, study.directions) for o in done)
    for t in done:
        if t.number not in {f.number for f in front}:
            assert any(dominates(f.values, t.values, study.directions) or f.values == t.values for f in front)
    # Arms the sampler proposed twice were trained once and reused (dedupe by config hash).
    trained = [t for t in done if "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["arm_hash"] for t in trained}) == len(trained)
    gmacs = {t.user_attrs["arm_hash"]: t.values[1] for t in done}
    assert len(set(gmacs.values())) >= 2  # the objectives really differ between arms
    # The report's front (over arms: top-1 error and GMACs) holds exactly the non-dominated arms.
    from ablations.sweep.report import study_rows, summaries, write_report

    text = write_report(study, tmp_path / "report").read_text()
    arms = [a for a in summaries(study_rows(study), spec_factors(spec)) if a.seeds]
    front_line = text.split("## Pareto front (top-1 error against GMACs)\n\n")[1].splitlines()[0]
    err = {a.label: round(a.top1_err_mean, 4) for a in arms}  # float32 accuracies: equal to 1e-4 % is equal
    for a in arms:
        beaten = any(err[b.label] <= err[a.label] and b.gmacs <= a.gmacs and
                     (err[b.label] < err[a.label] or b.gmacs < a.gmacs) for b in arms)
        assert (f"{a.label} (" in front_line) == (not beaten), (a.label, front_line)
    assert "## By model.se.squeeze" in text and (tmp_path / "report" / "optuna_pareto_front.html").is_file()


def spec_factors(spec) -> list[str]:
    return [p.key for p in spec.space]


def test_pareto_and_labels():
    from ablations.sweep.report import arm_label, pareto

    assert pareto([(1.0, 2.0), (2.0, 1.0), (2.0, 2.0), (0.5, 3.0)]) == [1, 0, 3]
    cfg = {"model": {"se": {"reduction": 4, "stages": None}}, "train": {"lr": 0.1}}
    assert arm_label(cfg, ["model.se.reduction", "model.se.stages", "train.lr"]) == "r=4, stages=all, lr=0.1"
    base = {"model": {"se": None}, "train": {"lr": 0.1}}
    assert arm_label(base, ["model.se.reduction", "train.lr"]) == "no SE, lr=0.1"


@pytest.mark.slow
def test_n_trials_caps_a_grid_and_a_rerun_resumes_it(tmp_path, one_thread):
    path = write(tmp_path, name="cap", baseline=True, space={"model.se.reduction": [4, 8]}, budget={"epochs": 1})
    spec = load_spec(path)
    url = f"sqlite:///{tmp_path / 'cap.db'}"
    setup_study(spec, url, "cap")
    assert run_worker(spec, url, "cap", n_trials=2) == 2
    states = [t.state for t in load_study(spec, url, "cap").trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and states.count(optuna.trial.TrialState.WAITING) == 1
    _, queued = setup_study(spec, url, "cap")  # a second launch queues nothing new and finishes the grid
    assert queued == 0 and run_worker(spec, url, "cap") == 1
    assert [t.state for t in load_study(spec, url, "cap").trials] == [optuna.trial.TrialState.COMPLETE] * 3


def test_an_arm_gets_the_datas_classes_before_it_is_hashed_and_named(tmp_path, capsys):
    """The spec states no model.num_classes; an arm over 4-class synthetic data is hashed as the 4-class network
    that trains, as `senet-ablate train` resolves the same keys (issue 10), and named as train names it: the
    sweep's baseline is settled too, so the data's classes are not a difference to it (issue 22)."""
    from ablations.cli import main
    from ablations.experiment import settle
    from ablations.naming import run_name
    from ablations.sweep.spec import baseline_config, make_config

    base = {**TINY, "data": {"name": "synthetic", "num_classes": 4, "image_size": 8}, "output_dir": str(tmp_path)}
    spec = load_spec(write(tmp_path, name="classes", base=base, space={"model.se.reduction": [4]}, baseline=False))
    arm = make_config(spec, {"model.se.reduction": 4})
    assert arm.model.num_classes == 4 and arm.model.in_chans == 3
    assert settle(arm).config_hash == arm.hash()  # the run's own check changes nothing
    assert run_name(arm, baseline_config(spec)) == run_name(arm) == "se_resnet20_cifar-r4_synthetic_s0"
    assert main(["sweep", str(tmp_path / "classes.yaml"), "--dry-run"]) == 0
    assert "  se_resnet20_cifar-r4_synthetic_s0\n" in capsys.readouterr().out
