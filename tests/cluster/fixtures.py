"""pytest fixtures of the local cluster: one per test module (bringing it up takes seconds, not each test's).

Without root or ``ip netns`` every test that asks for it is skipped with one line saying which, except in CI
(``CI`` set, as ``.ci/run`` does), where that is a failure: CI must run the multi-host tests. The cluster is
torn down after the module, also when a test failed or was interrupted, and the teardown fails the module if
anything of it (a namespace, the bridge, a process, its folder) is left.
"""
from __future__ import annotations

import os

import pytest

from cluster import net
from cluster.cluster import Cluster


def require_cluster() -> None:
    """Skip (or, in CI, fail) with one line when this machine cannot build the cluster."""
    why = net.cannot_run()
    if why is not None and os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the multi-host tests (.ci/apt-packages.txt, run as root)")
    if why is not None:
        pytest.skip(why)


@pytest.fixture(scope="module")
def cluster():
    require_cluster()
    c = Cluster(nodes=2)
    c.up()
    try:
        yield c
    finally:
        c.down()
    left = c.leftovers()
    assert not left, f"the local cluster left {left}"
