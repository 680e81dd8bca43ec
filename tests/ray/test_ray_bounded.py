"""Bounded state on real Ray (DESIGN 4b): failover does not carry the history, a replica
that lost its disk gets the state once, and a leader whose commander is cut off from
the acceptors gives way to the other leader."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rayhelpers import active_leader, delete_storage, status_of, wait_restarted

pytestmark = pytest.mark.ray

BIG = 400_000  # bytes per value
CHUNK = 256 << 10  # state transfer chunk: the 1.6 MB state moves in 7 chunks


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("bounded", snapshot_every=5, state_chunk=CHUNK)


def _reset_stats(dep):
    import ray

    ray.get([dep.handle(n).reset_payload_stats.remote() for n in dep.names()])


def _failover(dep, kv, tag):
    """Kill the active leader; return (seconds to the next committed write, the largest
    p1b an acceptor sent meanwhile)."""
    lid = active_leader(dep)
    _reset_stats(dep)
    old = status_of(dep, lid)["pid"]
    t0 = time.monotonic()
    dep.kill(lid, restart=True)
    kv.put("probe", tag)
    took = time.monotonic() - t0
    wait_restarted(dep, lid, old)
    p1b = max(
        status_of(dep, a)["max_payload_bytes"].get("P1b", 0) for a in dep.config.acceptor_ids()
    )
    return took, p1b


def test_failover_does_not_carry_the_history(dep):
    kv = dep.client(timeout_s=60)
    kv.put("probe", "warm")
    # The first failover of a deployment is faster than the later ones (0.8 s against
    # 1.6 s here, with or without history): compare a later one with a later one.
    first_s, _ = _failover(dep, kv, "first")
    time.sleep(2)
    empty_s, empty_p1b = _failover(dep, kv, "empty")
    for i in range(80):  # 32 MB of history over 4 keys (1.6 MB of state)
        kv.put(f"big{i % 4}", f"{i}:" + "x" * BIG)
    history = 80 * BIG
    # garbage collection reaches the acceptors within a few ticks
    deadline = time.monotonic() + 30
    while min(status_of(dep, a)["epochs"]["0"]["accepted"] for a in dep.config.acceptor_ids()) > 2:
        assert time.monotonic() < deadline, "acceptors never collected the history"
        time.sleep(0.2)
    full_s, full_p1b = _failover(dep, kv, "full")
    print(
        f"failover: first {first_s:.2f}s; empty {empty_s:.2f}s (p1b {empty_p1b} B), after "
        f"{history} B of history "
        f"{full_s:.2f}s (p1b {full_p1b} B)"
    )
    # The largest phase-1 reply is bounded by what is not yet collected (a few values
    # at most), not by the 32 MB of history. (Measured on both transports: a failover
    # always sends phase-1 replies, so 0 would mean they were not counted.)
    assert 0 < full_p1b < 3 * BIG and empty_p1b > 0
    for a in dep.config.acceptor_ids():
        st = status_of(dep, a)
        assert st["epochs"]["0"]["collected_below"] > 80
        # compacted: live pvalues, at most COMPACT_SLACK dead ones and what the write-ahead
        # log holds since the last compaction; not the history
        assert st["storage_bytes"] < history / 3


def test_a_replica_without_its_disk_gets_the_state_once(dep):
    kv = dep.client(timeout_s=60)
    kv.put("before-disk-loss", "ok")
    state = sum(len(kv.get(f"big{i}") or "") for i in range(4))
    assert state > 3 * BIG
    name, peer = "replica-1", "replica-0"
    before = status_of(dep, name)
    _reset_stats(dep)
    delete_storage(Path(before["storage"]))
    dep.kill(name, restart=True)
    wait_restarted(dep, name, before["pid"])
    deadline = time.monotonic() + 60
    while status_of(dep, name)["recovering"]:
        assert time.monotonic() < deadline, f"{name} never got the state"
        time.sleep(0.2)
    sent = status_of(dep, peer)["payload_bytes"].get("StateChunk", 0)
    print(f"state {state} B; the peer sent {sent} B of StateChunk")
    # Once, in chunks: on a busy machine a chunk the receiver waited 3 ticks for is
    # asked again (and may then come twice), so allow a few chunks more; two full copies
    # (the answer to a re-sent StateRequest) would fail.
    assert state <= sent <= state + 3 * CHUNK < 2 * state
    assert kv.get("before-disk-loss") == "ok"


def test_a_leader_whose_commander_is_cut_off_gives_way(dep):
    kv = dep.client(timeout_s=60)
    lid = active_leader(dep)
    other = next(x for x in dep.config.leader_ids() if x != lid)
    commander = "commander-" + lid.removeprefix("leader-")
    cut = [[commander, a] for a in dep.config.acceptor_ids()]
    dep.set_faults(blocked=cut)
    try:
        t0 = time.monotonic()
        kv.put("during-cut", "ok")  # served once the other leader leads
        deadline = time.monotonic() + 60
        while not status_of(dep, other)["epochs"]["0"]["active"]:
            assert time.monotonic() < deadline, f"{other} never took over from {lid}"
            time.sleep(0.1)
        print(
            f"{other} took over from {lid} ({commander} cut off) after {time.monotonic() - t0:.2f}s"
        )
        assert kv.get("during-cut") == "ok"
        assert not status_of(dep, lid)["epochs"]["0"]["active"]
    finally:
        dep.set_faults()


def test_a_paused_commander_does_not_stall_the_store(dep):
    """SIGSTOP (a slow or paused member, not a dead one): the active leader keeps
    answering pings, but nothing it runs gets decided; it steps aside, the other
    leader takes over, and writes go on. SIGCONT afterwards."""
    import os
    import signal

    kv = dep.client(timeout_s=60)
    lid = active_leader(dep)
    other = next(x for x in dep.config.leader_ids() if x != lid)
    commander = "commander-" + lid.removeprefix("leader-")
    pid = status_of(dep, commander)["pid"]
    os.kill(pid, signal.SIGSTOP)  # an actor process of this test session's Ray
    try:
        t0 = time.monotonic()
        kv.put("during-pause", "ok")
        print(f"wrote with {commander} paused after {time.monotonic() - t0:.2f}s")
        assert status_of(dep, other)["epochs"]["0"]["active"]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert kv.get("during-pause") == "ok"


def test_replica_logs_checkpoint_by_bytes_too(make_deployment):
    """snapshot_every counts slots; with big values the runtime also asks for a
    checkpoint once the log since the last one outgrows it (and 4 MiB)."""
    dep = make_deployment("ckpt-bytes", snapshot_every=1_000_000)
    kv = dep.client(timeout_s=60)
    value = "y" * 600_000
    for i in range(40):  # 24 MB of history over 2 keys (1.2 MB of state)
        kv.put(f"v{i % 2}", f"{i}:{value}")
    for r in dep.config.replica_ids():
        st = status_of(dep, r)
        print(f"{r}: log {st['storage_bytes']} B after 24 MB of writes")
        # the checkpoint, and (in the database or its write-ahead log) at most about
        # twice the 4 MiB trigger of records since: not the history
        assert st["storage_bytes"] < 11_000_000 < 24_000_000 / 2
