"""Kill each role in the middle of a concurrent workload; the history stays linearizable.

Several client threads run a mix of KV operations while one actor is killed with
``ray.kill(..., no_restart=False)``; Ray restarts it. The recorded history is checked
with the linearizability checker, and every acknowledged append must be in the final
value exactly once (unacknowledged ones at most once).
"""

from __future__ import annotations

import time

import pytest
from rayhelpers import active_leader, run_disturbed_workload, status_of, wait_restarted

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("chaos")


def _victim(dep, role):
    if role == "replica":
        return "replica-0"
    if role == "acceptor":
        return "acceptor-1"
    lid = active_leader(dep)
    return {"leader": lid, "scout": "scout-" + lid[7:], "commander": "commander-" + lid[7:]}[role]


@pytest.mark.parametrize("role", ["replica", "leader", "acceptor", "scout", "commander"])
def test_kill_during_workload_is_linearizable(dep, role):
    victim = _victim(dep, role)

    def kill_and_wait():
        old_pid = status_of(dep, victim)["pid"]
        dep.kill(victim, restart=True)
        wait_restarted(dep, victim, old_pid)

    run_disturbed_workload(dep, role, kill_and_wait)
    after = status_of(dep, victim)
    assert after["restarts"] >= 1 and "refusing" not in after


def test_lossy_network_and_partitioned_leader_is_linearizable(dep):
    lid = active_leader(dep)
    others = [n for n in dep.names() if n != lid]
    # Cut the active leader off in both directions: the other leader must take over.
    blocked = [[lid, n] for n in others] + [[n, lid] for n in others]

    def faults_on():
        res = dep.set_faults(drop=0.05, delay_ms=20, duplicate=0.05, blocked=blocked)
        assert all(r.get("drop") == 0.05 for r in res.values()), res
        # The cut-off leader still believes it leads; the other one must take over.
        other = next(x for x in dep.config.leader_ids() if x != lid)
        deadline = time.monotonic() + 20
        while not status_of(dep, other)["epochs"]["0"]["active"]:
            assert time.monotonic() < deadline, f"{other} never took over from {lid}"
            time.sleep(0.1)

    try:
        run_disturbed_workload(dep, "faults", faults_on)
    finally:
        res = dep.set_faults()
    assert all(
        r == {"drop": 0.0, "delay_ms": 0, "duplicate": 0.0, "blocked": []} for r in res.values()
    )
    st = dep.status()["actors"]
    assert sum(s["dropped_messages"] for s in st.values()) > 0
