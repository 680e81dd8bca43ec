"""Keeps a multi-node Ray cluster (``ray.cluster_utils``) up on this machine for a test.

``python cluster_driver.py NODES``: starts the cluster, prints its address on one line,
then waits for a line on stdin and shuts the cluster down (only its own processes).
"""

from __future__ import annotations

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.pop("RAY_ADDRESS", None)


def main() -> None:
    from ray.cluster_utils import Cluster

    nodes = int(sys.argv[1])
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.readline()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
