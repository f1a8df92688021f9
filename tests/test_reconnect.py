"""Reconnecting storage: every database call Optuna makes for a worker rides out a lost connection.

The PostgreSQL restart itself is in ``test_database_faults`` (slow); here the rule is checked call by call.
Optuna's cache (``_CachedStorage``) calls some of ``RDBStorage``'s private methods on its backend directly, so a
call that is in neither list below would reach the database unprotected: one restart at that moment (the
"Best is trial ..." line after a trial, ``_get_best_trial_id``) ended a worker with a traceback.
"""
from __future__ import annotations

import inspect
import re

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage

from ablations.sweep import reconnect
from ablations.sweep.reconnect import DatabaseUnreachable, ResilientStorage


def test_every_backend_call_of_optunas_cache_is_retried_or_deliberately_not():
    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    assert called, "Optuna's cache no longer calls its backend as self._backend.NAME(...)"
    unlisted = called - set(reconnect._RETRIED) - set(reconnect.NOT_RETRIED)
    assert not unlisted, f"backend calls neither retried nor listed as not retried: {sorted(unlisted)}"


def _flaky(monkeypatch, name: str, failures: int) -> list[int]:
    """Make ``RDBStorage.<name>`` fail ``failures`` times with a lost connection, then work; returns the call count."""
    calls, real = [0], getattr(RDBStorage, name)

    def flaky(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] <= failures:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, name, flaky)
    return calls


@pytest.fixture
def study(tmp_path):
    storage = ResilientStorage(f"sqlite:///{tmp_path / 'study.db'}", outage_s=5)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert isinstance(study._storage, _CachedStorage)  # the path a worker takes
    return study


def test_the_best_trial_is_read_through_a_lost_connection(study, monkeypatch):
    calls = _flaky(monkeypatch, "_get_best_trial_id", failures=2)
    assert study.best_trial.number in (0, 1)
    assert calls[0] == 3


def test_a_parameter_is_written_through_a_lost_connection(study, monkeypatch):
    calls = _flaky(monkeypatch, "_set_trial_param", failures=1)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert calls[0] >= 2
    assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE and "x" in study.trials[-1].params


def test_a_database_gone_for_the_whole_budget_ends_in_one_line(study, monkeypatch):
    study._storage._backend.outage_s = 0.5
    _flaky(monkeypatch, "_get_trials", failures=10**6)
    with pytest.raises(DatabaseUnreachable, match=r"did not answer for 0 s \(_get_trials: server closed"):
        study._storage._backend._get_trials(study._study_id, None, set(), -1)


def test_other_errors_are_not_retried(study, monkeypatch):
    calls = [0]

    def broken(self, *args, **kwargs):
        calls[0] += 1
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(RDBStorage, "_get_best_trial_id", broken)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        _ = study.best_trial
    assert calls[0] == 1
