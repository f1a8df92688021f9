"""pytest fixtures of the local cluster: one per test module (bringing it up takes seconds, not each test's).

Without root or ``ip netns`` every test that asks for it is skipped with one line saying which. The cluster is
torn down after the module, also when a test failed or was interrupted, and the teardown fails the module if
anything of it (a namespace, the bridge, a process, its folder) is left.
"""
from __future__ import annotations

import pytest

from cluster import net
from cluster.cluster import Cluster


@pytest.fixture(scope="module")
def cluster():
    why = net.cannot_run()
    if why is not None:
        pytest.skip(why)
    c = Cluster(nodes=2)
    c.up()
    try:
        yield c
    finally:
        c.down()
    left = c.leftovers()
    assert not left, f"the local cluster left {left}"
