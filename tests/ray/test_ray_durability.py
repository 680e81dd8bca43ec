"""Durable state across real actor restarts (DESIGN 4): acceptors, leaders, replicas,
lost storage, and storage that belongs to someone else."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rayhelpers import active_leader, delete_storage, status_of, wait_restarted

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("durable")


@pytest.fixture(scope="module")
def client(dep):
    return dep.client(timeout_s=30)


def test_acceptor_state_survives_restart(dep, client):
    for i in range(5):
        client.put(f"k{i}", str(i))
    before = status_of(dep, "acceptor-0")
    assert before["epochs"]["0"]["accepted"] >= 1
    dep.kill("acceptor-0", restart=True)
    after = wait_restarted(dep, "acceptor-0", before["pid"])
    assert after["restarts"] >= 1
    assert after["ballot_num"] == before["ballot_num"]
    # Garbage collection may move on meanwhile (paper 4.2): the mark only grows, and
    # what is kept is what was accepted above it.
    b, a = before["epochs"]["0"], after["epochs"]["0"]
    assert a["ballot_num"] == b["ballot_num"]
    assert a["collected_below"] >= b["collected_below"]
    assert a["accepted"] <= b["accepted"] or a["collected_below"] == b["collected_below"]
    assert "refusing" not in after
    assert client.get("k4") == "4"


def test_restarted_leader_never_reuses_a_ballot(dep, client):
    lid = active_leader(dep)
    before = status_of(dep, lid)
    old_round = before["epochs"]["0"]["ballot"][0]
    assert before["max_round"] >= old_round
    dep.kill(lid, restart=True)
    after = wait_restarted(dep, lid, before["pid"])
    # It remembers every round it used; its next ballot is above all of them.
    assert after["max_round"] >= before["max_round"]
    assert after["epochs"]["0"]["ballot"][0] > before["max_round"]
    assert after["identity"] == before["identity"] == after["epochs"]["0"]["ballot"][1]
    assert after["identity"].startswith(f"{lid}/")
    client.put("after-leader-restart", "ok")
    assert client.get("after-leader-restart") == "ok"
    # Normally it found the other leader leading and watches it. Kill that one: the
    # restarted leader must scout again, with a round it has never used.
    other = active_leader(dep)
    if other != lid:  # (else it scouted already: nobody led when it came back)
        dep.kill(other, restart=True)
    client.put("after-second-kill", "ok")
    deadline = time.monotonic() + 30
    while (now := status_of(dep, lid))["max_round"] <= before["max_round"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    assert now["max_round"] > old_round
    assert client.get("after-second-kill") == "ok"


def test_a_replica_restarted_with_its_disk_recovers_alone(dep, client):
    """Both replicas restarted at once: each rebuilds its state from its own disk (no
    peer has state to give), and the store serves again by itself."""
    client.append("both-replicas", "[1]")
    before = {r: status_of(dep, r) for r in dep.config.replica_ids()}
    for r in before:
        dep.kill(r, restart=True)
    for r, st in before.items():
        after = wait_restarted(dep, r, st["pid"])
        assert not after["recovering"] and after["slot_out"] >= st["slot_out"]
    client.append("both-replicas", "[2]")
    assert client.get("both-replicas") == "[1][2]"


def test_acceptor_with_lost_storage_refuses(dep, client):
    name = "acceptor-2"
    before = status_of(dep, name)
    delete_storage(Path(before["storage"]))
    dep.kill(name, restart=True)
    after = wait_restarted(dep, name, before["pid"])
    assert after["refusing"] == (
        "storage lost: replace this acceptor by reconfiguration (it must never vote again): "
        f"pmmc-ray replace {name} --namespace {dep.namespace}"
    )
    assert after["storage_lost_at_start"] is True
    assert "epochs" not in after  # it holds no protocol state at all
    from pmmc_ray.ray_cli import action_lines

    assert (
        f"ACTION: {name} lost its storage and will never vote again; replace it: "
        f"pmmc-ray replace {name} --namespace {dep.namespace}"
    ) in action_lines(dep.status())
    # A majority (acceptor-0, acceptor-1) is still there: the service goes on.
    client.put("after-refusal", "ok")
    assert client.get("after-refusal") == "ok"
    assert status_of(dep, name)["steps"] == 0  # it took part in nothing


def test_leader_with_lost_storage_leads_again_under_a_fresh_identity(dep, client):
    # Without its records a leader cannot know which rounds it used: it takes a fresh
    # ballot identity, so none of its ballots can equal an old one, and takes part again.
    lid = active_leader(dep)
    other = next(x for x in dep.config.leader_ids() if x != lid)
    before = status_of(dep, lid)
    delete_storage(Path(before["storage"]))
    dep.kill(lid, restart=True)
    after = wait_restarted(dep, lid, before["pid"])
    assert "refusing" not in after and after["storage_lost_at_start"] is True
    assert after["identity"] != before["identity"] and after["identity"].startswith(f"{lid}/")
    client.put("after-leader-lost-storage", "ok")
    # make the renewed leader the only one: it must be able to lead
    old = status_of(dep, other)
    dep.kill(other, restart=True)
    wait_restarted(dep, other, old["pid"])
    assert client.get("after-leader-lost-storage") == "ok"
    client.put("led-by-a-fresh-identity", "ok")
    assert client.get("led-by-a-fresh-identity") == "ok"


def test_acceptor_finding_another_deployments_file_after_restart_refuses(dep, client):
    """A leftover file of a dead deployment must never be loaded as our own state."""
    from pmmc_ray.runtime.storage import RecordLog

    name = "acceptor-1"
    before = status_of(dep, name)
    path = Path(before["storage"])
    delete_storage(path)
    RecordLog.create(path, "0" * 32).close()  # a valid log, owned by someone else
    dep.kill(name, restart=True)
    after = wait_restarted(dep, name, before["pid"])
    assert after["refusing"].startswith(f"storage {path} belongs to deployment {'0' * 32}")
    assert RecordLog.owner(path) == "0" * 32  # never overwritten


def test_a_data_dir_of_another_kind_is_refused_and_left_alone(make_deployment, data_dir):
    from pmmc_ray.core import Ballot
    from pmmc_ray.core.messages import AcceptorPromise
    from pmmc_ray.runtime import DataDirError
    from pmmc_ray.runtime.storage import RecordLog, storage_path

    ns = "t-stale-file"
    path = storage_path(Path(data_dir) / ns, "acceptor-0")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = RecordLog.create(path, "1" * 32)
    old.append([AcceptorPromise(0, Ballot(99, "leader-1"))])
    old.close()
    # files but no manifest: another deployment's (or an older format's) data
    with pytest.raises(DataDirError, match="holds files but no 't-stale-file' deployment"):
        make_deployment("stale", namespace=ns)
    assert RecordLog.owner(path) == "1" * 32  # nothing was changed
    # starting over is explicit
    fresh = make_deployment("stale", namespace=ns, fresh=True)
    st = status_of(fresh, "acceptor-0")
    assert "refusing" not in st
    assert st["ballot_num"].get("0", [-1])[0] != 99  # the old promise is gone
    fresh.client().put("k", "v")
    assert fresh.client().get("k") == "v"
