"""Client operations against a real deployment, bad input, and connect()."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from pmmc_ray.app import InvalidOperation
from pmmc_ray.app.kv import MAX_KEY_BYTES

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("client")


@pytest.fixture(scope="module")
def client(dep):
    return dep.client(timeout_s=30)


def test_every_kv_operation(client):
    assert client.get("k") is None  # missing key
    assert client.put("k", "v1") is None
    assert client.get("k") == "v1"
    client.append("k", "+2")
    assert client.get("k") == "v1+2"
    assert client.cas("k", "wrong", "x") is False
    assert client.get("k") == "v1+2"
    assert client.cas("k", "v1+2", "v3") is True
    assert client.get("k") == "v3"
    client.delete("k")
    assert client.get("k") is None
    assert client.cas("k", None, "created") is True  # None means absent
    assert client.get("k") == "created"
    client.append("fresh", "a")  # append to a missing key starts from ""
    assert client.get("fresh") == "a"
    assert client.execute(("get", "fresh")) == "a"


@pytest.mark.parametrize(
    "op",
    [
        ("put", "bad", 1),  # value must be a str
        ("put", 5, "v"),  # key must be a str
        ("frobnicate", "bad"),  # unknown op
        ("get",),  # wrong arity
        ["put", "bad", "v"],  # not a tuple
        ("put", "k" * (MAX_KEY_BYTES + 1), "v"),  # oversize key
    ],
)
def test_bad_input_is_rejected_and_changes_nothing(dep, client, op):
    before = _settled_slot_out(dep)
    with pytest.raises(InvalidOperation):
        client.execute(op)
    assert client.get("bad") is None
    # Nothing was proposed for the bad operation: only the get above took a slot.
    assert _settled_slot_out(dep) == before + 1


def _settled_slot_out(dep):
    """slot_out once every replica has applied the same decisions."""
    import time

    deadline = time.monotonic() + 10
    while True:
        outs = {dep.status()["actors"][r]["slot_out"] for r in dep.config.replica_ids()}
        if len(outs) == 1:
            return outs.pop()
        assert time.monotonic() < deadline, f"replicas do not converge: {outs}"
        time.sleep(0.05)


def test_client_helpers_validate_types(client):
    with pytest.raises(InvalidOperation):
        client.put("k2", None)
    with pytest.raises(InvalidOperation):
        client.cas("k2", 3, "x")
    assert client.get("k2") is None


def test_async_client(dep):
    async def run():
        c = dep.async_client(timeout_s=30)
        await c.put("async", "1")
        await c.append("async", "2")
        return await c.get("async"), await c.cas("async", "12", "3"), await c.get("async")

    assert asyncio.run(run()) == ("12", True, "3")


def test_status_reports_every_actor(dep):
    st = dep.status()
    assert set(st["actors"]) == set(dep.names())
    roles = sorted(s["role"] for s in st["actors"].values())
    assert roles == sorted(["acceptor"] * 3 + ["replica", "leader", "scout", "commander"] * 2)
    r0 = st["actors"]["replica-0"]
    assert r0["recovering"] is False and r0["configs"][0]["epoch"] == 0
    assert all(s["restarts"] == 0 for s in st["actors"].values())


def test_connect_from_the_same_process(dep):
    from pmmc_ray.runtime import connect

    other = connect(dep.namespace)
    assert other.config == dep.config
    c = other.client(timeout_s=30)
    c.put("via-connect", "yes")
    assert dep.client(timeout_s=30).get("via-connect") == "yes"


def test_connect_unknown_namespace_fails(ray_session):
    from pmmc_ray.runtime import NotDeployedError, connect

    with pytest.raises(NotDeployedError):
        connect("no-such-deployment")


def test_connect_from_another_driver(dep, client, ray_session):
    client.put("shared", "from-first-driver")
    address = ray_session.get_runtime_context().gcs_address
    script = textwrap.dedent(
        f"""
        import ray
        from pmmc_ray.runtime import connect
        ray.init(address={address!r}, log_to_driver=False)
        dep = connect({dep.namespace!r})
        print("VALUE=" + str(dep.client(timeout_s=30).get("shared")))
        ray.shutdown()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert "VALUE=from-first-driver" in out.stdout, out.stderr[-2000:]


def test_deploying_a_live_namespace_again_fails(dep):
    from pmmc_ray.runtime import AlreadyDeployedError, deploy

    with pytest.raises(AlreadyDeployedError, match="already deployed"):
        deploy(dep.config)


def test_shutdown_removes_actors_config_and_data(ray_session, data_dir):
    import time
    from pathlib import Path

    from pmmc_ray.runtime import NotDeployedError, connect, deploy

    dep = deploy({"namespace": "t-shutdown", "f": 0, "data_dir": data_dir})
    try:
        assert dep.client(timeout_s=30).cas("k", None, "v") is True
        storage = Path(dep.config.storage_dir())
        assert (storage / "acceptor-0.sqlite").exists()
        dep.kill("scout-0", restart=False)
        deadline = time.monotonic() + 30
        while dep.status()["actors"]["scout-0"].get("state") not in ("dead", "missing"):
            assert time.monotonic() < deadline, "a killed actor is still reported alive"
            time.sleep(0.2)
    finally:
        dep.shutdown(delete_data=True)
    assert not storage.exists()
    names = [
        a["name"]
        for a in ray_session.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "t-shutdown"
    ]
    deadline = time.monotonic() + 30
    while names and time.monotonic() < deadline:  # ray.kill is asynchronous
        time.sleep(0.2)
        names = [
            a["name"]
            for a in ray_session.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "t-shutdown"
        ]
    assert names == []
    with pytest.raises(NotDeployedError):
        connect("t-shutdown")


def test_retry_after_an_unknown_outcome_performs_the_command_once(dep):
    """Nothing can be decided (replicas cannot reach the leaders): the append's outcome
    is unknown. Once the network heals, retry() sends the same command again: it is
    performed exactly once, however many copies of it were decided."""
    from pmmc_ray.runtime import OutcomeUnknownError

    kv = dep.client(timeout_s=2.0, attempt_timeout_s=0.5)
    kv.put("once", "")
    cut = [[r, ldr] for r in dep.config.replica_ids() for ldr in dep.config.leader_ids()]
    dep.set_faults(blocked=cut)
    try:
        with pytest.raises(OutcomeUnknownError, match="retry"):
            kv.append("once", "[x]")
    finally:
        dep.set_faults()
    assert kv.retry() is None
    assert kv.get("once") == "[x]"
    with pytest.raises(RuntimeError, match="nothing to retry"):
        kv.retry()


def test_an_evicted_session_is_refused_and_the_client_continues(make_deployment):
    from pmmc_ray.runtime import SessionExpiredError

    small = make_deployment("sessions", max_sessions=2)
    a, b, c = (small.client(timeout_s=30) for _ in range(3))
    a.put("k", "a")
    b.put("k", "b")
    c.put("k", "c")  # three sessions, room for two: a's is the least recently used
    old = a.client_id
    with pytest.raises(SessionExpiredError, match="may or may not have been applied"):
        a.put("k", "a2")
    assert a.client_id != old  # a new session from now on
    assert a.get("k") == "c"  # the refused put changed nothing
    a.put("k", "a3")
    assert c.get("k") == "a3"
    # a's new session evicted the least recently used one, b's
    with pytest.raises(SessionExpiredError):
        b.get("k")
    assert b.get("k") == "a3"  # under its own new session
