"""A grid trial's seed is a user attribute, not an Optuna parameter: importance ranks only the ablation's factors."""
from __future__ import annotations

import optuna
import pytest

from ablations.sweep.space import suggest
from ablations.sweep.spec import load_spec
from ablations.sweep.study import setup_study


@pytest.fixture
def study_and_spec(tmp_path):
    spec = load_spec("sweeps/paper/reduction.yaml", variant="digits")
    study, queued = setup_study(spec, f"sqlite:///{tmp_path / 'study.db'}", "seeds")
    assert queued == len(spec.grid())
    return study, spec


def test_grid_trials_take_their_seed_from_an_attribute(study_and_spec):
    study, spec = study_and_spec
    cells = spec.grid()
    seen = []
    for _ in cells:
        trial = study.ask()
        params = suggest(trial, spec)
        seen.append(params)
        study.tell(trial, 0.5)
    as_set = lambda ps: sorted(repr(sorted(p.items())) for p in ps)
    assert as_set(seen) == as_set(cells)  # every arm x seed cell, seeds included
    done = study.get_trials(deepcopy=False)
    assert all("seed" not in t.params and "seed" not in t.distributions for t in done)
    assert sorted(t.user_attrs["seed"] for t in done) == sorted(c["seed"] for c in cells)


def test_a_trial_queued_with_the_seed_as_a_param_still_runs(study_and_spec):
    """Studies made before: their waiting trials hold the seed among the fixed params."""
    study, spec = study_and_spec
    legacy = optuna.create_study(storage=study._storage, study_name="legacy", direction="maximize")
    cell = spec.grid()[-1]
    from ablations.sweep.space import encode_params

    legacy.enqueue_trial(encode_params(spec, cell))
    trial = legacy.ask()
    assert suggest(trial, spec) == cell and trial.params["seed"] == cell["seed"]


def test_a_requeued_trial_keeps_its_seed(study_and_spec):
    from ablations.sweep.leases import Requeue

    study, spec = study_and_spec
    trial = study.ask()
    params = suggest(trial, spec)
    frozen = study.get_trials(deepcopy=False)[trial.number]
    Requeue(max_retry=3)(study, frozen)
    retry = [t for t in study.get_trials(deepcopy=False) if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.WAITING
    assert retry[0].user_attrs["seed"] == params["seed"] and "seed" not in retry[0].system_attrs["fixed_params"]
