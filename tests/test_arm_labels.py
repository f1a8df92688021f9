"""One arm label per path: run folders and W&B runs (``naming``), report rows and ``runs.csv`` (``compare``) and a sweep
report's factor labels (``sweep.report``) each give every seed of an arm one label and distinct arms distinct labels,
so each path splits the runs exactly as ``ExperimentConfig.arm_hash`` does (tests/test_arm_identity.py: the hash).
"""
from __future__ import annotations

import copy
import csv
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import optuna
import pytest

from ablations.config import ExperimentConfig
from ablations.excitation.wandb_log import init_kwargs
from ablations.experiment import Experiment
from ablations.naming import arm_name, folder_name, group, run_name
from ablations.reporting import compare
from ablations.sweep import report
from ablations.sweep.objective import trial_config
from ablations.sweep.spec import baseline_config, parse_spec, read_yaml
from ablations.training.wandb_logging import make_logger
from senet.tree import flatten

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
# An SE grid (no-SE baseline; SE and two successors that read r), and a grid that also varies non-SE keys, where
# an arm's model and SE tokens no longer tell it apart.
GRIDS = {
    "se-grid": ("operators.yaml", {"model.se.reduction": [4, 16], "model.se.placement": ["standard", "pre"],
                                   "model.se.operator": ["se", "cbam", "gc"]}),
    "lr-bs-grid": ("reduction.yaml", {"model.se.reduction": [4, 16], "train.lr": [0.05, 0.1],
                                      "data.batch_size": [32, 64]}),
}


def sweep(grid: str):
    """The digits variant of a committed paper spec with ``grid``'s space and three seeds."""
    source, space = GRIDS[grid]
    raw = copy.deepcopy(read_yaml(ROOT / "sweeps" / "paper" / source))
    raw["variants"]["digits"].update(space=space, seeds=list(SEEDS))
    return parse_spec(raw, variant="digits")


def result_row(cfg: ExperimentConfig, name: str) -> dict:
    """A complete run's result row (``Result.to_dict()``'s fields that reports read)."""
    return {"config": cfg.to_dict(), "config_hash": cfg.hash(), "seed": cfg.seed, "name": name, "status": "complete",
            "metrics": {"val/top1": 0.9 + 0.01 * cfg.seed, "val/top5": 1.0}, "params": 1000, "gmacs": 0.01,
            "epochs": 6, "wall_time_s": 1.0, "git_commit": "abc", "reason": None}


@pytest.fixture(scope="module", params=list(GRIDS))
def grid(request):
    """(spec, configs, rows) of every cell, named as a sweep worker names its run folder."""
    spec = sweep(request.param)
    base = baseline_config(spec)
    configs = [trial_config(spec, spec.name, cell) for cell in spec.grid()]
    rows = [result_row(cfg, run_name(cfg, base.replace(seed=cfg.seed))) for cfg in configs]
    return spec, configs, rows


def assert_labels_arms(path: str, pairs: list[tuple[str, str]]) -> None:
    """``pairs`` of (arm hash, label), one per run: one label per arm, one arm per label."""
    labels, arms = defaultdict(set), defaultdict(set)
    for arm, label in pairs:
        labels[arm].add(label)
        arms[label].add(arm)
    split = {arm: sorted(ls) for arm, ls in labels.items() if len(ls) > 1}
    shared = sorted(label for label, a in arms.items() if len(a) > 1)
    assert not split, f"{path}: the seeds of one arm get different labels: {split}"
    assert not shared, f"{path}: different arms share a label: {shared}"


def per_run(arms: list[compare.ArmSummary], rows: list[dict]) -> list[tuple[str, str]]:
    by_key = {a.key: a.label for a in arms}
    assert len(by_key) == len(arms), "one summary per arm"
    return [(compare.arm_key(r["config"]), by_key[compare.arm_key(r["config"])]) for r in rows]


def test_the_grids_are_realistic(grid):
    _, configs, _ = grid
    arms = {cfg.arm_hash() for cfg in configs}
    assert len(configs) == len(arms) * len(SEEDS) and len(arms) >= 12
    assert any(cfg.model.se is None for cfg in configs)


def test_a_run_is_named_by_its_arm_and_seed_and_w_and_b_names_it_as_its_folder(grid, tmp_path):
    spec, configs, rows = grid
    base = baseline_config(spec)
    pairs = []
    for cfg, row in zip(configs, rows):
        stem = arm_name(cfg, base)
        assert row["name"] == f"{stem}_s{cfg.seed}"
        cfg = cfg.override({"output_dir": str(tmp_path), "wandb.mode": "offline"})
        name = folder_name(cfg, row["name"])  # what settle names the run folder and W&B run by
        folder = Path(cfg.output_dir) / name
        assert name == row["name"]
        logger = make_logger(Experiment(cfg, None, name, cfg.hash(), cfg.arm_hash(), flatten(cfg.to_dict())), folder,
                             "abcd1234")
        assert logger._wandb_init["name"] == folder.name
        assert logger._wandb_init["group"] == group(cfg) == spec.name  # a sweep's arms share one W&B group
        assert logger._wandb_init["config"]["arm_hash"] == cfg.arm_hash()
        folder.mkdir(parents=True)
        (folder / "wandb_id.txt").write_text("abcd1234\n")
        assert init_kwargs(cfg, folder)["name"] == folder.name  # the excitation analysis resumes that W&B run
        pairs.append((cfg.arm_hash(), stem))
    assert_labels_arms("run folder (naming.arm_name)", pairs)
    assert_labels_arms("W&B run name without its seed", [(a, n) for (a, _), n in zip(pairs, (
        re.sub(r"_s\d+$", "", r["name"]) for r in rows))])


def test_report_rows_label_arms_alike_whichever_seeds_ran(grid):
    spec, _, rows = grid
    factors = [p.key for p in spec.space]
    for path, label_arms in (("compare.aggregate", compare.aggregate),
                             ("sweep.report.summaries", lambda rs: report.summaries(rs, factors))):
        everything = label_arms(rows)
        assert_labels_arms(path, per_run(everything, rows))
        for seed in SEEDS:  # a report of fewer seeds (a sweep under way) names each arm as the whole one does
            some = [r for r in rows if r["seed"] == seed]
            assert set(per_run(label_arms(some), some)) <= {(a.key, a.label) for a in everything}
    assert_labels_arms("sweep.report.arm_label", [(compare.arm_key(r["config"]), report.arm_label(r["config"], factors))
                                                  for r in rows])  # the unfinished runs' table


def test_runs_csv_labels_arms_as_the_report_does(grid, tmp_path):
    _, _, rows = grid
    with compare.write_csv(rows, tmp_path / "runs.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert [line["name"] for line in lines] == [r["name"] for r in rows]
    assert_labels_arms("runs.csv arm", [(compare.arm_key(r["config"]), line["arm"]) for r, line in zip(rows, lines)])
    labels = {a.key: a.label for a in compare.aggregate(rows)}
    assert [line["arm"] for line in lines] == [labels[compare.arm_key(r["config"])] for r in rows]


def test_short_labels_clash_only_where_a_non_se_key_varies(grid):
    spec, _, rows = grid
    short = {compare.arm_key(r["config"]): compare.short_label(r["config"]) for r in rows}
    clash = len(set(short.values())) < len(short)
    assert clash == any(not p.key.startswith("model.") for p in spec.space)  # the fallback above is exercised


# ---- the committed studies ---- #

STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/study.db"))


def committed_arm_column(text: str) -> list[str]:
    """The arm column of the report's first table (``## All arms``), the baseline's mark dropped."""
    table = text.split("## All arms", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|")][2:]
    return [c.removesuffix(" (baseline)") for c in cells]


@pytest.mark.parametrize("study", STUDIES)
def test_committed_reports_label_arms_as_summaries_labels_their_rows(tmp_path, study):
    folder = ROOT / "results" / study
    db = tmp_path / "study.db"
    shutil.copy(folder / "study.db", db)  # a copy: reading must not touch the committed file
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    spec = loaded.user_attrs["spec"]
    rows = report.study_rows(loaded)
    arms = [a for a in report.summaries(rows, list(spec["space"])) if a.seeds]
    assert committed_arm_column((folder / "report.md").read_text()) == [a.label for a in arms]
    assert_labels_arms(f"{study}/report.md", per_run(arms, rows))
    # The rows' run folders: the arm's name against the spec's base without SE, then the seed.
    base = ExperimentConfig.from_dict(spec["base"]).override({"model.se": None})
    for r in rows:
        assert r["name"] == run_name(ExperimentConfig.from_dict(r["config"]), base) == Path(r["run_dir"]).name
    assert_labels_arms(f"{study} run folders", [(compare.arm_key(r["config"]), r["name"].rsplit("_s", 1)[0])
                                                for r in rows])


@pytest.mark.parametrize("folder", sorted(p.parent for p in (ROOT / "results").glob("*/summary.json")),
                         ids=lambda p: p.name)
def test_committed_quickstarts_label_each_arm_once(folder):
    with (folder / "runs.csv").open() as fh:
        lines = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    stems = [(line["arm"], line["name"].removesuffix(f"_s{line['seed']}")) for line in lines]
    assert all(line["name"].endswith(f"_s{line['seed']}") for line in lines)
    assert_labels_arms(f"{folder.name}/runs.csv", stems)  # arm column against run folders, either way round
    assert_labels_arms(f"{folder.name}/runs.csv", [(b, a) for a, b in stems])
    labels = [a["label"] for a in json.loads((folder / "summary.json").read_text())["arms"]]
    assert [lab.split(": ", 1)[1] for lab in labels] == list(dict.fromkeys(line["arm"] for line in lines))
    assert len(set(labels)) == len(labels)
