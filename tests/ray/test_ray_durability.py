"""Durable state across real actor restarts (DESIGN 4): acceptors, leaders, lost storage."""

from __future__ import annotations

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
    assert after["epochs"] == before["epochs"]
    assert "refusing" not in after
    assert client.get("k4") == "4"


def test_restarted_leader_never_reuses_a_ballot(dep, client):
    lid = active_leader(dep)
    before = status_of(dep, lid)
    old_round = before["epochs"]["0"]["ballot"][0]
    assert before["max_round"] >= old_round
    dep.kill(lid, restart=True)
    after = wait_restarted(dep, lid, before["pid"])
    # It starts scouting at once, with a round above every round it ever used.
    assert after["max_round"] > before["max_round"]
    assert after["epochs"]["0"]["ballot"][0] > old_round
    assert after["epochs"]["0"]["ballot"][1] == lid
    client.put("after-leader-restart", "ok")
    assert client.get("after-leader-restart") == "ok"


def test_acceptor_with_lost_storage_refuses(dep, client):
    name = "acceptor-2"
    before = status_of(dep, name)
    delete_storage(Path(before["storage"]))
    dep.kill(name, restart=True)
    after = wait_restarted(dep, name, before["pid"])
    assert after["refusing"] == "storage lost: replace this acceptor by reconfiguration"
    assert "epochs" not in after  # it holds no protocol state at all
    # A majority (acceptor-0, acceptor-1) is still there: the service goes on.
    client.put("after-refusal", "ok")
    assert client.get("after-refusal") == "ok"
    assert status_of(dep, name)["steps"] == 0  # it took part in nothing


def test_leader_with_lost_storage_refuses(dep, client):
    # Without its records a leader cannot know which rounds it used, so it must not lead.
    lid = next(x for x in dep.config.leader_ids() if x != active_leader(dep))
    before = status_of(dep, lid)
    delete_storage(Path(before["storage"]))
    dep.kill(lid, restart=True)
    after = wait_restarted(dep, lid, before["pid"])
    assert after["refusing"].startswith("storage lost")
    assert "epochs" not in after
    client.put("after-leader-refusal", "ok")
    assert client.get("after-leader-refusal") == "ok"


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
    assert after["refusing"].startswith("storage lost")


def test_stale_file_of_a_dead_deployment_is_replaced_on_first_start(make_deployment, data_dir):
    from pmmc_ray.core import Ballot
    from pmmc_ray.core.messages import AcceptorPromise
    from pmmc_ray.runtime.storage import RecordLog, storage_path

    ns = "t-stale-file"
    path = storage_path(Path(data_dir) / ns, "acceptor-0")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = RecordLog.create(path, "1" * 32)
    old.append([AcceptorPromise(0, Ballot(99, "leader-1"))])
    old.close()
    fresh = make_deployment("stale", namespace=ns)
    st = status_of(fresh, "acceptor-0")
    assert "refusing" not in st
    assert st["ballot_num"].get("0", [-1])[0] != 99  # the old promise was not loaded
    fresh.client().put("k", "v")
    assert fresh.client().get("k") == "v"
