"""Where a study lives (DESIGN: Sweeps; anchors §D.1, §E.3): choosing, refusing and reaching the storage URL.

Kept free of Optuna and torch so that ``senet-ablate sweep`` refuses a bad storage within a second:
SQLite serves one worker and is refused for several or for a cluster (writers lock each other out,
and shared filesystems lose its locks); a server that does not answer within ``CONNECT_TIMEOUT_S``
is reported with what to check.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")

CONNECT_TIMEOUT_S = 3


def masked(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    if url.startswith("mysql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {"connect_args": {"timeout": 30}}


def check_reachable(url: str) -> None:
    """Connect once with a short timeout; raise ``ValueError`` saying what to check if that fails."""
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if path and path != ":memory:":
            folder = Path(path).resolve().parent
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                raise ValueError(f"storage {url}: cannot create the database under {existing} (not writable)")
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - driver errors vary; the message is what matters
        reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise ValueError(f"storage {masked(url)} cannot be reached: {reason} (is the server running, "
                         "and are host, port, user, password and database right?)") from None
    finally:
        engine.dispose()


def check_storage_url(url: str) -> str:
    """Refuse storage URLs Optuna cannot use, naming the schemes it can; pick an installed PostgreSQL driver.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; where only psycopg2 is installed (this
    project's dependency) the URL is given the ``+psycopg2`` driver, so either spelling works.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0] if isinstance(url, str) and "://" in url else None
    if scheme not in STORAGE_SCHEMES:
        raise ValueError(f"storage={url!r} is not allowed; give an SQLAlchemy URL: sqlite:///path.db (one worker) or "
                         "postgresql://user:password@host:port/db (several workers, clusters)")
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def default_storage(output_dir: str, study_name: str) -> str:
    """The single-worker default: an SQLite file next to the study's runs."""
    return f"sqlite:///{Path(output_dir) / study_name / 'study.db'}"


def resolve_storage(url: str, workers: int = 1, cluster: bool = False) -> str:
    """Check the URL and refuse combinations that lose trials (SQLite with several workers or on a cluster)."""
    url = check_storage_url(url)
    if url.startswith("sqlite") and (workers > 1 or cluster):
        who = "a SLURM job array" if cluster else f"{workers} workers"
        raise ValueError(f"storage {url} is SQLite, which cannot be shared by {who} (writers lock each other "
                         "out and shared filesystems lose its locks); use PostgreSQL: "
                         "--storage postgresql://USER:PASSWORD@HOST:5432/DB (see README, Sweeps: storage)")
    return url


def make_sqlite_folder(url: str) -> None:
    """Create the folder of an SQLite database (after every check passed, so a refused sweep leaves nothing)."""
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)


def wait_reachable(url: str, timeout_s: float = 30) -> None:
    """Poll until the storage accepts connections (test fixtures, freshly started servers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check_reachable(url)
            return
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
