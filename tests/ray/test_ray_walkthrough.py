"""The README's cluster walkthrough, end to end, against a 3-node Ray cluster on this
machine (what can run without a cloud): ``pmmc-ray up --address`` -> ``status`` (every
actor's node; acceptors on distinct nodes) -> KV commands -> Locust with workers placed
on the cluster's nodes by Ray -> ``chaos --address`` -> ``down``. Each command runs as its own process, as an
operator would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

HERE = Path(__file__).parent


def test_walkthrough_on_a_local_multi_node_cluster(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(
        [sys.executable, str(HERE / "cluster_driver.py"), "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        address = driver.stdout.readline().strip()
        assert ":" in address, f"the cluster did not come up: {address!r}"
        ns = f"walk-{uuid.uuid4().hex[:6]}"
        cfg = tmp_path / "deployment.toml"
        cfg.write_text(f'f = 1\ndata_dir = "{tmp_path / "data"}"\n')
        common = ["--address", address, "--namespace", ns]

        def pmmc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "pmmc_ray", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        up = pmmc("up", *common, "--config", str(cfg))
        assert up.returncode == 0, up.stderr[-2000:]
        assert f"deployed 11 actors in namespace {ns}" in up.stdout
        assert "note: only" not in up.stdout  # 3 nodes: no warning about too few
        st = pmmc("status", *common, "--json")
        assert st.returncode == 0, st.stderr[-2000:]
        actors = json.loads(st.stdout)["actors"]
        acc_nodes = {actors[f"acceptor-{i}"]["node_id"] for i in range(3)}
        assert len(acc_nodes) == 3  # one acceptor per node
        assert pmmc("put", *common, "k", "v").returncode == 0
        got = pmmc("get", *common, "k")
        assert got.returncode == 0 and got.stdout.strip() == "v"
        lt = pmmc(
            "loadtest",
            "--address",
            address,
            "--namespace",
            ns,
            "--client",
            "native",
            "--users",
            "4",
            "--duration",
            "10",
            "--workers",
            "2",
            "--workers-via-ray",
            "--results",
            str(tmp_path / "lt"),
            timeout=600,
        )
        assert lt.returncode == 0, (lt.stdout[-3000:], lt.stderr[-2000:])
        assert "history: linearizable" in lt.stdout
        # Chaos against the same cluster (its own deployment, removed afterwards): kills
        # by ray.kill and SIGKILL (every process is on this machine) and a pause.
        chaos = pmmc(
            "chaos",
            "--address",
            address,
            "--config",
            str(cfg),
            "--seed",
            "5",  # its 30 s: a pause, kills by SIGKILL and ray.kill (4 episodes)
            "--duration",
            "30",
            "--clients",
            "2",
            "--faults",
            "kill,network,pause",
            "--json",
            "--out",
            str(tmp_path / "chaos"),
            timeout=600,
        )
        assert chaos.returncode == 0, chaos.stderr[-3000:]
        summary = json.loads(chaos.stdout)
        assert summary["ok"] and summary["cluster"]["nodes_alive"] == 3
        assert sum(c["applied"] for c in summary["faults_by_kind"].values()) >= 3
        down = pmmc("down", *common)
        assert down.returncode == 0 and f"removed deployment {ns}" in down.stdout
        assert not (tmp_path / "data" / ns).exists()
    finally:
        if driver.poll() is None:
            driver.stdin.write("stop\n")
            driver.stdin.flush()
            try:
                driver.wait(timeout=120)
            except subprocess.TimeoutExpired:
                driver.kill()
