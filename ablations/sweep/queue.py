"""The study's queue read by direct SQL (docs/DESIGN.md, Sweeps): a claim costs the same whatever the grid's size.

Optuna's cached storage (``_CachedStorage``) re-reads every unfinished trial, with its params and attributes, on
each ``study.get_trials`` call whatever the state filter, and ``Study._pop_waiting_trial_id`` reads every WAITING
trial before it takes the first. A grid sweep keeps all its cells WAITING until they run, so each claim read the
whole rest of the grid several times, under the study lock: a sweep was quadratic in its size. Here the counts
by state, the RUNNING trial ids and the oldest WAITING trial come from one small query each on the RDB backend,
and the claim itself is still the storage's ``set_trial_state_values`` (the arbiter between workers).

Every query goes through ``reconnect.retrying`` where the storage does (``ResilientStorage``), like its other calls.
A study whose storage is not an ``RDBStorage`` (in memory: tests, one process) is read through Optuna as before.
"""
from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from ablations.sweep.reconnect import ResilientStorage, retrying

T = TypeVar("T")

#: Trial system attribute where Optuna's retry callback keeps the numbers of the failed attempts it re-queued.
RETRY_HISTORY = "retry_history"

#: How many WAITING trial ids a claim reads at a time (more only when others took these first).
_BATCH = 8


def rdb_backend(study: optuna.Study) -> RDBStorage | None:
    """The study's ``RDBStorage`` (under Optuna's cache), or ``None`` for another kind of storage."""
    backend = getattr(study._storage, "_backend", study._storage)
    return backend if isinstance(backend, RDBStorage) else None


def _query(backend: RDBStorage, what: str, fn: Callable[[sqlalchemy.orm.Session], T]) -> T:
    """``fn(session)`` in one read-only session, retried on a lost connection where the storage retries its calls."""
    def call() -> T:
        with _create_scoped_session(backend.scoped_session) as session:
            return fn(session)

    if isinstance(backend, ResilientStorage):
        return retrying(call, what, backend.outage_s)
    return call()


def _trials(session: sqlalchemy.orm.Session, study_id: int):
    return session.query(models.TrialModel).filter(models.TrialModel.study_id == study_id)


def state_counts(study: optuna.Study) -> dict[str, int] | None:
    """``study.progress``'s counts (by state, re-queued failures apart as ``retried``) or ``None`` without an RDB.

    Reads one row per state, one per re-queued trial (its retry history) and, only if some trial was re-queued,
    the numbers of the FAIL trials: nothing grows with the number of WAITING or finished trials.
    """
    backend = rdb_backend(study)
    if backend is None:
        return None
    sid, trial = study._study_id, models.TrialModel

    def read(session):
        by_state = dict(session.query(trial.state, sqlalchemy.func.count(trial.trial_id))
                        .filter(trial.study_id == sid).group_by(trial.state).all())
        histories = (session.query(models.TrialSystemAttributeModel.value_json)
                     .join(trial, trial.trial_id == models.TrialSystemAttributeModel.trial_id)
                     .filter(trial.study_id == sid, models.TrialSystemAttributeModel.key == RETRY_HISTORY).all())
        retried = {n for (value,) in histories for n in json.loads(value)}
        failed = [n for (n,) in session.query(trial.number).filter(trial.study_id == sid,
                                                                  trial.state == TrialState.FAIL)] if retried else []
        return by_state, retried, failed

    by_state, retried, failed = _query(backend, "trial counts", read)
    out = {s.name.lower(): by_state.get(s, 0) for s in TrialState}
    out["retried"] = sum(n in retried for n in failed)
    out["fail"] -= out["retried"]
    return out


def running_trial_ids(study: optuna.Study) -> list[int] | None:
    """The ids of the study's RUNNING trials, oldest first (``None`` without an RDB: ask Optuna)."""
    backend = rdb_backend(study)
    if backend is None:
        return None
    sid = study._study_id
    return _query(backend, "running trials", lambda session: [
        tid for (tid,) in _trials(session, sid).filter(models.TrialModel.state == TrialState.RUNNING)
        .with_entities(models.TrialModel.trial_id).order_by(models.TrialModel.trial_id)])


def _waiting_ids(study: optuna.Study, backend: RDBStorage, after: int) -> list[int]:
    sid = study._study_id
    return _query(backend, "claim a trial", lambda session: [
        tid for (tid,) in _trials(session, sid)
        .filter(models.TrialModel.state == TrialState.WAITING, models.TrialModel.trial_id > after)
        .with_entities(models.TrialModel.trial_id).order_by(models.TrialModel.trial_id).limit(_BATCH)])


def pop_waiting_trial_id(study: optuna.Study) -> int | None:
    """Optuna's ``Study._pop_waiting_trial_id``, reading only the oldest WAITING trial ids instead of every trial.

    Written by hand because Optuna's reads every WAITING trial, with its params and attributes, before it takes
    the first. It must behave exactly like Optuna's: the oldest WAITING trial first (trial ids grow with trial
    numbers within a study, so ``ORDER BY trial_id`` is Optuna's order by number), set RUNNING through the
    storage's ``set_trial_state_values``, which returns False (or raises ``UpdateFinishedTrialError``) where
    another worker took (or finished) it first: that one is skipped and the next tried; ``None`` when none is left.
    The trial taken is put in Optuna's cache, as Optuna's claim had put every WAITING trial (``_remember``).
    """
    backend = rdb_backend(study)
    if backend is None:  # pragma: no cover - install_claim only installs it on an RDB
        return optuna.Study._pop_waiting_trial_id(study)
    after = -1
    while True:
        ids = _waiting_ids(study, backend, after)
        if not ids:
            return None
        for trial_id in ids:
            after = trial_id
            try:
                if not study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            _remember(study, trial_id)
            return trial_id


def _remember(study: optuna.Study, trial_id: int) -> None:
    """Put the claimed trial in Optuna's cache (``_CachedStorage``), as an unfinished trial.

    The cache must know a trial before its params are set (``set_trial_param`` looks it up there). Optuna's claim
    read every WAITING trial into it; this one reads the claimed trial only, and marks it unfinished, as
    ``_CachedStorage`` does with the unfinished trials it reads, so a later ``get_trials`` reads it again.
    """
    cache = study._storage
    if not isinstance(cache, _CachedStorage):
        return
    trial = cache._backend.get_trial(trial_id)
    with cache._lock:
        info = cache._studies.setdefault(study._study_id, _StudyInfo())
        cache._add_trials_to_cache(study._study_id, [trial])
        info.unfinished_trial_ids.add(trial_id)


def install_claim(study: optuna.Study) -> optuna.Study:
    """Give ``study`` (on an RDB) the claim of ``pop_waiting_trial_id`` in place of Optuna's; returns it."""
    if rdb_backend(study) is not None:
        study._pop_waiting_trial_id = types.MethodType(pop_waiting_trial_id, study)
    return study
