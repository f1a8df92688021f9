"""The Optuna study behind a sweep (docs/DESIGN.md, Sweeps): storage, sampler, pruner, the grid queue.

Storage is an ``RDBStorage`` with heartbeats and Optuna's retry callback, so a trial whose worker
loses the database is failed after the grace period and re-queued for another worker (a worker that
dies is noticed at once: ``leases``). SQLite serves one worker; it
is refused for several (its file locking breaks under concurrent writers and on shared filesystems).
A study holds runs of one ``train.threads`` (float results change with it; see ``check_threads``).
A grid ablation is enqueued once, deduplicated by config hash, under a database-level lock
(``StudyLock``) that workers also hold while they claim a trial, so no arm is queued or run twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import warnings

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ablations.sweep.leases import Requeue
from ablations.sweep.queue import state_counts
from ablations.sweep.reconnect import ResilientStorage, connect_kwargs, is_connection_error, retrying
from ablations.sweep.space import queued
from ablations.sweep.spec import SweepSpec, baseline_config, make_config
from ablations.sweep.storage import engine_kwargs, make_sqlite_folder, masked, sqlite_lock_folder
from ablations.sweep.ticker import ticking

__all__ = ["StudyLock", "check_threads", "enqueue_grid", "load_study", "make_pruner", "make_sampler", "make_storage",
           "masked", "progress", "setup_study", "unfinished"]


def outage_s(spec: SweepSpec) -> float:
    """How long a worker keeps reconnecting to a lost database: at least the heartbeat grace, at least a minute."""
    return max(60.0, float(spec.grace_period))


def make_storage(url: str, spec: SweepSpec) -> RDBStorage:
    """``RDBStorage`` with heartbeats, so dead workers' trials are failed and retried, that reconnects (``reconnect``)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite"):
        return RDBStorage(url, engine_kwargs=engine_kwargs(url), heartbeat_interval=spec.heartbeat_interval,
                          grace_period=spec.grace_period, heartbeat_stale_trial_callback=Requeue(spec.max_retry))
    return ResilientStorage(url, outage_s=outage_s(spec), engine_kwargs=connect_kwargs(url),
                            heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period,
                            heartbeat_stale_trial_callback=Requeue(spec.max_retry))


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler; a grid's cells come from the queue, so its sampler never picks a point."""
    options = {k: v for k, v in spec.sampler.items() if k != "type"}
    options.setdefault("seed", 0)
    kind = spec.sampler["type"]
    cls = {"grid": optuna.samplers.RandomSampler, "random": optuna.samplers.RandomSampler,
           "tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}[kind]
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"sampler: bad option for {kind}: {exc}") from None


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner (``none`` for multi-objective studies, which Optuna cannot prune)."""
    options = {k: v for k, v in spec.pruner.items() if k != "type"}
    kind = spec.pruner["type"]
    if kind == "hyperband":
        options.setdefault("max_resource", spec.base.train.epochs)
    cls = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "hyperband": optuna.pruners.HyperbandPruner}[kind]
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"pruner: bad option for {kind}: {exc}") from None


class StudyLock:
    """A lock shared by every worker of one study: PostgreSQL/MySQL advisory lock, or a file lock for SQLite.

    It is held while grid cells are enqueued and while a worker claims its next trial, so two
    workers never both find "one cell left" and ask the sampler for a new one. The database drops
    the lock with the connection, so a worker killed while holding it cannot block the others, and a
    lock whose connection was lost is simply taken again on a new one (``outage_s``: for how long).
    """

    def __init__(self, url: str, study_name: str, outage_s: float = 60) -> None:
        self.url, self.held, self.outage_s = url, False, outage_s
        digest = hashlib.sha256(f"senet-ablate:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.name = f"senet-ablate:{digest.hex()[:40]}"
        self._conn = self._engine = self._file = None
        if url.startswith("sqlite"):
            folder = sqlite_lock_folder(url)  # beside the database, so every host that shares it shares the lock
            self._path = None if folder is None else str(folder / f"study-{digest.hex()[:16]}.lock")
        else:
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **connect_kwargs(url))

    def _lock(self) -> None:
        if self._conn is None:
            self._conn = self._engine.connect()
        if self.url.startswith("postgresql"):
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        else:
            self._conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
        self._conn.commit()

    def _drop(self) -> None:
        """Forget a broken connection (the server dropped its lock with it)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._conn.close()
            self._conn = None

    def acquire(self) -> None:
        if self.held:
            return
        if self._engine is not None:
            retrying(self._lock, "study lock", self.outage_s, on_error=self._drop)
        elif self._path is not None:
            self._file = open(self._path, "a+")  # noqa: SIM115 - held across calls
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        if self._conn is not None:
            fn = "pg_advisory_unlock(:k)" if self.url.startswith("postgresql") else "RELEASE_LOCK(:n)"
            try:
                self._conn.execute(sqlalchemy.text(f"SELECT {fn}"), {"k": self.key, "n": self.name})
                self._conn.commit()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._drop()  # the lock went with the connection
        elif self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self.held = False

    def close(self) -> None:
        self.release()
        self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def spec_summary(spec: SweepSpec) -> dict:
    """What a report needs to know about the spec, stored in the study's user attributes."""
    return {"name": spec.name, "description": spec.description, "paper": spec.paper, "variant": spec.variant,
            "source": spec.source, "space": [p.key for p in spec.space], "baseline": spec.baseline,
            "seeds": list(spec.seeds), "sampler": spec.sampler["type"], "base": spec.base.to_dict(),
            "objectives": [{"metric": o.metric, "direction": o.direction} for o in spec.objectives]}


def load_study(spec: SweepSpec, url: str, study_name: str) -> optuna.Study:
    """Open the existing study with this spec's sampler and pruner."""
    return optuna.load_study(study_name=study_name, storage=make_storage(url, spec),
                             sampler=make_sampler(spec), pruner=make_pruner(spec))


def setup_study(spec: SweepSpec, url: str, study_name: str, *, retry_failed: bool = False) -> tuple[optuna.Study, int]:
    """Create (or reopen) the study and enqueue the grid cells it lacks; returns (study, cells enqueued).

    Idempotent and safe to call from several processes at once: it runs under the study lock and
    skips every config hash the study already holds (waiting, running, complete, pruned; failed ones
    too unless ``retry_failed``), so re-running a sweep resumes it instead of repeating arms.
    """
    make_sqlite_folder(url)
    lock = StudyLock(url, study_name)
    try:
        with lock:
            study = optuna.create_study(study_name=study_name, storage=make_storage(url, spec),
                                        sampler=make_sampler(spec), pruner=make_pruner(spec),
                                        directions=spec.directions, load_if_exists=True)
            have = [d.name.lower() for d in study.directions]
            if have != spec.directions:
                raise ValueError(f"study {study_name!r} already exists with directions {have}, but the spec's "
                                 f"objectives give {spec.directions}; use another --study-name")
            check_threads(study, spec)
            # optuna-dashboard and the CLI name the objective values by these instead of "Objective 0".
            study.set_metric_names([o.metric for o in spec.objectives])
            study.set_user_attr("spec", spec_summary(spec))
            return study, (enqueue_grid(study, spec, retry_failed=retry_failed) if spec.is_grid else 0)
    finally:
        lock.close()


def check_threads(study: optuna.Study, spec: SweepSpec) -> None:
    """Refuse to add runs with another ``train.threads`` to a study that holds runs: float results differ.

    Sweeps pin the thread count (``spec.parse_spec``: 1 unless the spec sets it), so ``--workers`` never
    changes a number; a study made before that, or with another ``--set train.threads``, is not mixed in.
    """
    if not sum(progress(study).values()):  # a count: get_trials would read (and cache) every trial
        return
    stored = ((study.user_attrs.get("spec") or {}).get("base") or {}).get("train", {}).get("threads")
    wanted = spec.base.train.threads
    if stored != wanted:
        made = f"train.threads={stored}" if stored is not None else "train.threads unset (torch's default, one per core)"
        hint = f", or --set train.threads={stored} to continue it" if stored is not None else ""
        raise ValueError(f"study {study.study_name!r} holds runs made with {made}, but this sweep runs "
                         f"train.threads={wanted}; float results change with the thread count, so they would not "
                         f"be comparable: use another --study-name{hint}")


def enqueue_grid(study: optuna.Study, spec: SweepSpec, *, retry_failed: bool = False) -> int:
    """Enqueue every grid cell whose config hash the study does not hold yet (call under ``StudyLock``)."""
    # A failed trial keeps its hash (a deterministic failure would fail again) unless asked;
    # a heartbeat-failed one has a re-queued copy that holds the hash anyway.
    held = {t.user_attrs.get("config_hash") for t in study.get_trials(deepcopy=False)
            if not (retry_failed and t.state == TrialState.FAIL)}
    n = 0
    for cell in ticking(spec.grid(), "enqueueing"):  # in run order: seed-major
        cfg = make_config(spec, cell)
        h = cfg.hash()
        if h in held:
            continue
        params, attrs = queued(spec, cell)
        study.enqueue_trial(params, user_attrs={"config_hash": h, **attrs})
        held.add(h)
        n += 1
    return n


def progress(study: optuna.Study) -> dict[str, int]:
    """Trial counts by state, with failed trials that were re-queued counted apart (``retried``).

    On an RDB by direct SQL (``queue.state_counts``: a worker asks before each claim, and Optuna's
    ``get_trials`` would read every unfinished trial); otherwise from the trials.
    """
    counts = state_counts(study)
    return counts if counts is not None else progress_from_trials(study)


def progress_from_trials(study: optuna.Study) -> dict[str, int]:
    """``progress`` from Optuna's trials (any storage; reads them all)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    out = {s.name.lower(): 0 for s in TrialState}
    out["retried"] = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.number in retried:
            out["retried"] += 1
        else:
            out[t.state.name.lower()] += 1
    return out


def unfinished(study: optuna.Study, spec: SweepSpec, n_trials: int | None = None) -> list[str]:
    """What keeps the sweep from being done, one line each (empty: done).

    A grid is done when every cell (or ``n_trials`` of them, where that caps it) has a COMPLETE or PRUNED
    trial; a sampled study when its budget is spent and no trial is waiting, running, or failed unretried.
    """
    from ablations.naming import run_name

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    decided = (TrialState.COMPLETE, TrialState.PRUNED)
    budget = spec.n_trials if n_trials is None else n_trials

    def why(t: optuna.trial.FrozenTrial) -> str:
        if t.state == TrialState.FAIL:
            return f"{t.user_attrs.get('status', 'failed')}: {t.user_attrs.get('reason', '?')}"
        before = [p for p in trials if p.number in t.system_attrs.get("retry_history", ())]
        after = f" (re-queued after: {before[-1].user_attrs.get('reason', 'a failure')})" if before else ""
        return t.state.name.lower() + after

    if spec.is_grid:
        by_hash: dict[str, list] = {}
        for t in trials:
            by_hash.setdefault(t.user_attrs.get("config_hash"), []).append(t)
        base, cells = baseline_config(spec), spec.grid()
        out = []
        for cell in cells:
            cfg = make_config(spec, cell)
            mine = by_hash.get(cfg.hash(), [])
            if not any(t.state in decided for t in mine):
                out.append(f"{run_name(cfg, base)}: " + (why(mine[-1]) if mine else "not queued"))
        need = len(cells) if budget is None else min(budget, len(cells))
        return out if len(cells) - len(out) < need else []
    out = [f"trial #{t.number}: {why(t)}" for t in trials if t.state not in decided and t.number not in retried]
    left = (budget or 0) - sum(t.number not in retried for t in trials)
    return out + ([f"{left} of the {budget} trials not started"] if left > 0 else [])
