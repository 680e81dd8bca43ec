"""The main job's workload (``pmmc-ray run``) on a real deployment: it kills the active
leader, and the report it produces must come from real, checked results."""

from __future__ import annotations

import pytest

from pmmc_ray.runtime.workload import active_leader, run_workload

pytestmark = pytest.mark.ray


def test_workload_with_leader_kill_is_linearizable_and_replicas_agree(make_deployment):
    dep = make_deployment("workload")
    # the initial election may still be running right after deploy
    assert active_leader(dep, wait_s=20.0) is not None
    # 12 s: every client opens its session first, and the leader is killed halfway
    res = run_workload(dep, clients=3, duration_s=12.0, keys=5, kill_leader=True, seed=1)
    out = res.to_dict()
    assert res.killed is not None and res.killed.startswith("leader-")
    assert res.ops_ok > 0 and out["throughput_ops_per_s"] > 0
    assert out["linearizable"] == "linearizable", out["linearizability_detail"]
    assert out["replicas_consistent"] is True
    states = {v["state_sha256"] for v in out["replica_states"].values()}
    assert len(states) == 1
    assert res.failover_s is not None and res.failover_s >= 0
    assert out["failover_s"] == round(res.longest_gap_s, 3) and res.ops_ok_after_kill > 0
    assert out["client_errors"] == []
    assert out["latency_ms"]["p50"] <= out["latency_ms"]["p99"]
    assert out["raw_ray_round_trip_ms_p50"] > 0


def test_workload_rejects_bad_parameters(make_deployment):
    dep = make_deployment("workload-bad")
    with pytest.raises(ValueError, match="clients"):
        run_workload(dep, clients=0, duration_s=1.0)
    with pytest.raises(ValueError, match="chaos_every_s"):
        run_workload(dep, clients=1, duration_s=1.0, chaos_every_s=0)


def test_chaos_workload_killing_random_actors(make_deployment):
    dep = make_deployment("workload-chaos")
    res = run_workload(
        dep, clients=3, duration_s=10.0, keys=5, kill_leader=False, chaos_every_s=2.0, seed=7
    )
    out = res.to_dict()
    assert len(res.chaos_kills) >= 3
    assert out["linearizable"] == "linearizable", out["linearizability_detail"]
    assert out["replicas_consistent"] is True, out["replica_states"]
    assert res.ops_ok > 0 and out["client_errors"] == []
