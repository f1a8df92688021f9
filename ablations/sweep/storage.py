"""Where a study lives (docs/DESIGN.md, Sweeps): choosing, refusing, reaching and hiding the storage URL.

Kept free of Optuna and torch so that ``senet-ablate sweep`` refuses a bad storage within a second:
SQLite serves one worker and is refused for several or for a cluster (writers lock each other out,
and shared filesystems lose its locks); a server that does not answer within ``CONNECT_TIMEOUT_S``
is reported with what to check.

A URL's password is a secret: every message and file shows the URL ``masked``, and the workers a sweep
starts get the URL in the environment (``STORAGE_ENV``), never on their command line, where ``ps`` shows it
and W&B records it. A password-less URL with libpq's ``PGPASSWORD`` or ``~/.pgpass`` works as well.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")

CONNECT_TIMEOUT_S = 3

#: The environment variable that carries the storage URL: from a sweep to its workers (local processes and
#: SLURM jobs, which sbatch gives the submitting environment), and from a user who keeps it off the command line.
STORAGE_ENV = "SENET_STORAGE_URL"

PASSWORD_HINT = (f"the password is hidden: give the URL in ${STORAGE_ENV} instead of --storage, "
                 "or drop it from the URL and set PGPASSWORD or ~/.pgpass")

# userinfo's password in anything URL-like that SQLAlchemy cannot parse (a mistyped scheme://user:PASSWORD@host)
_USERINFO_PASSWORD = re.compile(r"((?:^|[/\s])[^:/@\s]*:)[^@\s]*@")


def _extra_at(url: str) -> tuple[str, str, str] | None:
    """``(scheme://user, host and the rest, userinfo)``, split at the last ``@``, when the userinfo holds an
    unencoded ``@`` (a URL parser splits at the first and shows the password's tail as the host); else ``None``."""
    scheme, sep, rest = url.partition("://")
    netloc = rest.split("/", 1)[0]
    if not sep or netloc.count("@") < 2:
        return None
    userinfo, _, after = rest.rpartition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}", after, userinfo


def masked(url: str) -> str:
    """The URL with its password shown as ``***`` (``postgresql://user:***@host:5432/db``), for every message and file."""
    url = str(url)
    if (split := _extra_at(url)) is not None:
        return f"{split[0]}:***@{split[1]}"
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: hide whatever sits where a password would
        return _USERINFO_PASSWORD.sub(r"\1***@", url)


def has_password(url: str) -> bool:
    """Whether the URL itself carries a password (rather than libpq's PGPASSWORD or ~/.pgpass)."""
    try:
        return bool(sqlalchemy.engine.make_url(url).password)
    except Exception:  # noqa: BLE001 - unparsable: masking it changes it only where a password sits
        return masked(url) != url


def masked_argv(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with every URL's password hidden (``--storage URL`` and ``--storage=URL``)."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        out.append(flag + eq + masked(value) if "://" in value else arg)
    return out


def without_option(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """``argv`` less the option ``flag`` given ``value`` (``--flag VALUE``, ``--flag=VALUE``, argparse abbreviations)."""
    names = lambda arg: len(arg) > 2 and flag.startswith(arg)  # argparse accepts any unique prefix
    out: list[str] = []
    for arg in argv:
        name, eq, rest = arg.partition("=")
        if arg == value and out and names(out[-1]):
            out.pop()
        elif not (eq and rest == value and names(name)):
            out.append(arg)
    return out


def move_storage_to_env(url: str) -> None:
    """Take a ``--storage`` URL that holds a password out of ``sys.argv`` and put it in ``STORAGE_ENV``.

    W&B records ``sys.argv`` in every run (``wandb sync`` uploads it) and Lightning's DDP launcher starts the
    other ranks with it; they inherit the environment, so they still find the URL. The process's own command
    line (``/proc/self/cmdline``) cannot be changed from Python: a user keeps the password off it with
    ``STORAGE_ENV``, ``PGPASSWORD`` or ``~/.pgpass``.
    """
    if has_password(url):
        sys.argv[:] = masked_argv(without_option(sys.argv, "--storage", url))
        os.environ[STORAGE_ENV] = url


def storage_from_env() -> str | None:
    """The URL a user or a sweep put in ``STORAGE_ENV`` (``None`` when unset or empty)."""
    return os.environ.get(STORAGE_ENV) or None


def worker_env(url: str) -> dict[str, str]:
    """This process's environment plus the URL in ``STORAGE_ENV``, for a worker process started with it."""
    return {**os.environ, STORAGE_ENV: url}


@contextmanager
def storage_in_env(url: str) -> Iterator[None]:
    """``STORAGE_ENV`` holds ``url`` inside the block (what a SLURM job submitted there inherits), as before after."""
    before = os.environ.get(STORAGE_ENV)
    os.environ[STORAGE_ENV] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STORAGE_ENV, None)
        else:
            os.environ[STORAGE_ENV] = before


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
        password = sqlalchemy.engine.make_url(url).password
        if password:  # drivers do not echo it today; a message must not depend on that
            reason = reason.replace(str(password), "***")
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
        raise ValueError(f"storage={masked(url)!r} is not allowed; give an SQLAlchemy URL: sqlite:///path.db (one worker) or "
                         "postgresql://user:password@host:port/db (several workers, clusters)")
    if _extra_at(url) is not None:
        raise ValueError(f"storage {masked(url)}: the user or password holds an unencoded '@', so host and password "
                         "cannot be told apart; write each '@' in them as %40")
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
        raise ValueError(f"storage {masked(url)} is SQLite, which cannot be shared by {who} (writers lock each other "
                         "out and shared filesystems lose its locks); use PostgreSQL: "
                         "--storage postgresql://USER:PASSWORD@HOST:5432/DB (see README, Sweeps: storage)")
    return url


def make_sqlite_folder(url: str) -> None:
    """Create the folder of an SQLite database (after every check passed, so a refused sweep leaves nothing)."""
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)


def sqlite_lock_folder(url: str) -> Path | None:
    """The folder of an SQLite study's lock files: ``<database>-locks`` beside the database; None in memory.

    Beside the database, not in a temp folder: two commands on two hosts that share the database's
    folder must see each other's study lock and trial leases, and a node's temp folder is its own.
    The folder is made on first use (the database's folder is writable: SQLite writes its journal there).
    """
    path = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if not path or path == ":memory:":
        return None
    folder = Path(path).resolve().with_name(Path(path).name + "-locks")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise ValueError(f"storage {masked(url)}: cannot make the lock folder {folder} ({exc.strerror or exc})") from None
    return folder


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
