"""Real servers for the sweep tests: a PostgreSQL cluster and a single-node SLURM (slurmctld + slurmd + munge).

Both are started by the test run in a temporary folder on 127.0.0.1 and stopped afterwards; nothing
outside the machine is touched. PostgreSQL refuses to run as root, so as root the cluster runs as the
``postgres`` user that Debian's package creates. The binaries come from Debian's packages
(``.ci/apt-packages.txt``); a test is skipped, saying which binary is missing, only where they are absent.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


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


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start a throw-away PostgreSQL on 127.0.0.1 (trust auth, a free port); stop and delete it afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:  # postgres refuses root; Debian's package creates the postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="senet-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if user is not None:
        shutil.chown(root, user)
    port = free_port()
    subprocess.run(_as_user(user, [initdb, "-D", str(data), "-U", "senet", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c max_connections=200 -c fsync=off"
    subprocess.run(_as_user(user, [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60",
                                   "start"]), check=True, capture_output=True)
    try:
        yield Postgres(port, root, user)
    finally:
        subprocess.run(_as_user(user, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# ---- SLURM ---- #

SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol")


def _slurm_conf(root: Path, host: str, cpus: int, ctld_port: int, d_port: int) -> str:
    return f"""ClusterName=senettest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MaxArraySize=100
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class Slurm:
    """A running single-node SLURM; ``env`` points the client commands at its configuration."""

    def __init__(self, root: Path, conf: Path) -> None:
        self.root, self.conf = root, conf
        self.env = {**os.environ, "SLURM_CONF": str(conf)}


@contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on this host, configured in a temporary folder; stopped afterwards."""
    missing = [b for b in SLURM_BINARIES if not (shutil.which(b) or os.path.exists(f"/usr/sbin/{b}"))]
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM test starts slurmd, which needs root")
    root = Path(tempfile.mkdtemp(prefix="senet-slurm-"))
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, host, cpus, free_port(), free_port()))
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    sbin = lambda b: shutil.which(b) or f"/usr/sbin/{b}"
    procs = []
    try:
        subprocess.run([sbin("munged"), "--force", "--key-file", str(key), "--socket", str(sock),
                        "--pid-file", str(root / "munge" / "munged.pid"), "--log-file", str(root / "munge" / "log"),
                        "--seed-file", str(root / "munge" / "seed")], check=True, capture_output=True)
        # slurm reads the munge socket from its auth options
        with conf.open("a") as fh:
            fh.write(f"AuthInfo=socket={sock}\n")
        procs.append(subprocess.Popen([sbin("slurmctld"), "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sbin("slurmd"), "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "".join((root / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                               if (root / f).exists())
                raise RuntimeError(f"SLURM did not come up (sinfo: {out.stdout.strip()!r} {out.stderr.strip()!r}):\n{logs}")
            time.sleep(0.5)
        yield Slurm(root, conf)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        pid = root / "munge" / "munged.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(root, ignore_errors=True)
