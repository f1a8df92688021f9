"""The session check of ``process_guard``: a test run that leaves processes behind fails, naming them, and ends them."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import process_guard

# A forgotten child, and a detached one whose parent exits at once (a daemon's double fork, like slurmstepd's).
LEAKY = """
import os, subprocess

def test_starts_processes_and_forgets_them():
    child = subprocess.Popen(["sleep", "300"])
    detached = subprocess.run(["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                              start_new_session=True).stdout.strip()
    open(os.environ["LEAK_PIDS"], "w").write(f"{child.pid} {detached}")
"""


def test_processes_left_running_fail_the_session_by_name_and_are_killed(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LEAK_PIDS": str(tmp_path / "pids"),
           "SENET_TEST_GRACE_S": "0.2", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = process_guard.run([sys.executable, "-m", "pytest", "-p", "process_guard", "-q", "-p", "no:cacheprovider",
                              "test_leaky.py"], cwd=tmp_path, env=env, timeout=60)
    child, detached = map(int, (tmp_path / "pids").read_text().split())
    try:
        assert proc.returncode == 1 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
        assert f"  {child} sleep 300\n" in proc.stdout and f"  {detached} sleep 301\n" in proc.stdout, proc.stdout
        assert not process_guard.alive(child) and not process_guard.alive(detached)
    finally:
        for pid in (child, detached):
            if process_guard.alive(pid):  # the check did not end it: do not leave it to the outer run
                os.kill(pid, signal.SIGKILL)
