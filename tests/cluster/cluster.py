"""The local cluster: a db host (PostgreSQL, scram passwords), a SLURM head host and compute nodes, on one bridge.

By hand (as root), from the repository root::

    .venv/bin/python tests/cluster/cluster.py up [--nodes 2]   # prints the hosts, the storage URL, SLURM_CONF
    .venv/bin/python tests/cluster/cluster.py run head -- sinfo
    .venv/bin/python tests/cluster/cluster.py down             # also after a crash: everything in the state file

Hosts: ``db``, ``head`` (slurmctld), ``node1`` ... ``nodeN`` (``slurmd -N nodeK``), each its own network, hostname
and ``/tmp`` (``net``). One munged serves them all through a socket in the cluster's folder, which is also the
shared file system (``shared/``: run folders, submitit's logs), kept outside ``/tmp``. Every daemon's PID is
recorded in ``state.json`` at once, so ``down`` ends each by PID (SIGKILL, every process in the namespaces),
deletes the namespaces, bridge and hosts files, and removes the folder.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: ``cluster`` is importable

from cluster import net
from cluster.postgres import PgServer
from cluster.slurm_conf import slurm_conf

BASE = Path("/var/tmp/senet-cluster")  # not /tmp: each host mounts its own /tmp
ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """A running local cluster (``up``) or one to tear down (``Cluster.load(state).down()``)."""

    def __init__(self, nodes: int = 2, tag: str | None = None) -> None:
        self.tag = tag or "s" + secrets.token_hex(2)
        self.root = BASE / self.tag
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.network: net.Network | None = None
        self.pids: list[int] = []  # daemons outside the namespaces (munged)
        self.pg: PgServer | None = None
        self.password = secrets.token_hex(8)

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def conf(self) -> Path:
        return self.root / "slurm" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment of commands on the hosts: SLURM's configuration, this checkout, one thread each."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def _save(self) -> None:
        state = {"tag": self.tag, "pids": self.pids, "nodes": self.nodes, "subnet": self.network.subnet,
                 "hosts": {h.name: [h.ns, h.addr, h.holder] for h in self.network.hosts.values()},
                 "db_port": self.pg.port if self.pg else None, "password": self.password}
        (self.root / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, tag: str) -> Cluster:
        state = json.loads((BASE / tag / "state.json").read_text())
        self = cls(len(state["nodes"]), tag)
        self.pids, self.password = state["pids"], state["password"]
        self.network = net.Network(tag, state["subnet"])
        for name, (ns, addr, holder) in state["hosts"].items():
            self.network.hosts[name] = net.Host(name, ns, addr, holder)
        if state["db_port"]:
            self.pg = PgServer.__new__(PgServer)
            self.pg.host, self.pg.port, self.pg.password = self.addr("db"), state["db_port"], self.password
        return self

    def addr(self, host: str) -> str:
        return self.network.hosts[host].addr

    def up(self, timeout: float = 90) -> Cluster:
        self.shared.mkdir(parents=True)
        os.chmod(self.root, 0o755)
        for sub in ("state", "munge", *(f"spool/{n}" for n in self.nodes)):
            (self.root / "slurm" / sub).mkdir(parents=True)
        self.network = net.Network(self.tag, net.free_subnet())
        for name in ("db", "head", *self.nodes):
            self.network.add(name)
        try:
            self.network.start()
            self._save()
            self._munged()
            self._save()
            self.pg = PgServer(host=self.addr("db"), port=5432, password=self.password, root=self.root / "pg",
                               wrap=[*self.network.prefix("db"), "setpriv", "--reuid=postgres", "--regid=postgres",
                                     "--clear-groups", "--"])
            self.pg.start()
            self._save()
            self.conf.write_text(slurm_conf(self.root / "slurm", f"head({self.addr('head')})",
                                             {n: self.addr(n) for n in self.nodes}))
            self.popen("head", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            for node in self.nodes:
                self.popen(node, ["slurmd", "-D", "-N", node, "-f", str(self.conf)])
            self._wait_idle(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _munged(self) -> None:
        munge = self.root / "slurm" / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        proc = subprocess.Popen(["munged", "--foreground", "--force", "--key-file", str(key), "--socket",
                                 str(munge / "munge.socket"), "--pid-file", str(munge / "munged.pid"), "--log-file",
                                 str(munge / "log"), "--seed-file", str(munge / "seed")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.pids.append(proc.pid)
        _until(lambda: (munge / "munge.socket").exists(), 30, lambda: "munged did not start")

    def popen(self, host: str, cmd: list[str], **kw) -> subprocess.Popen:
        """Start ``cmd`` on ``host`` in its own session (a daemon: torn down with the host's namespace)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen([*self.network.prefix(host), *cmd], env=kw.pop("env", self.env),
                                start_new_session=True, **kw)

    def run(self, host: str, cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` on ``host`` and wait (bounded); on a timeout its process group is killed."""
        proc = self.popen(host, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{cmd} on {host} ran past {timeout} s:\n{err[-3000:]}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = self.run("head", ["sinfo", "-h", "-o", "%n %t"], timeout=30)
            states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
            return out.returncode == 0 and all(states.get(n) in ("idle", "mix", "alloc") for n in self.nodes)

        _until(idle, timeout, lambda: "SLURM nodes did not come up:\n" + self.logs())

    def kill_host(self, host: str) -> None:
        """A node dies: SIGKILL every process on ``host`` but its namespace holder (slurmd, job steps, workers)."""
        holder = self.network.hosts[host].holder
        for pid in net.namespace_pids(self.network.hosts[host].ns):
            if pid != holder:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def logs(self) -> str:
        files = sorted((self.root / "slurm").glob("*.log")) + [self.root / "pg" / "log"]
        return "".join(f"--- {f}\n{f.read_text(errors='replace')[-1500:]}" for f in files if f.exists())

    def storage_url(self, database: str) -> str:
        return self.pg.url(database)

    def new_database(self, prefix: str) -> str:
        return self.pg.new_database(prefix)

    def down(self) -> None:
        """End everything of this cluster by PID, delete namespaces, bridge, hosts files and the folder."""
        if self.pg is not None and getattr(self.pg, "proc", None) is not None:
            self.pg.stop(signal.SIGQUIT)
        net.teardown(self.tag)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> list[str]:
        left = net.leftovers(self.tag) + [f"process {p}" for p in self.pids if _alive(p)]
        return left + ([str(self.root)] if self.root.exists() else [])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def _until(ready, timeout: float, what) -> None:
    """Poll ``ready()`` until true; past ``timeout`` raise with ``what()`` (the logs as they are then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(what())
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up").add_argument("--nodes", type=int, default=2)
    sub.add_parser("down").add_argument("tag", nargs="?", help="default: every cluster under " + str(BASE))
    run = sub.add_parser("run")
    run.add_argument("host")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        if (why := net.cannot_run()) is not None:
            print(why, file=sys.stderr)
            return 1
        c = Cluster(args.nodes).up()
        for h in c.network.hosts.values():
            print(f"{h.name:6} {h.addr:15} namespace {h.ns}  (holder pid {h.holder})")
        print(f"storage: {c.storage_url('postgres')}\nexport SLURM_CONF={c.conf}\nshared folder: {c.shared}\n"
              f"down: {sys.argv[0]} down {c.tag}")
        return 0
    tags = [args.tag] if getattr(args, "tag", None) else sorted(p.name for p in BASE.glob("*") if p.is_dir())
    if args.cmd == "run":
        c = Cluster.load(tags[-1])
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        return subprocess.run([*c.network.prefix(args.host), *cmd], env=c.env, check=False).returncode
    for tag in tags:
        c = Cluster.load(tag) if (BASE / tag / "state.json").exists() else Cluster(tag=tag)
        c.down()
        print(f"{tag}: down" + (f"; left: {c.leftovers()}" if c.leftovers() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
