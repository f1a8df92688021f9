"""A test that fails on purpose while the local cluster is up (run by ``test_cluster``: the teardown still runs)."""
from __future__ import annotations

from cluster.fixtures import cluster  # noqa: F401 - the fixture


def test_fails_with_the_cluster_up(cluster):  # noqa: F811
    print(f"CLUSTER-TAG {cluster.tag}", flush=True)
    cluster.popen("node1", ["sleep", "300"])  # a process the teardown must end
    raise AssertionError("failing on purpose")
