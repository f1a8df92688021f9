"""Process ownership for the test suite: every process a test run starts is found again, ended and reaped.

Servers and workers outlive the call that started them (``pg_ctl``-style daemons, slurmd's ``slurmstepd``, which
is double-forked into its own session), so "the processes of this run" is pinned down without matching names:

- The pytest process is a child subreaper (``PR_SET_CHILD_SUBREAPER``): an orphaned descendant is re-parented to
  pytest instead of init, so it stays a descendant and pytest can reap it (init does not reap in every container).
- ``SENET_TEST_RUN`` carries a fresh id per run; every child inherits it, and sbatch passes it on to a job's batch
  script, ``srun`` and tasks. A nested run appends its id, so the outer run still recognises the inner's processes.
- A server holds files open under its own temporary root (slurmstepd keeps the root's ``slurmd.log``), which is
  how a fixture finds the processes of *its* server: :func:`using`.

As a plugin (``tests/conftest.py`` loads it; ``-p process_guard`` elsewhere) it checks at the end of the session
that nothing the run started is still alive, and fails the session with their command lines if so.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKER = "SENET_TEST_RUN"
# How long the session check lets processes that are already on their way out finish (returns as soon as they have).
GRACE_S = float(os.environ.get("SENET_TEST_GRACE_S", "10"))
_PR_SET_CHILD_SUBREAPER = 36
_run_id: str | None = None


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    start: int  # clock ticks after boot: with the pid, a process's identity (pids are reused)
    cmdline: str


def _read(path: str, mode: str = "r") -> str | bytes | None:
    try:
        with open(path, mode) as fh:
            return fh.read()
    except OSError:  # gone meanwhile, or not ours to read
        return None


def _proc(pid: int) -> Proc | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    fields = stat[stat.rindex(")") + 2:].split()
    raw = _read(f"/proc/{pid}/cmdline", "rb") or b""
    cmd = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or stat[stat.index("(") + 1:stat.rindex(")")]
    return Proc(pid, int(fields[1]), fields[0], int(fields[19]), cmd)


def table() -> dict[int, Proc]:
    """Every live process (zombies excluded: they have exited) started no earlier than this one."""
    me = _proc(os.getpid())
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := _proc(int(name))) and p.state not in "ZX" and p.start >= me.start:
            out[p.pid] = p
    return out


def descendants(procs: dict[int, Proc], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _carries(pid: int, run: str) -> bool:
    env = _read(f"/proc/{pid}/environ", "rb") or b""
    for item in env.split(b"\0"):
        if item.startswith(MARKER.encode() + b"="):
            return run in item.decode(errors="replace").partition("=")[2].split()
    return False


def _paths(pid: int) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        out.append(os.readlink(f"/proc/{pid}/cwd"))
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def using(root: Path) -> list[Proc]:
    """Processes with ``root`` (a folder this run created) in their command line, working folder or open files,
    and their descendants: the processes of the server that lives there, also those it forked off."""
    procs, prefix = table(), str(root).rstrip("/") + "/"
    hits = {p.pid for p in procs.values() if p.pid != os.getpid() and (
        prefix in p.cmdline or any((q + "/").startswith(prefix) for q in _paths(p.pid)))}
    return [procs[p] for p in sorted(hits | descendants(procs, hits))]


def alive(pid: int) -> bool:
    p = _proc(pid)
    return p is not None and p.state not in "ZX"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (or reaped already): its parent reaps it
        os.waitpid(pid, os.WNOHANG)


def kill(procs: list[Proc], timeout: float = 10.0) -> list[Proc]:
    """SIGKILL ``procs`` (identified as ours), reap those that are our children; returns those still alive."""
    for p in procs:
        if (now := _proc(p.pid)) and now.start == p.start:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    left = [p.pid for p in procs]
    while (left := [pid for pid in left if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Now that they have exited, those whose parent went with them are re-parented to us: reap them all.
    for p in procs:
        _reap(p.pid)
    return [p for p in procs if p.pid in left]


def exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` has exited, without reaping it: unreaped, its pid and so its process group id stay taken."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return True


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """End a process started with ``start_new_session=True``, its process group and its other descendants.

    ``sig`` asks it to stop; after ``timeout`` (or at once, for what the leader leaves behind) SIGKILL goes to its
    group and to every descendant it had when asked, also those that started a session of their own (the
    local sweep's workers). The group is signalled before the leader is reaped, so its id is still ours.
    """
    if proc.returncode is None:
        procs = table()
        tree = [procs[p] for p in descendants(procs, {proc.pid})]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while not exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        kill(tree)
    proc.wait()


@contextlib.contextmanager
def stopped(pid: int, group: bool = False, timeout: float = 30.0):
    """Hold process ``pid`` (its process group with ``group``) still with SIGSTOP inside the block, so a test can
    look at its files and send it a signal at a point it chose; SIGCONT on the way out, whatever happened (a
    signal sent meanwhile is delivered then). A stopped process still holds its locks, leases and connections."""
    send = os.killpg if group else os.kill
    send(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + timeout
        while (p := _proc(pid)) is not None and p.state not in "TtZX":  # stopped (or gone) now
            assert time.monotonic() < deadline, f"process {pid} did not stop"
            time.sleep(0.01)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            send(pid, signal.SIGCONT)


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` with ``cmd`` in its own process group, all of which
    (workers, DDP ranks) is killed when the test gives up on it: timeout, Ctrl-C, any exception."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop(proc, signal.SIGKILL, timeout=5)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def begin_run() -> str:
    """A fresh id for this run in the environment every child inherits; pytest becomes the subreaper of its tree."""
    global _run_id
    _run_id = uuid.uuid4().hex[:12]
    os.environ[MARKER] = f"{os.environ.get(MARKER, '')} {_run_id}".strip()
    with contextlib.suppress(OSError, AttributeError):  # Linux only; without it the marker still finds the jobs
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    return _run_id


def leftovers(run: str) -> list[Proc]:
    """Processes of this run still alive: descendants of pytest or carriers of its id, less the interpreter's own
    helpers that end with it (multiprocessing's resource tracker and fork server)."""
    helpers = set()
    for mod, obj, attr in (("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
                           ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid")):
        helpers.add(getattr(getattr(sys.modules.get(mod), obj, None), attr, None))
    procs = table()
    ours = descendants(procs, {os.getpid()}) | {p for p in procs if p != os.getpid() and _carries(p, run)}
    return [procs[p] for p in sorted(ours - helpers) if p in procs]


def _reap_zombie_children() -> None:
    """Orphans re-parented to pytest that exited meanwhile are its zombies until reaped."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := _proc(int(name))) and p.ppid == me and p.state == "Z":
            _reap(p.pid)


def pytest_sessionstart(session: pytest.Session) -> None:
    begin_run()


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish, which tears down the session's fixtures
def pytest_sessionfinish(session: pytest.Session) -> None:
    if _run_id is None:
        return
    if "wandb" in sys.modules:  # W&B's service process serves in-process runs until teardown (or interpreter exit)
        sys.modules["wandb"].teardown()
    deadline = time.monotonic() + GRACE_S
    while (left := leftovers(_run_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    _reap_zombie_children()
    if not left:
        return
    survivors = kill(left)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr else lambda line: print(line, file=sys.stderr)
    if tr:
        tr.write_sep("=", "processes left running", red=True)
    write(f"{len(left)} process(es) started by this test run were still running at its end "
          f"(killed now{'; still alive: ' + str([p.pid for p in survivors]) if survivors else ''}):")
    for p in left:
        write(f"  {p.pid} {p.cmdline}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
