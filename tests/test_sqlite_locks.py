"""SQLite studies: the study lock and the trial leases live beside the database, so two hosts that share
the database's folder (each with its own temp folder) see each other's locks. Real processes, real flocks."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ablations.sweep.leases import Leases
from ablations.sweep.storage import sqlite_lock_folder
from ablations.sweep.study import StudyLock

# The other host: its own temp folder (TMPDIR), the same database folder; holds trial 7's lease and the study lock
# until a line comes on its stdin.
HOLDER = """
import sys
from ablations.sweep.leases import Leases
from ablations.sweep.study import StudyLock
url = sys.argv[1]
leases, lock = Leases(url), StudyLock(url, "shared")
leases.take(7)
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
leases.release()
print("released", flush=True)
"""


def test_a_lease_and_the_study_lock_held_on_one_host_are_seen_from_another(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    (tmp_path / "shared").mkdir()
    (tmp_path / "host_a").mkdir()
    (tmp_path / "host_b").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "host_b"))  # this process: the second host
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**_env(), "TMPDIR": str(tmp_path / "host_a")})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert Leases(url).alive([7, 8]) == {7}
        lock, got = StudyLock(url, "shared"), threading.Event()
        waiter = threading.Thread(target=lambda: (lock.acquire(), got.set()), daemon=True)
        waiter.start()
        assert not got.wait(1.0), "the study lock was taken while the other host held it"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert got.wait(20), "the study lock was not passed on when the other host released it"
        lock.release()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(20) == 0
        assert Leases(url).alive([7]) == set()
    finally:
        holder.kill()
        holder.wait(10)
    folder = tmp_path / "shared" / "study.db-locks"
    assert sqlite_lock_folder(url) == folder
    assert not list((tmp_path / "host_a").iterdir()) and not list((tmp_path / "host_b").iterdir())
    assert not (folder / "trial7.lease").exists()  # released leases are removed


def test_a_dead_holders_lease_is_free_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        assert Leases(url).alive([7]) == {7}
    finally:
        holder.kill()
        holder.wait(10)
    deadline = time.monotonic() + 10
    while Leases(url).alive([7]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Leases(url).alive([7]) == set()
    with StudyLock(url, "shared") as lock:  # the kernel dropped the dead holder's study lock too
        assert lock.held


def test_a_lock_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "study.db-locks").write_text("not a folder")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match=r"^storage sqlite:///\S+: cannot make the lock folder \S+study\.db-locks \(") as exc:
        StudyLock(url, "x")
    assert "\n" not in str(exc.value)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TMPDIR"}
