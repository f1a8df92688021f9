"""Real servers for the sweep tests: free ports, and a PostgreSQL cluster (the single-node SLURM: ``fixtures_slurm``).

Started by the test run in a temporary folder on 127.0.0.1 and stopped afterwards; nothing
outside the machine is touched. PostgreSQL refuses to run as root, so as root the cluster runs as the
``postgres`` user that Debian's package creates. The binaries come from Debian's packages
(``.ci/apt-packages.txt``); a test is skipped, saying which binary is missing, only where they are absent.
"""
from __future__ import annotations

import glob
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import process_guard
import pytest

# Ports this session handed out: two calls never return the same one, even before the first is bound.
_handed_out: set[int] = set()


def _port_range() -> range:
    """Where to look: below the kernel's ephemeral range, which it hands to outgoing connections (and to
    ``bind(0)``) at any moment; a port there is only taken by a process that asks for it by number."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 12000 else range(low + 1, 65535)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now and that no earlier call of this session returned.

    Another process can still bind it before the server does: the servers' start retries with a new port when
    the port is taken (``PORT_TRIES``)."""
    ports = _port_range()
    for _ in range(1000):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use (or in TIME_WAIT): try another
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {ports}")


PORT_TRIES = 5  # server starts that lost their port to another process before failing
_PORT_TAKEN = re.compile(r"Address already in use|could not bind|could not create any TCP/IP sockets|"
                         r"Error binding slurm stream socket", re.IGNORECASE)


class PortTaken(RuntimeError):
    """A server exited at start because another process had bound its port meanwhile."""


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _demoted(user: str | None) -> dict:
    """Popen arguments that run the child as ``user`` (its own group, no supplementary groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _tail(*logs: Path) -> str:
    return "".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.exists())


def wait_until(ready, procs: list[subprocess.Popen], what: str, logs: list[Path], timeout: float = 120) -> None:
    """Poll ``ready()`` until true; fail with the servers' logs if one of ``procs`` exits or time runs out
    (``PortTaken`` if one exited because its port was taken)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if any(process_guard.exited(p) for p in procs):
            text = _tail(*logs)
            raise (PortTaken if _PORT_TAKEN.search(text) else RuntimeError)(f"{what} did not come up:\n{text}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s:\n{_tail(*logs)}")
        time.sleep(0.2)


class Postgres:
    """A running PostgreSQL cluster; ``new_database()`` gives each test its own database URL."""

    def __init__(self, port: int, root: Path, user: str | None) -> None:
        self.port, self.root, self.user = port, root, user
        self.superuser = "senet"
        self._n = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        import sqlalchemy

        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


def _postmaster_ready(data: Path) -> bool:
    """The postmaster's own status line (the 8th of ``postmaster.pid``) says it accepts connections."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start a throw-away PostgreSQL on 127.0.0.1 (trust auth, a free port, another if that one is taken
    before the server binds it); stop and delete it afterwards.

    The postmaster is this process's child in its own session (not daemonized by pg_ctl), so stopping it stops
    its whole process group, also when a test fails or the run is interrupted.
    """
    initdb, postgres, isready = _pg_bin("initdb"), _pg_bin("postgres"), _pg_bin("pg_isready")
    if not initdb or not postgres or not isready:
        pytest.skip("PostgreSQL binaries (initdb, postgres, pg_isready) not installed: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:  # postgres refuses root; Debian's package creates the postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="senet-pg-"))
    os.chmod(root, 0o755)
    data, log = root / "data", root / "log"
    if user is not None:
        shutil.chown(root, user)
    server = None
    try:
        subprocess.run([initdb, "-D", str(data), "-U", "senet", "--auth=trust", "-E", "UTF8"], cwd=root, check=True,
                       capture_output=True, **_demoted(user))
        for attempt in range(PORT_TRIES):
            port = free_port()
            with log.open("wb") as fh:  # a fresh log per attempt: an earlier "address in use" is not this one's
                server = subprocess.Popen(
                    [postgres, "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1", "-c",
                     f"unix_socket_directories={root}", "-c", "max_connections=200", "-c", "fsync=off"],
                    cwd=root, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                    **_demoted(user))
            ping = [isready, "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "senet"]
            # Ours is ready when its postmaster.pid says so: a server of another process that took the port
            # would answer the ping too.
            ready = lambda ping=ping: _postmaster_ready(data) and subprocess.run(ping, check=False).returncode == 0
            try:
                wait_until(ready, [server], "PostgreSQL", [log])
                break
            except PortTaken:
                process_guard.stop(server, signal.SIGQUIT)
                if attempt == PORT_TRIES - 1:
                    raise
        yield Postgres(port, root, user)
    finally:
        if server is not None:
            process_guard.stop(server, signal.SIGQUIT)  # immediate shutdown: the data is thrown away anyway
        shutil.rmtree(root, ignore_errors=True)
