"""A run folder's lock names its holder, even when the refusal comes between the holder's lock and its line."""
from __future__ import annotations

import fcntl
import json
import threading

import pytest

from ablations.training.run_folder import LOCK_FILE, RunFolderBusy, RunLock


def test_a_refusal_in_the_holders_first_moment_still_names_it(tmp_path):
    path = tmp_path / LOCK_FILE
    held = open(path, "a+")  # noqa: SIM115 - the holder, which has the lock but not yet its line
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write_line():
        held.write(json.dumps({"pid": 4242, "host": "node7", "started": "2026-12-03T00:00:00+00:00"}) + "\n")
        held.flush()

    timer = threading.Timer(0.3, write_line)
    timer.start()
    try:
        with pytest.raises(RunFolderBusy, match="pid 4242"):
            RunLock(tmp_path).acquire()
    finally:
        timer.cancel()
        held.close()
