"""A reader that stops early (``senet-ablate ... | head``) ends the command quietly: exit 141 (128 + SIGPIPE, as a
shell reports it), no traceback. A real pipe whose reader has gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["sweep", "sweeps/paper/reduction.yaml", "--variant", "digits", "--dry-run"],
                                     ["complexity", "--table", "2", "--out", ""]], ids=["sweep", "complexity"])
def test_a_closed_pipe_ends_the_command_without_a_traceback(command):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write meets a closed pipe
    try:
        proc = subprocess.run([sys.executable, "-m", "ablations.cli", *command], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
