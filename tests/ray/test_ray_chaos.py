"""Kill each role in the middle of a concurrent workload; the history stays linearizable.

Several client threads run a mix of KV operations while one actor is killed with
``ray.kill(..., no_restart=False)``; Ray restarts it. The recorded history is checked
with the linearizability checker, and every acknowledged append must be in the final
value exactly once (unacknowledged ones at most once).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from rayhelpers import active_leader, status_of, wait_restarted

from pmmc_ray.check.linearizability import KV_MODEL, check
from pmmc_ray.runtime import HistoryRecorder, OutcomeUnknownError

pytestmark = pytest.mark.ray

CLIENTS = 3


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("chaos")


def _worker(dep, recorder, prefix, idx, stop, acked, rng):
    c = dep.client(timeout_s=15, attempt_timeout_s=1.0, recorder=recorder)
    log_key = f"{prefix}-log"
    regs = [f"{prefix}-r{i}" for i in range(2)]
    n = 0
    while not stop.is_set():
        n += 1
        token = f"[{idx}.{n}]"
        kind = rng.choice(["append", "append", "get", "put", "cas", "getlog"])
        try:
            if kind == "append":
                c.append(log_key, token)
                acked.append(token)
            elif kind == "getlog":
                c.get(log_key)
            elif kind == "get":
                c.get(rng.choice(regs))
            elif kind == "put":
                c.put(rng.choice(regs), token)
            else:
                k = rng.choice(regs)
                c.cas(k, rng.choice([None, f"[{idx}.{n - 1}]"]), token)
        except OutcomeUnknownError:
            pass  # recorded with an unknown outcome; keep going


def _victim(dep, role):
    if role == "replica":
        return "replica-0"
    if role == "acceptor":
        return "acceptor-1"
    lid = active_leader(dep)
    return {"leader": lid, "scout": "scout-" + lid[7:], "commander": "commander-" + lid[7:]}[role]


def _run_workload(dep, prefix, disturb):
    """Run CLIENTS client threads, call ``disturb()`` after 1.5 s, check the history."""
    recorder = HistoryRecorder()
    stop = threading.Event()
    acked: list[str] = []
    threads = [
        threading.Thread(
            target=_worker,
            args=(dep, recorder, prefix, i, stop, acked, random.Random(i)),
            daemon=True,
        )
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    disturb()
    time.sleep(2.0)  # keep going after the disturbance
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    ops = recorder.operations()
    done = [o for o in ops if o.ret is not None]
    assert len(done) >= 10, f"too few operations completed: {len(done)} of {len(ops)}"

    reader = dep.client(timeout_s=30, recorder=recorder)
    final = reader.get(f"{prefix}-log") or ""
    for token in acked:
        assert final.count(token) == 1, f"acknowledged {token} appears {final.count(token)}x"
    pieces = final.replace("][", "]\n[").split("\n") if final else []
    assert len(pieces) == len(set(pieces)), "an append was applied twice"

    print(f"{prefix}: {len(ops)} ops, {len(ops) - len(done)} unknown, {len(acked)} acked appends")
    result = check(recorder.operations(), KV_MODEL, timeout=60)
    assert result.verdict == "linearizable", str(result)


@pytest.mark.parametrize("role", ["replica", "leader", "acceptor", "scout", "commander"])
def test_kill_during_workload_is_linearizable(dep, role):
    victim = _victim(dep, role)

    def kill_and_wait():
        old_pid = status_of(dep, victim)["pid"]
        dep.kill(victim, restart=True)
        wait_restarted(dep, victim, old_pid)

    _run_workload(dep, role, kill_and_wait)
    after = status_of(dep, victim)
    assert after["restarts"] >= 1 and "failed" not in after


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
        _run_workload(dep, "faults", faults_on)
    finally:
        res = dep.set_faults()
    assert all(
        r == {"drop": 0.0, "delay_ms": 0, "duplicate": 0.0, "blocked": []} for r in res.values()
    )
    st = dep.status()["actors"]
    assert sum(s["dropped_messages"] for s in st.values()) > 0
