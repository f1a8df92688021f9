"""A PostgreSQL server the tests can fault: restart it (``pg_ctl restart -m fast``), stall it (SIGSTOP), resume it.

The postmaster runs in the foreground as a child of the test process, in its own session, so its PID is known
for the whole test and every backend is in its process group: a restart is SIGINT (PostgreSQL's fast shutdown)
and a fresh postmaster on the same data folder and port; a stall stops the postmaster, or its whole group.
``wrap`` runs it elsewhere (``nsenter ... setpriv ...``: the db host of the local cluster); ``password`` turns on
scram-sha-256 authentication for TCP connections (local socket connections stay trusted, for the fixture itself).
PostgreSQL refuses root, so as root the server runs as Debian's ``postgres`` user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "senet"


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


class PgServer:
    """One PostgreSQL cluster in a temporary folder; ``url()``/``new_database()`` for the tests.

    Args:
        host: the address it listens on (and the URLs name).
        port: its port (default: a free one on 127.0.0.1).
        password: the superuser's password; TCP clients must give it (scram-sha-256).
        wrap: a command prefix the postmaster runs under (it must exec, keeping the PID, and drop root itself).
        root: the folder for its data (default: a new one in the temp folder).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, password: str | None = None,
                 wrap: list[str] | None = None, root: Path | None = None) -> None:
        for name in ("initdb", "postgres", "pg_isready"):
            if not pg_bin(name):
                raise FileNotFoundError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
        self.host, self.port, self.password, self.wrap = host, port or free_port(), password, wrap or []
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="senet-pgfault-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.data, self.log = self.root / "data", self.root / "log"
        self.proc: subprocess.Popen | None = None
        self._n = 0
        if self.user:
            shutil.chown(self.root, self.user)
        cmd = [pg_bin("initdb"), "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--auth-local=trust",
               "--auth-host=" + ("scram-sha-256" if password else "trust")]
        if password:
            pwfile = self.root / "pw"
            pwfile.write_text(password + "\n")
            if self.user:
                shutil.chown(pwfile, self.user)
            cmd += ["--pwfile", str(pwfile)]
        subprocess.run(cmd, cwd=self.root, check=True, capture_output=True, **self._demoted())
        if password:
            (self.root / "pw").unlink()
            # Any address of the bridge (and loopback): the worker hosts are on the bridge's subnet.
            with (self.data / "pg_hba.conf").open("a") as fh:
                fh.write("host all all 0.0.0.0/0 scram-sha-256\n")

    def _demoted(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60) -> None:
        cmd = [*self.wrap, pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-c",
               f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.root}", "-c",
               "max_connections=200", "-c", "fsync=off"]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         **({} if self.wrap else self._demoted()))
        ping = [*self.wrap, pg_bin("pg_isready"), "-q", "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER,
                "-d", "postgres"]
        deadline = time.monotonic() + timeout
        while subprocess.run(ping, check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> None:
        """Shut down (SIGINT: fast, as ``pg_ctl stop -m fast``; SIGQUIT: immediate); SIGKILL if it does not."""
        if self.proc is None:
            return
        self.resume()  # a stopped server cannot shut down
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout)
        self._signal_group(signal.SIGKILL)  # backends that outlived their postmaster
        self.proc = None

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is closed, the server comes back on the same port."""
        self.stop(signal.SIGINT)
        self.start()

    def pause(self, group: bool = False) -> None:
        """SIGSTOP the postmaster (new connections hang), or with ``group`` every backend too (everything hangs)."""
        if group:
            self._signal_group(signal.SIGSTOP)
        else:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self, postmaster: bool = True) -> None:
        """SIGCONT the backends, and the postmaster unless ``postmaster=False``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in self.group_pids():
            if postmaster or pid != self.proc.pid:
                os.kill(pid, signal.SIGCONT)

    def group_pids(self) -> list[int]:
        """The postmaster and its backends (its process group)."""
        if self.proc is None:
            return []
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.getpgid(int(name)) == self.proc.pid:
                        out.append(int(name))
                except ProcessLookupError:
                    pass
        return out

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def url(self, database: str = "postgres") -> str:
        auth = f"{SUPERUSER}:{self.password}" if self.password else SUPERUSER
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh database, created over the local socket (no password, no bridge needed)."""
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        psql = [*self.wrap, pg_bin("psql"), "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER,
                "-d", "postgres", "-q", "-c", f'CREATE DATABASE "{name}"']
        subprocess.run(psql, check=True, capture_output=True, timeout=60)
        return self.url(name)

    def close(self) -> None:
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def has_study(url: str, name: str) -> bool:
    """Whether the study exists, read without creating Optuna's schema (which would race the sweep's own)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(sqlalchemy.text("SELECT to_regclass('studies')")).scalar() is None:
                return False
            return conn.execute(sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :n"),
                                {"n": name}).first() is not None
    finally:
        engine.dispose()
