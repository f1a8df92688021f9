"""Hosts on a private Linux bridge: one network namespace per host, with its own hostname, ``/tmp`` and hosts file.

Each host is a network namespace joined to the bridge by a veth pair, with one address in a private
10.213.x.0/24 subnet that exists only on this bridge (the bridge itself has .1, so the machine can reach the
hosts). A holder process per host (``sleep infinity``, which bind-mounts ``/etc/netns/<ns>/hosts`` over
``/etc/hosts`` as ``ip netns exec`` does) owns the host's UTS namespace (its hostname) and mount namespace
(a tmpfs on ``/tmp``); every command of the host joins all three with ``nsenter`` (``Network.prefix``), which
execs, so a daemon's PID is the one the test holds. Folders the hosts share live outside ``/tmp``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Not ``ip netns exec``, which remounts /sys for the namespace and so hides the cgroup tree slurmd needs:
# the holder joins the network namespace itself and bind-mounts the hosts file as ``ip netns exec`` would.
# The host's own /tmp hides the machine's; the repository and the Python environment stay visible when they live
# there (a CI clone under /tmp): the machine's /tmp is bind-mounted aside first and those folders mounted back.
HOLDER = ("hostname {name} && mount --bind /etc/netns/{ns}/hosts /etc/hosts && "
          "mkdir -p /etc/netns/{ns}/tmp && mount --bind /tmp /etc/netns/{ns}/tmp && "
          "mount -t tmpfs -o mode=1777 tmpfs /tmp{keep} && echo ready && exec sleep infinity")


def _kept_under_tmp() -> list[str]:
    """The folders under /tmp that every host must still see: this repository and the Python environment."""
    root = Path(__file__).resolve().parents[2]
    out = []
    for path in (root, Path(sys.prefix).resolve()):
        if path.is_relative_to("/tmp") and path != Path("/tmp"):
            out.append(str(path.relative_to("/tmp")))
    return sorted(set(out))


def _holder_script(name: str, ns: str) -> str:
    keep = "".join(f" && mkdir -p /tmp/{rel} && mount --bind /etc/netns/{ns}/tmp/{rel} /tmp/{rel}"
                   for rel in _kept_under_tmp())
    return HOLDER.format(name=name, ns=ns, keep=keep)


@dataclass
class Host:
    name: str  # its hostname
    ns: str  # its network namespace
    addr: str
    holder: int = 0  # the PID whose namespaces the host's commands join


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def cannot_run() -> str | None:
    """Why this machine cannot build the cluster (``None``: it can): root, ``ip netns``, ``nsenter``, ``unshare``."""
    if os.geteuid() != 0:
        return "the local cluster needs root (network namespaces, a bridge, slurmd)"
    missing = [b for b in ("ip", "nsenter", "unshare", "setpriv") if shutil.which(b) is None]
    if missing:
        return f"the local cluster needs {', '.join(missing)} (iproute2, util-linux)"
    probe = f"senet-probe-{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "the local cluster needs `ip netns` (network namespaces are not available here)"
    _ip("netns", "del", probe, check=False)
    return None


def free_subnet() -> int:
    """A third octet x such that 10.213.x.0/24 is on no interface of this machine."""
    used = _ip("-4", "-o", "addr").stdout
    for x in range(10 + os.getpid() % 200, 255):
        if f"10.213.{x}." not in used:
            return x
    raise RuntimeError("no free 10.213.x.0/24 subnet")


class Network:
    """The bridge ``br<tag>`` and the hosts on it (``add`` them, then ``start``)."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.tag, self.subnet = tag, subnet
        self.bridge = f"br{tag}"
        self.hosts: dict[str, Host] = {}

    @property
    def gateway(self) -> str:
        return f"10.213.{self.subnet}.1"

    def add(self, name: str) -> Host:
        host = Host(name, f"{self.tag}-{name}", f"10.213.{self.subnet}.{10 + len(self.hosts)}")
        self.hosts[name] = host
        return host

    def start(self, timeout: float = 30) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        names = "".join(f"{h.addr} {h.name}\n" for h in self.hosts.values())
        for i, host in enumerate(self.hosts.values()):
            folder = Path("/etc/netns") / host.ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
            outer, inner = f"v{self.tag}{i}", f"e{self.tag}{i}"
            _ip("netns", "add", host.ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", host.ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", host.ns, "link", "set", inner, "name", "eth0")
            _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
            holder = subprocess.Popen(["unshare", "--uts", "--mount", "--propagation", "private", "nsenter",
                                       f"--net=/run/netns/{host.ns}", "--", "sh", "-c",
                                       _holder_script(host.name, host.ns)],
                                      stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True,
                                      text=True)
            host.holder = holder.pid
            line = holder.stdout.readline().strip()  # bounded: the shell either says ready or exits
            if line != "ready":
                raise RuntimeError(f"host {host.name}: its namespaces could not be set up")

    def prefix(self, host: str) -> list[str]:
        """The command prefix that runs a command on ``host`` (its network, hostname, /tmp and hosts file)."""
        return ["nsenter", "-t", str(self.hosts[host].holder), "--net", "--uts", "--mount", "--"]

    def link(self, host: str, up: bool) -> None:
        """Take ``host``'s link to the bridge down (a cable pulled) or up again."""
        i = list(self.hosts).index(host)
        _ip("link", "set", f"v{self.tag}{i}", "up" if up else "down")


def namespace_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def teardown(tag: str, timeout: float = 20) -> None:
    """Kill every process in the tag's namespaces (by PID), delete the namespaces, the bridge and hosts files."""
    for ns in namespaces(tag):
        deadline = time.monotonic() + timeout
        while (pids := namespace_pids(ns)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)  # a stopped process cannot die of SIGKILL until continued
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        _ip("netns", "del", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    _ip("link", "del", f"br{tag}", check=False)


def namespaces(tag: str) -> list[str]:
    out = _ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in out if line.startswith(f"{tag}-")]


def leftovers(tag: str) -> list[str]:
    """What of the tag's cluster still exists (empty after ``teardown``)."""
    left = [f"namespace {ns}" for ns in namespaces(tag)]
    left += [f"process {pid} in {ns}" for ns in namespaces(tag) for pid in namespace_pids(ns)]
    if _ip("link", "show", f"br{tag}", check=False).returncode == 0:
        left.append(f"bridge br{tag}")
    left += [f"/etc/netns/{p.name}" for p in Path("/etc/netns").glob(f"{tag}-*")] if Path("/etc/netns").exists() else []
    return left
