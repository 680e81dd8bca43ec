"""Reconfiguration on a live Ray deployment: replace members through the log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rayhelpers import delete_storage, status_of, wait_restarted

pytestmark = pytest.mark.ray


def test_replace_a_refusing_acceptor_then_survive_another_failure(make_deployment):
    dep = make_deployment("reconfig", window=2)
    kv = dep.client(timeout_s=30)
    kv.put("a", "1")
    # acceptor-2 loses its disk and comes back refusing: one more failure would stop us.
    before = status_of(dep, "acceptor-2")
    delete_storage(Path(before["storage"]))
    dep.kill("acceptor-2", restart=True)
    assert wait_restarted(dep, "acceptor-2", before["pid"])["refusing"].startswith("storage lost")

    new = dep.replace("acceptor-2")
    assert new == "acceptor-3"
    for i in range(6):  # move past the WINDOW slots still governed by the old configuration
        kv.append("a", str(i))
    cfg = dep.configurations()[-1]
    assert cfg["epoch"] == 1 and cfg["acceptors"] == ["acceptor-0", "acceptor-1", "acceptor-3"]
    # A majority (acceptor-0 and -1) decides without it, so its votes may still be on
    # their way when the appends return: wait for them.
    deadline = time.monotonic() + 15
    while status_of(dep, new)["epochs"].get("1", {}).get("accepted", 0) == 0:
        assert time.monotonic() < deadline, status_of(dep, new)
        time.sleep(0.1)

    # acceptor-2 stays out; now lose acceptor-0 as well: acceptor-1 and acceptor-3 decide.
    dep.kill("acceptor-0", restart=False)
    kv.append("a", "!")
    assert kv.get("a") == "1012345!"


def test_replace_a_replica_and_a_leader(make_deployment):
    dep = make_deployment("reconfig-rl", window=2)
    kv = dep.client(timeout_s=30)
    for i in range(5):
        kv.put(f"k{i}", str(i))
    new_replica = dep.replace("replica-0")
    new_leader = dep.replace("leader-0")
    assert (new_replica, new_leader) == ("replica-2", "leader-2")
    for i in range(6):
        kv.put("x", str(i))
    cfg = dep.configurations()[-1]
    assert cfg["replicas"] == ["replica-2", "replica-1"] and cfg["leaders"] == [
        "leader-2",
        "leader-1",
    ]
    # the new replica recovered the state by transfer and serves it
    st = status_of(dep, new_replica)
    assert not st["recovering"]
    fresh = dep.client(timeout_s=30)
    assert fresh._replicas == ["replica-2", "replica-1"]
    assert fresh.get("k3") == "3" and fresh.get("x") == "5"


def test_bad_reconfiguration_is_rejected_before_anything_changes(make_deployment):
    dep = make_deployment("reconfig-bad")
    with pytest.raises(ValueError, match="'leader-9' is not a valid acceptor name"):
        dep.reconfigure(acceptors=["acceptor-0", "leader-9"])
    with pytest.raises(ValueError, match="distinct"):
        dep.reconfigure(replicas=["replica-0", "replica-0"])
    with pytest.raises(ValueError, match="not a replica of the current"):
        dep.replace("replica-7")
    assert dep.configurations()[-1]["epoch"] == 0
