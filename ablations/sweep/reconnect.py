"""Reconnecting to a study's database: a server that restarts or stalls does not stop a sweep.

Every database call of a worker goes through a bounded retry on connection errors (``retrying``): SQLAlchemy's
``pool_pre_ping`` replaces a pooled connection the server closed, and a call that still fails with a connection
error is tried again with backoff until ``outage_s`` has passed; then the worker stops with one line
(``DatabaseUnreachable``) and leaves its trial to the others (its lease dies with the connection).

``ResilientStorage`` is Optuna's ``RDBStorage`` with that retry on its calls, except the two that create rows
(a retry after a commit whose answer was lost would create a second study or trial). Its heartbeat never kills
Optuna's heartbeat thread: a beat that cannot be written is skipped (the grace period is for that), and after
each beat the worker's ``on_beat`` hooks run (``Leases.keep`` takes the lease again after a reconnect). A trial
is stale only if its heartbeat is old *and* nobody holds its lease: a database that stalled (SIGSTOP, a full
disk) leaves every heartbeat old although every worker is alive and connected.

PostgreSQL connections set TCP keepalives and a user timeout, on both ends, so a peer that is cut off (a link
down, a host gone) is noticed within ``KEEPALIVE_S`` instead of the kernel's two hours: a query to an
unreachable server fails instead of hanging, and the server drops a lost worker's lease.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage

from ablations.cli import UserError
from ablations.sweep.storage import engine_kwargs, masked

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds after which an unanswered peer counts as gone (TCP keepalive probes and unacknowledged data).
KEEPALIVE_S = 10


class DatabaseUnreachable(UserError):
    """The study's database did not answer for the whole outage budget; the worker stops, its trial goes back."""


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: Optuna's ``StorageInternalError``) is a lost or refused connection."""
    seen = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                             sqlalchemy.exc.DisconnectionError)):
            return True
        seen = seen.__cause__
    return False


def retrying(call: Callable[[], T], what: str, outage_s: float, *, on_error: Callable[[], Any] | None = None) -> T:
    """``call()``, tried again with backoff while it fails with a connection error, for at most ``outage_s``.

    ``on_error`` runs after each failed try (drop the broken connection). Other errors are raised at once.
    """
    deadline, delay, warned = time.monotonic() + outage_s, 0.2, False
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            if on_error is not None:
                on_error()
            if time.monotonic() + delay > deadline:
                reason = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()[0]
                raise DatabaseUnreachable(f"the study's database did not answer for {outage_s:.0f} s ({what}: "
                                          f"{reason}); rerun the same command to resume") from None
            if not warned:
                log.warning("database connection lost (%s); reconnecting for up to %.0f s", what, outage_s)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def connect_kwargs(url: str) -> dict:
    """``storage.engine_kwargs`` plus, for PostgreSQL, keepalives and a user timeout on both ends of the socket."""
    kwargs = engine_kwargs(url)
    if url.startswith("postgresql"):
        ms = KEEPALIVE_S * 1000
        server = (f"-c tcp_keepalives_idle={KEEPALIVE_S // 2} -c tcp_keepalives_interval=1 "
                  f"-c tcp_keepalives_count={KEEPALIVE_S // 2} -c tcp_user_timeout={ms}")
        kwargs = {**kwargs, "connect_args": {**kwargs.get("connect_args", {}), "keepalives": 1,
                                             "keepalives_idle": KEEPALIVE_S // 2, "keepalives_interval": 1,
                                             "keepalives_count": KEEPALIVE_S // 2, "tcp_user_timeout": ms,
                                             "options": server}}
    return kwargs


# RDBStorage's calls that are safe to repeat (reads, and writes that set a value or refuse a second time),
# public and the private ones Optuna's cache (``_CachedStorage``) calls on its backend directly.
_RETRIED = ("delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
            "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
            "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "set_trial_param",
            "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
            "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
            "get_best_trial", "get_n_trials", "check_trial_is_updatable",
            "_get_best_trial_id", "_get_trials", "_set_trial_param")
#: Backend calls that are not retried: they create rows (a lost answer to a commit would make two), retry
#: themselves (``record_heartbeat``, ``_get_stale_trial_ids``: below) or do not touch the database.
NOT_RETRIED = ("create_new_study", "_create_new_trial", "create_new_trial", "record_heartbeat",
               "_get_stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback")


class ResilientStorage(RDBStorage):
    """``RDBStorage`` that rides out a database restart or stall (see the module docstring).

    Args (besides ``RDBStorage``'s):
        outage_s: how long a call keeps retrying a lost connection before ``DatabaseUnreachable``.
    Attributes:
        lease_holders: ``Leases.alive``: trials whose lease is held are never stale (set by the worker).
        on_beat: called with the trial id after each heartbeat, from Optuna's heartbeat thread.
    """

    def __init__(self, url: str, *, outage_s: float, **kwargs: Any) -> None:
        self.outage_s = outage_s
        self.lease_holders: Callable[[list[int]], set[int]] | None = None
        self.on_beat: list[Callable[[int], None]] = []
        for attempt in range(3):
            try:
                retrying(lambda: RDBStorage.__init__(self, url, **kwargs), "open the storage", outage_s)
                break
            except sqlalchemy.exc.IntegrityError:
                # Two processes opening an empty database both create Optuna's tables and types, and one of
                # them collides ("studydirection already exists"): the other finishes, then this one finds them.
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in _RETRIED:
            return lambda *a, **kw: retrying(lambda: attr(*a, **kw), name, self.outage_s)
        return attr

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
            if not is_connection_error(exc):
                raise
            log.warning("trial %d: heartbeat not recorded (database unreachable); trying again in %s s",
                        trial_id, self.heartbeat_interval)
        for hook in self.on_beat:
            try:
                hook(trial_id)
            except Exception as exc:  # noqa: BLE001 - the heartbeat thread must live on; the next beat retries
                log.warning("trial %d: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = retrying(lambda: super(ResilientStorage, self)._get_stale_trial_ids(study_id), "heartbeat check",
                         self.outage_s)
        if not stale or self.lease_holders is None:
            return stale
        held = self.lease_holders(stale)
        return [t for t in stale if t not in held]

    def __repr__(self) -> str:
        return f"ResilientStorage({masked(self.url)})"
