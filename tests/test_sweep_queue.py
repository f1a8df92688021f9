"""The claim reads the queue by direct SQL (``ablations.sweep.queue``): same answers as Optuna, cost flat in its size."""
from __future__ import annotations

import threading
import types

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState

from ablations.sweep.leases import Leases, Requeue
from ablations.sweep.queue import install_claim, running_trial_ids, state_counts
from ablations.sweep.reconnect import ResilientStorage
from ablations.sweep.study import StudyLock, progress, progress_from_trials
from ablations.sweep.worker import _next_step

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                       "ignore:Heartbeat of storage is supposed to be used with Study.optimize")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(url: str, resilient: bool = False) -> RDBStorage:
    kwargs = {"heartbeat_interval": 60, "grace_period": 120, "heartbeat_stale_trial_callback": Requeue(3)}
    return ResilientStorage(url, outage_s=5, **kwargs) if resilient else RDBStorage(url, **kwargs)


def queue(url: str, n: int, resilient: bool = False) -> optuna.Study:
    study = optuna.create_study(study_name="q", storage=storage(url, resilient), load_if_exists=True)
    for i in range(n):
        study.enqueue_trial({"x": float(i)}, user_attrs={"config_hash": f"h{i}"})
    return study


def fail(study: optuna.Study, trial_id: int) -> optuna.trial.FrozenTrial:
    study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return study._storage.get_trial(trial_id)


def claim(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", 0, 1000)
    return trial


@pytest.mark.parametrize("resilient", [False, True], ids=["RDBStorage", "ResilientStorage"])
def test_counts_and_running_ids_are_what_optunas_trials_say(tmp_path, resilient):
    study = install_claim(queue(f"sqlite:///{tmp_path}/q.db", 12, resilient))
    requeue = Requeue(3)
    study.tell(claim(study), 1.0)                                    # COMPLETE
    study.tell(claim(study), state=TrialState.PRUNED)                # PRUNED
    study.tell(claim(study), state=TrialState.FAIL)                  # FAIL, not re-queued (an arm's own failure)
    requeue(study, fail(study, claim(study)._trial_id))              # FAIL re-queued: a WAITING retry at the end
    running = [claim(study), claim(study)]                           # RUNNING
    requeue(study, fail(study, running.pop()._trial_id))             # and one more failure, re-queued
    # The retries are the newest trials: claim them until one has failed twice (a retry history of two).
    while True:
        t = claim(study)
        if study._storage.get_trial(t._trial_id).system_attrs.get("retry_history"):
            break
        running.append(t)
    requeue(study, fail(study, t._trial_id))
    trials = study.get_trials(deepcopy=False)
    states = {t.state for t in trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING}
    assert max(len(t.system_attrs.get("retry_history", ())) for t in trials) == 2

    expected = progress_from_trials(study)
    assert expected["retried"] == 3 and expected["fail"] == 1, expected
    assert state_counts(study) == expected
    assert progress(study) == expected and list(progress(study)) == list(expected)
    assert running_trial_ids(study) == [t._trial_id for t in study.get_trials(deepcopy=False,
                                                                               states=(TrialState.RUNNING,))]


def test_without_an_rdb_the_counts_come_from_optunas_trials():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.tell(study.ask(), 2.0)
    assert state_counts(study) is None and running_trial_ids(study) is None
    assert progress(study) == progress_from_trials(study)
    assert install_claim(study)._pop_waiting_trial_id.__func__ is optuna.Study._pop_waiting_trial_id


def test_concurrent_claims_under_the_study_lock_take_the_oldest_first_each_once(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    waiting = [t._trial_id for t in queue(url, 60).trials]
    order: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:  # as run_worker claims: its own storage and lock, the claim under the lock
        try:
            study = install_claim(optuna.load_study(study_name="q", storage=storage(url)))
            lock = StudyLock(url, "q")
            while True:
                with lock:
                    trial_id = study._pop_waiting_trial_id()
                    if trial_id is None:
                        return
                    order.append(trial_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert order == sorted(waiting)


@pytest.mark.slow
def test_concurrent_claims_on_postgresql_without_a_lock_take_each_trial_once(tmp_path):
    """PostgreSQL's row lock in ``set_trial_state_values`` is the arbiter even without the study lock (SQLite has
    no row lock: there several workers are refused and the worker claims under the study lock, as above)."""
    from fixtures_servers import postgres_server

    with postgres_server() as pg:
        url = pg.new_database("q")
        waiting = [t._trial_id for t in queue(url, 80, resilient=True).trials]
        claims: dict[int, list[int]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def worker(i: int) -> None:
            try:
                study = install_claim(optuna.load_study(study_name="q", storage=storage(url, resilient=True)))
                mine = claims.setdefault(i, [])
                start.wait()
                while (trial_id := study._pop_waiting_trial_id()) is not None:
                    mine.append(trial_id)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors
        taken = [tid for mine in claims.values() for tid in mine]
        assert sorted(taken) == sorted(waiting)  # each exactly once
        assert all(mine == sorted(mine) for mine in claims.values())  # each worker the oldest left first
        assert sum(bool(mine) for mine in claims.values()) > 1


def test_a_trial_taken_by_someone_else_is_skipped(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    study = install_claim(queue(url, 5))
    ids = [t._trial_id for t in study.trials]
    other = optuna.load_study(study_name="q", storage=storage(url))._storage
    other.set_trial_state_values(ids[0], TrialState.RUNNING)       # another worker claimed the oldest
    other.set_trial_state_values(ids[1], TrialState.RUNNING)
    other.set_trial_state_values(ids[1], TrialState.COMPLETE, [1.0])
    taken = []
    real = study._storage.set_trial_state_values

    def racing(trial_id, state, values=None):  # ids[2] is taken by another worker between our query and our claim
        taken.append(trial_id)
        if trial_id == ids[2]:
            other.set_trial_state_values(trial_id, TrialState.RUNNING)
        return real(trial_id, state, values)

    study._storage.set_trial_state_values = racing
    assert study._pop_waiting_trial_id() == ids[3]
    assert taken == [ids[2], ids[3]]
    assert study._pop_waiting_trial_id() == ids[4]
    assert study._pop_waiting_trial_id() is None


def test_a_trial_queued_after_the_worker_started_is_claimed_and_run(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    queue(url, 2)
    study = install_claim(optuna.load_study(study_name="q", storage=storage(url)))
    study.get_trials()  # the worker's start
    queue(url, 2)  # another process queues more (a re-queued trial, a second sweep command)
    for number in range(4):
        trial = claim(study)  # its params are set through Optuna's cache, which must know the trial
        assert trial.number == number
        study.tell(trial, float(number))
    assert study._pop_waiting_trial_id() is None
    trials = study.get_trials()  # the cache sees every claimed trial's final state
    assert [(t.number, t.state, t.params["x"]) for t in trials] == \
        [(n, TrialState.COMPLETE, float(n % 2)) for n in range(4)]


class Reads:
    """SQL statements and rows (ORM instances loaded, per model) in a block."""

    def __enter__(self):
        self.statements, self.rows = 0, 0
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.listen(models.BaseModel, "load", self._row, propagate=True)
        return self

    def _statement(self, *args) -> None:
        self.statements += 1

    def _row(self, *args) -> None:
        self.rows += 1

    def __exit__(self, *exc) -> None:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.remove(models.BaseModel, "load", self._row)


def claim_reads(url: str, n_waiting: int, optunas_pop: bool = False) -> tuple[int, int]:
    """What one claim of ``run_worker`` reads (lease check, heartbeat check, next step, the claim) with
    ``n_waiting`` WAITING trials, besides a RUNNING one, a COMPLETE one and a re-queued failure."""
    study = queue(url, n_waiting + 3)
    study.tell(claim(study), 1.0)
    Requeue(3)(study, fail(study, claim(study)._trial_id))
    claim(study)  # RUNNING; its lease is free, but it was taken before any lease: its heartbeat decides
    study = optuna.load_study(study_name="q", storage=storage(url))
    if not optunas_pop:
        install_claim(study)
    leases, spec = Leases(url), types.SimpleNamespace(n_trials=None, is_grid=True)
    study.get_trials()  # the worker's start (check_threads) fills Optuna's cache: a claim reads only what changed
    try:
        with Reads() as reads:
            leases.fail_dead(study, Requeue(3))
            optuna.storages.fail_stale_trials(study)
            assert _next_step(study, spec, None) == "run"
            claim(study)
    finally:
        leases.close()
    assert progress(study)["waiting"] == n_waiting
    return reads.statements, reads.rows


def test_a_claim_reads_as_much_with_500_waiting_trials_as_with_50(tmp_path, monkeypatch):
    monkeypatch.setattr(Leases, "alive", lambda self, ids: set(ids))  # the RUNNING trial's worker lives
    few, many = claim_reads(f"sqlite:///{tmp_path}/a.db", 50), claim_reads(f"sqlite:///{tmp_path}/b.db", 500)
    print("statements and rows of a claim, 50 and 500 waiting:", few, many)
    assert few == many, (few, many)
    assert few[1] < 20, few
    # The same count sees Optuna's own claim read every WAITING trial: the comparison above can tell.
    optunas = claim_reads(f"sqlite:///{tmp_path}/c.db", 50, optunas_pop=True)
    assert optunas[1] > few[1] + 50, (optunas, few)
