"""A single-node SLURM for the sweep tests: munged, slurmctld and one slurmd on 127.0.0.1, in a temporary folder.

The configuration is the namespace cluster's (``cluster.slurm_conf``) with one node, this host, on free ports.
The binaries come from Debian's packages (``.ci/apt-packages.txt``); without them, or without root (slurmd),
the tests that need it skip with one line saying which.
"""
from __future__ import annotations

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

import process_guard
import pytest
from cluster.slurm_conf import slurm_conf
from fixtures_servers import PORT_TRIES, PortTaken, free_port, wait_until

SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol")


class Slurm:
    """A running single-node SLURM; ``env`` points the client commands at its configuration."""

    def __init__(self, root: Path, conf: Path) -> None:
        self.root, self.conf = root, conf
        self.env = {**os.environ, "SLURM_CONF": str(conf)}


@contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on this host, configured in a temporary folder; stopped afterwards.

    On the way out every job is cancelled and gone from the queue before the daemons stop: slurmstepd, which
    runs a job's steps in its own session, outlives a stopped slurmd and ignores SIGTERM, as does ``srun``.
    Whatever still holds files in the cluster's folder after that (slurmstepd keeps its log open), and every
    descendant of it, gets SIGKILL; those re-parented to this process (``process_guard``) are reaped.
    """
    missing = [b for b in SLURM_BINARIES if not (shutil.which(b) or os.path.exists(f"/usr/sbin/{b}"))]
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM test starts slurmd, which needs root")
    root = Path(tempfile.mkdtemp(prefix="senet-slurm-"))
    host = socket.gethostname().split(".")[0]
    for sub in ("state", f"spool/{host}", "munge"):
        (root / sub).mkdir(parents=True)
    conf = root / "slurm.conf"
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    sbin = lambda b: shutil.which(b) or f"/usr/sbin/{b}"
    # Each daemon in the foreground, a child of this process in its own session: a Ctrl-C of the test run does
    # not reach them before the jobs are cancelled, and stopping one stops its process group.
    daemon = lambda *cmd: subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)
    munged, procs = None, []
    logs = [root / "munge" / "log", root / "slurmctld.log", root / f"slurmd-{host}.log"]

    def idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    try:
        munged = daemon(sbin("munged"), "--foreground", "--force", "--key-file", str(key), "--socket", str(sock),
                        "--pid-file", str(root / "munge" / "munged.pid"), "--log-file", str(logs[0]),
                        "--seed-file", str(root / "munge" / "seed"))
        wait_until(sock.exists, [munged], "munged", logs[:1])
        for attempt in range(PORT_TRIES):  # slurm.conf fixes both ports: new ones when a daemon lost its port
            for log in logs[1:]:
                log.unlink(missing_ok=True)
            conf.write_text(slurm_conf(root, host, {host: "127.0.0.1"}, ports=(free_port(), free_port()), cpus=cpus,
                                      slurmd_timeout=30, auth_socket=sock))
            procs = [daemon(sbin("slurmctld"), "-D", "-i", "-f", str(conf)),
                     daemon(sbin("slurmd"), "-D", "-f", str(conf))]
            try:
                wait_until(idle, [munged, *procs], "SLURM", logs)
                break
            except PortTaken:
                for p in reversed(procs):
                    process_guard.stop(p)
                procs = []
                if attempt == PORT_TRIES - 1:
                    raise
        yield Slurm(root, conf)
    finally:
        running = process_guard.using(root)  # the jobs' processes now, to reap them once they have ended
        if procs:
            _cancel_all_jobs(env)
        for p in [*reversed(procs), munged]:  # slurmd, slurmctld, munged
            if p is not None:
                process_guard.stop(p)
        process_guard.kill(list({p.pid: p for p in [*running, *process_guard.using(root)]}.values()))
        shutil.rmtree(root, ignore_errors=True)



def _cancel_all_jobs(env: dict, timeout: float = 60) -> None:
    """scancel every job of the cluster (all are the tests'), and wait, bounded, until the queue is empty."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    subprocess.run(["scancel", "--user", user], env=env, capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0 or not out.stdout.strip():  # empty (or slurmctld gone: nothing more to wait for)
            return
        time.sleep(0.2)
