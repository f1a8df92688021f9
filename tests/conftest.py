"""Shared test fixtures: CPU thread control for small graphs on a shared 2-core machine, and the process check.

The check (``process_guard``) fails the session when a process the run started is still alive at its end.
"""
from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.pluginmanager.import_plugin("process_guard")


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole module: small CPU graphs stall when OpenMP threads oversubscribe the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch thread for one test (trials trained in this process while other processes share the CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
