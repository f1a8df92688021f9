"""One arm identity: ``ExperimentConfig.arm_hash`` is what sweeps store on trials, what reports and the quickstart
group runs by (``compare.arm_key``) and what W&B runs carry; checked against the committed studies, whose trials'
``arm_hash`` the sweep objective wrote when they ran."""
from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest

from ablations.config import ExperimentConfig
from ablations.experiment import settle
from ablations.reporting import compare
from ablations.sweep.attrs import trial_rows
from ablations.training.wandb_logging import wandb_config
from senet.tree import flatten

ROOT = Path(__file__).resolve().parent.parent
ARMS = [{}, {"model.se.reduction": 8}, {"model.se.reduction": 8, "train.lr": 0.05}, {"model.se.operator": "eca"}]


@pytest.mark.parametrize("over", ARMS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_path_names_an_arm_by_the_same_hash_whatever_its_seed(over):
    arms = [ExperimentConfig().override({**over, "seed": seed}) for seed in (0, 1, 7)]
    (one,) = {cfg.arm_hash() for cfg in arms}
    assert {compare.arm_key(cfg.to_dict()) for cfg in arms} == {one}
    settled = [settle(cfg) for cfg in arms]
    assert {wandb_config(exp)["arm_hash"] for exp in settled} == {one}  # the resolve step's, as W&B logs it
    for exp in settled:  # W&B's config keys are the settled config's dotted fields, as flags and sweeps name them
        assert exp.fields == flatten(exp.config.to_dict()) and exp.fields.items() <= wandb_config(exp).items()
    assert len({cfg.hash() for cfg in arms}) == 3  # the run's own hash keeps the seed
    # Where a run writes and how it logs is not the arm.
    moved = arms[0].override({"output_dir": "elsewhere", "name": "mine", "wandb.mode": "offline"})
    assert moved.arm_hash() == one


def test_different_arms_have_different_hashes():
    hashes = [ExperimentConfig().override(o).arm_hash() for o in ARMS]
    assert len(set(hashes)) == len(ARMS)
    cfg = ExperimentConfig().override({"model.se.reduction": 8})
    assert compare.baseline_key(cfg.to_dict()) == ExperimentConfig().override({"model.se": None}).arm_hash()


@pytest.mark.parametrize("study", ["digits-reduction", "digits-integration"])
def test_the_committed_studies_trials_carry_the_arm_hash_of_their_runs(tmp_path, study):
    db = tmp_path / "study.db"
    shutil.copy(ROOT / "results" / study / "study.db", db)  # a copy: reading must not touch the committed file
    (name,) = optuna.study.get_all_study_names(f"sqlite:///{db}")
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert trials
    for trial in trials:
        rows = trial_rows(trial.user_attrs)
        assert rows
        assert {compare.arm_key(r["config"]) for r in rows} == {trial.user_attrs["arm_hash"]}, trial.number
