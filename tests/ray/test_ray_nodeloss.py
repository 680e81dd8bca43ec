"""Losing a whole node with its disk, on a 3-node Ray cluster on this machine
(``pmmc-ray nodeloss``, in a child process with its own Ray): acceptors, replicas and
leaders each on distinct nodes; the node of the active leader killed hard; the store
serves again from the protocol's own failover; the lost acceptor is replaced through
the log; nothing acknowledged is lost and the history is linearizable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray


def test_a_node_and_its_disk_lost_under_load(tmp_path):
    out = tmp_path / "nodeloss.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmmc_ray",
            "nodeloss",
            "--duration",
            "20",
            "--lose-disk",
            "--json",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    res = json.loads(out.read_text())
    print({k: res[k] for k in ("victims", "next_write_s", "replaced", "ops_ok", "linearizable")})
    assert proc.returncode == 0, (res, proc.stderr[-2000:])
    assert res["acceptors_on_distinct_nodes"] and res["roles_spread"]
    assert "acceptor-1" in res["victims"] or any(v.startswith("acceptor-") for v in res["victims"])
    assert res["replaced"] and not res["lost_appends"] and not res["duplicated_appends"]
    assert res["acked_appends"] > 0 and res["linearizable"] == "linearizable"
