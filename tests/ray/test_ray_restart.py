"""Surviving any restart (DESIGN 4b): every replica at once, every actor at once, leaders
that lost their files, a one-replica deployment, re-attaching after the deployment was
taken down with its data kept, and a whole-cluster restart (Ray stopped and started
again on the same data directory). In each, the store serves again by itself, the
recorded history is linearizable and every acknowledged append is there exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import TEST_TIMING
from rayhelpers import delete_storage, run_disturbed_workload, status_of, wait_restarted

pytestmark = pytest.mark.ray

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("restart")


def _kill_and_wait(dep, names, before_kill=None):
    pids = {n: status_of(dep, n)["pid"] for n in names}
    if before_kill is not None:
        before_kill()
    for n in names:
        dep.kill(n, restart=True)
    for n in names:
        wait_restarted(dep, n, pids[n])


def test_every_replica_killed_at_once_under_load(dep):
    replicas = list(dep.config.replica_ids())
    run_disturbed_workload(dep, "all-replicas", lambda: _kill_and_wait(dep, replicas))
    for r in replicas:
        st = status_of(dep, r)
        assert not st["recovering"] and st["restarts"] >= 1


def test_every_actor_killed_at_once_under_load(dep):
    names = dep.names()
    run_disturbed_workload(dep, "everyone", lambda: _kill_and_wait(dep, names))
    assert all(status_of(dep, n)["restarts"] >= 1 for n in names)


def test_both_leaders_lose_their_files_under_load(dep):
    """What losing the leaders' nodes with their disks does: both come back with fresh
    ballot identities and lead again (they used to refuse for good)."""
    leaders = list(dep.config.leader_ids())
    before = {n: status_of(dep, n) for n in leaders}

    def lose_files():
        for st in before.values():
            delete_storage(Path(st["storage"]))

    run_disturbed_workload(dep, "leaders-disks", lambda: _kill_and_wait(dep, leaders, lose_files))
    for n in leaders:
        st = status_of(dep, n)
        assert "refusing" not in st and st["storage_lost_at_start"] is True
        assert st["identity"] != before[n]["identity"]


def test_a_one_replica_deployment_survives_its_replica_restarting(make_deployment):
    one = make_deployment("single", f=0)
    kv = one.client(timeout_s=30)
    kv.put("k", "v")
    kv.append("k", "w")
    _kill_and_wait(one, ["replica-0"])
    assert kv.get("k") == "vw"
    kv.append("k", "x")
    assert kv.get("k") == "vwx"


def test_taken_down_with_data_kept_then_redeployed_reattaches(ray_session, data_dir):
    from pmmc_ray.runtime import DataDirError, deploy

    cfg = {"namespace": f"t-keep-{uuid.uuid4().hex[:6]}", "data_dir": data_dir, **TEST_TIMING}
    first = deploy(cfg)
    kv = first.client(timeout_s=30)
    for i in range(5):
        kv.append("log", f"[{i}]")
    dep_id = first.config.deployment_id
    first.shutdown(delete_data=False)  # pmmc-ray down --keep-data
    with pytest.raises(
        DataDirError, match="another shape: replicas: data has 2, config asks for 3"
    ):
        deploy({**cfg, "f": 2})
    again = deploy({**cfg, "retry": 60})  # timing may change
    try:
        assert again.reattached and again.config.deployment_id == dep_id
        assert any("re-attached" in n for n in again.notes)
        kv = again.client(timeout_s=30)
        assert kv.get("log") == "[0][1][2][3][4]"
        kv.append("log", "[5]")
        assert kv.get("log") == "[0][1][2][3][4][5]"
    finally:
        again.shutdown(delete_data=True)
    assert not (Path(data_dir) / cfg["namespace"]).exists()


def _driver(phase: str, cfg: dict, out: Path, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "restart_driver.py"), phase, json.dumps(cfg), str(out)],
        env=env,
        text=True,
        **kw,
    )


def test_whole_cluster_restart_reattaches_and_loses_nothing(ray_session, data_dir, tmp_path):
    """Ray stopped and started again (a laptop's ``ray stop``/``ray start``, or ``ray down``
    and ``ray up`` with the same disks): deploying the same namespace onto the same data
    directory re-attaches, and every acknowledged write is there. While the first
    cluster lives, another Ray cluster on this host deploying the same namespace onto
    the same directory is refused and changes nothing."""
    from pmmc_ray.check.history import Operation
    from pmmc_ray.check.linearizability import KV_MODEL, check
    from pmmc_ray.runtime import DataDirError, deploy

    cfg = {"namespace": f"t-cluster-{uuid.uuid4().hex[:6]}", "data_dir": data_dir, **TEST_TIMING}
    first = _driver(
        "write", cfg, tmp_path / "write.json", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        line = first.stdout.readline()
        assert line.strip() == "READY", f"the first cluster did not come up: {line!r}"
        # This test session's Ray is a second cluster on the same host.
        with pytest.raises(DataDirError, match="in use by live processes"):
            deploy(cfg)
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    written = json.loads((tmp_path / "write.json").read_text())
    assert written["reattached"] is False

    second = _driver("reattach", cfg, tmp_path / "reattach.json")
    assert second.wait(timeout=300) == 0
    back = json.loads((tmp_path / "reattach.json").read_text())
    assert back["reattached"] is True and back["deployment_id"] == written["deployment_id"]
    assert back["log_before"] == written["log_after"] == "".join(written["acked"])
    final = back["log_after"]
    for token in written["acked"] + back["acked"]:
        assert final.count(token) == 1, token
    ops = [
        Operation(o["client"], o["call"], o["return"], tuple(o["op"]), o["result"])
        for o in written["ops"] + back["ops"]
    ]
    assert check(ops, KV_MODEL, timeout=60).verdict == "linearizable"
    assert not (Path(data_dir) / cfg["namespace"]).exists()  # the second run deleted it
