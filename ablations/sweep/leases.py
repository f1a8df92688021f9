"""Trial leases (docs/DESIGN.md, Sweeps): a lock per running trial that dies with its worker, so a dead worker's
trial is re-queued at once instead of after Optuna's heartbeat grace period.

PostgreSQL: a session-level advisory lock (two-key form: its own key space, apart from ``StudyLock``'s)
on the worker's own connection; the server drops it when the connection closes, that is when the
process dies. MySQL: ``GET_LOCK``. SQLite: an ``flock`` on a file in the folder beside the database
(``storage.sqlite_lock_folder``), which the kernel drops with the process. A worker takes the lease of the trial it claims while it
still holds the study lock, and checks the other RUNNING trials' leases under the same lock before
each claim: a free lease means a dead owner, so the trial is failed and re-queued through Optuna's
retry callback (retry history, grid dedup and progress counts stay right). Optuna's heartbeat stays
as the fallback (a worker alive but cut off from the database).

A PostgreSQL server that restarts drops every lease at once, live workers' too. So a free lease means a dead
worker only if it was taken on the server's current run (``LEASE_SERVER``: its ``pg_postmaster_start_time``,
kept in the trial); an older one is left to the heartbeat, and a live worker takes its lease again at its next
heartbeat (``keep``), which reconnects, and only while its trial is still RUNNING.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ablations.sweep.queue import running_trial_ids
from ablations.sweep.reconnect import connect_kwargs, retrying
from ablations.sweep.storage import sqlite_lock_folder
from ablations.training import interrupts

# First key of every trial lease (PostgreSQL's two-int4 advisory keys; the second is the trial id).
_NAMESPACE = int.from_bytes(hashlib.sha256(b"senet-ablate:trial-lease").digest()[:4], "big") & 0x7FFFFFFF

#: Trial system attribute: the start time of the PostgreSQL server on which the trial's lease was taken.
LEASE_SERVER = "lease_server"


class Requeue(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, with two changes for sweeps.

    The new WAITING trial keeps only the arm's identity: the failed attempt's ``results``, ``status`` and
    ``reason`` stay on the failed trial (copied, they would show the re-queued arm as failed until it
    finishes). And interrupts (``interrupt=True``: a signal, no fault of the arm) are re-queued without
    limit and do not count against ``max_retry`` for later failures of the same arm.
    """

    KEEP = ("config_hash", "arm_hash", "seed")  # a grid trial's seed is an attribute (space.queued)

    def __init__(self, max_retry: int | None, interrupt: bool = False) -> None:
        with warnings.catch_warnings():  # experimental since Optuna 2.8, and what make_storage uses too
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self._limit, self._interrupt = max_retry, interrupt

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in self.KEEP}
        n = trial.system_attrs.get("interrupts", 0)
        if self._interrupt:
            trial.system_attrs["interrupts"] = n + 1  # carried into the retry's system attrs
        self._max_retry = None if self._interrupt or self._limit is None else self._limit + n
        super().__call__(study, trial)


class Leases:
    """This worker's lease on the trial it runs, and the check of other workers' leases.

    Args:
        url: the study's storage URL (the lease lives where the study does: same server, or same machine).
    """

    def __init__(self, url: str, outage_s: float = 60, on_retake: Callable[[int, str], bool] | None = None) -> None:
        self.url, self.trial_id, self.outage_s, self.on_retake = url, None, outage_s, on_retake
        self.server: str | None = None  # PostgreSQL: the start time of the server holding our lease
        self._conn = self._engine = self._file = self._dir = None
        self._mutex = threading.RLock()  # the heartbeat thread (``keep``) shares the connection
        if url.startswith("sqlite"):
            self._dir = sqlite_lock_folder(url)  # None in memory: one process, nobody else to watch
        else:
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                                    isolation_level="AUTOCOMMIT", **connect_kwargs(url))
            self._mysql_prefix = "senet-ablate:" + hashlib.sha256(url.encode()).hexdigest()[:16]

    @property
    def _pg(self) -> bool:
        return self._engine is not None and self.url.startswith("postgresql")

    def _sql(self, query: str, **params):
        """Run ``query`` on the lease connection, reconnecting (and taking our lease again) after a lost one."""
        with self._mutex:
            return retrying(lambda: self._execute(query, params), "trial lease", self.outage_s,
                            on_error=self._close_connection)

    def _execute(self, query: str, params: dict):
        if self._conn is None:
            self._conn = self._engine.connect()
            if self.trial_id is not None and self._pg:
                self._retake()
        return self._conn.execute(sqlalchemy.text(query), params)

    def _retake(self) -> None:
        """Our connection was lost with our lease: take it again if the trial is still ours to run."""
        trial_id = self.trial_id
        got, server = self._conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:ns, :id), "
                                                         "pg_postmaster_start_time()::text"),
                                         {"ns": _NAMESPACE, "id": trial_id}).one()
        if not got:
            return
        if self.on_retake is not None and not self.on_retake(trial_id, server):
            # Failed and re-queued meanwhile (heartbeat stale): the arm is another worker's now.
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": _NAMESPACE, "id": trial_id})
            self.trial_id = None
            return
        self.server = server

    def keep(self, trial_id: int) -> None:
        """Check the lease of ``trial_id`` (from the heartbeat thread): a lost connection is re-made, the lease re-taken."""
        if self.trial_id == trial_id and self._engine is not None:
            self._sql("SELECT 1")

    def _path(self, trial_id: int) -> Path:
        return self._dir / f"trial{trial_id}.lease"

    def take(self, trial_id: int) -> None:
        """Hold the lease of ``trial_id`` (call while holding the study lock, right after the claim)."""
        self.release()
        if self._pg:
            self.server = self._sql("SELECT pg_advisory_lock(:ns, :id), pg_postmaster_start_time()::text",
                                    ns=_NAMESPACE, id=trial_id).one()[1]
        elif self._engine is not None:
            self._sql("SELECT GET_LOCK(:n, -1)", n=f"{self._mysql_prefix}:{trial_id}")
        elif self._dir is not None:
            self._file = open(self._path(trial_id), "a+")  # noqa: SIM115 - held for the whole trial
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.trial_id = trial_id

    def release(self) -> None:
        """Drop the lease (after the trial's final state is stored)."""
        if self.trial_id is None:
            return
        trial_id, self.trial_id = self.trial_id, None
        if self._file is not None:
            self._forget(trial_id)  # unlinked while locked: a checker that opens it later finds no file = free
            self._file.close()
            self._file = None
        elif self._engine is not None and self._conn is not None:
            with self._mutex:
                try:
                    if self._pg:
                        self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:ns, :id)"),
                                           {"ns": _NAMESPACE, "id": trial_id})
                    else:
                        self._conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"),
                                           {"n": f"{self._mysql_prefix}:{trial_id}"})
                except Exception:  # noqa: BLE001 - a broken connection held the lease; closing it drops the lease
                    self._close_connection()

    def alive(self, trial_ids: list[int]) -> set[int]:
        """The trials among ``trial_ids`` whose lease some live worker holds (this one included)."""
        if not trial_ids:
            return set()
        if self._pg:
            rows = self._sql("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
                             "AND classid = :ns AND database = (SELECT oid FROM pg_database "
                             "WHERE datname = current_database())", ns=_NAMESPACE)
            held = {int(r[0]) for r in rows}
            return {t for t in trial_ids if t in held}
        if self._engine is not None:
            return {t for t in trial_ids
                    if self._sql("SELECT IS_USED_LOCK(:n)", n=f"{self._mysql_prefix}:{t}").scalar() is not None}
        if self._dir is None:
            return set(trial_ids)
        return {t for t in trial_ids if self._locked(t)}

    def _locked(self, trial_id: int) -> bool:
        try:
            fd = os.open(self._path(trial_id), os.O_RDONLY)
        except FileNotFoundError:  # never taken, or released: nobody holds it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock we may have taken
        return False

    def _forget(self, trial_id: int) -> None:
        if self._dir is not None:
            self._path(trial_id).unlink(missing_ok=True)

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken: the server drops its locks anyway
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.release()
        self._close_connection()
        if self._engine is not None:
            self._engine.dispose()

    def fail_dead(self, study: optuna.Study, requeue: Requeue) -> list[int]:
        """Fail and re-queue every RUNNING trial whose lease is free (its worker died); call under ``StudyLock``.

        Returns the numbers of the trials failed. The storage's state change is the arbiter: a trial that
        finished meanwhile (its worker released the lease after storing the result) is left alone.
        """
        storage = study._storage  # as optuna.storages.fail_stale_trials does
        # By direct SQL on an RDB: Optuna's get_trials would read every unfinished trial, WAITING ones too.
        running = running_trial_ids(study)
        if running is None:
            running = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        alive = self.alive(running)
        server = self._sql("SELECT pg_postmaster_start_time()::text").scalar() if self._pg and running else None
        failed = []
        for tid in running:
            if tid in alive:
                continue
            t = storage.get_trial(tid)  # only a trial whose lease is free: its attributes decide
            if t.state != TrialState.RUNNING:
                continue  # finished (or failed by another worker) since the query
            if server is not None and t.system_attrs.get(LEASE_SERVER) != server:
                continue  # taken before the server restarted, which dropped it: the heartbeat decides
            with interrupts.deferred():  # failed but not re-queued would lose the arm
                try:
                    storage.set_trial_user_attr(tid, "status", "failed")
                    who = t.user_attrs.get("worker", "?")
                    storage.set_trial_user_attr(tid, "reason", f"its worker ({who}) stopped without finishing it "
                                                               "(trial lease dropped: killed or crashed)")
                    if not storage.set_trial_state_values(tid, TrialState.FAIL):
                        continue
                except UpdateFinishedTrialError:
                    continue
                requeue(study, storage.get_trial(tid))
            self._forget(tid)
            failed.append(t.number)
        return failed
