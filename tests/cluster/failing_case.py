"""A test that fails on purpose while the local cluster is up (run by ``test_cluster``: the teardown still runs)."""
from __future__ import annotations

import subprocess

from cluster.fixtures import cluster  # noqa: F401 - the fixture


def test_fails_with_the_cluster_up(cluster):  # noqa: F811
    sleeper = cluster.popen("node1", ["sleep", "300"])  # a process the teardown must end
    # Every process of the cluster: munged, and whatever runs in the hosts' namespaces (PostgreSQL, slurmctld, the
    # slurmds, the sleeper). The parent test checks that each has ended.
    in_hosts = [subprocess.run(["ip", "netns", "pids", h.ns], capture_output=True, text=True, check=True,
                               timeout=30).stdout.split() for h in cluster.network.hosts.values()]
    pids = sorted({*map(str, cluster.pids), str(sleeper.pid), *(p for host in in_hosts for p in host)}, key=int)
    print(f"CLUSTER-TAG {cluster.tag} PIDS {' '.join(pids)}", flush=True)
    raise AssertionError("failing on purpose")
