"""The gateway's client pool with fake replica handles (no Ray): what each client
outcome becomes for the HTTP layer, which clients go back to the pool, and the probe's
handle cache (lookups off the event loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fake_replicas import FakeReplica, expired, is_open, performs, silent_on
from ray.exceptions import ActorDiedError

from pmmc_ray.core.messages import Response
from pmmc_ray.gateway.http import OutcomeUnknown, Rejected, Unavailable
from pmmc_ray.gateway.pool import ClientPool
from pmmc_ray.runtime import DeploymentConfig

CONFIG = DeploymentConfig(namespace="t-pool", f=1)
REPLICAS = list(CONFIG.replica_ids())


class FakeDeployment:
    config = CONFIG
    members: list[str] = []  # no reconfiguration to follow

    def replica_names(self) -> list[str]:
        return list(REPLICAS)


class Cluster:
    """``ray.get_actor`` of the fake cluster: one FakeReplica behind every name."""

    def __init__(self, answer: Any = performs) -> None:
        self.replica = FakeReplica(answer)
        self.lookups: list[tuple[str, str]] = []  # (name, thread name)
        self.delay_s = 0.0

    def get_actor(self, name: str, namespace: str) -> FakeReplica:
        self.lookups.append((name, threading.current_thread().name))
        time.sleep(self.delay_s)  # a slow GCS
        return self.replica


@pytest.fixture
def cluster(monkeypatch) -> Cluster:
    import ray

    c = Cluster()
    monkeypatch.setattr(ray, "get_actor", c.get_actor)
    return c


def run(cluster: Cluster, scenario: Any) -> Any:
    """Start a pool on the fake cluster and run ``scenario(pool)`` on its event loop."""

    async def go() -> Any:
        pool = ClientPool(CONFIG.namespace, op_timeout_s=0.3, attempt_timeout_s=0.05)
        await pool.start(FakeDeployment())
        try:
            return await scenario(pool)
        finally:
            assert pool._probe_task is not None
            pool._probe_task.cancel()

    return asyncio.run(go())


def counts(pool: ClientPool) -> tuple[int, int]:
    """(clients created, clients idle)."""
    return pool._created, len(pool._idle)


def test_an_unopened_session_is_503_nothing_sent_and_the_client_is_kept(cluster):
    cluster.replica.answer = silent_on(is_open)

    async def scenario(pool: ClientPool) -> None:
        with pytest.raises(Unavailable, match="could not open a session") as e:
            await pool.execute(("put", "k", "v"))
        assert not isinstance(e.value, OutcomeUnknown)
        assert {c.command_id for c in cluster.replica.submitted} == {0}  # the put never left
        assert counts(pool) == (1, 1)
        cluster.replica.answer = performs
        assert await pool.execute(("get", "k")) == "v"
        assert counts(pool) == (1, 1) and pool.outcomes["not_sent"] == 1

    run(cluster, scenario)


def test_an_unconfirmed_operation_is_504_in_the_pools_words_and_the_client_is_kept(cluster):
    cluster.replica.answer = silent_on(lambda c: c.command_id == 1)

    async def scenario(pool: ClientPool) -> None:
        with pytest.raises(OutcomeUnknown) as e:
            await pool.execute(("put", "k", "v"))
        assert str(e.value) == (
            "no replica confirmed it within 0.3s: it may or may not have been applied "
            "(and may still be)"
        )
        cluster.replica.answer = performs
        await pool.execute(("put", "k", "w"))  # the same client, which gave up command 1
        assert cluster.replica.submitted[-1].command_id == 2
        assert counts(pool) == (1, 1) and pool.outcomes["unknown"] == 1

    run(cluster, scenario)


def test_an_expired_session_is_504_and_the_client_goes_on_under_a_new_one(cluster):
    cluster.replica.answer = expired

    async def scenario(pool: ClientPool) -> None:
        with pytest.raises(OutcomeUnknown, match="evicted the session"):
            await pool.execute(("put", "k", "v"))
        cluster.replica.answer = performs
        await pool.execute(("put", "k", "v"))
        ids = [c.client_id for c in cluster.replica.submitted]
        assert ids[0] != ids[-1]  # a new session, of the same pooled client
        assert counts(pool) == (1, 1) and pool.outcomes["session_expired"] == 1

    run(cluster, scenario)


def test_a_refusal_of_the_state_machine_is_409_and_the_client_is_kept(cluster):
    def refuse(cmd):
        if is_open(cmd):
            return performs(cmd)
        return Response(cmd.client_id, cmd.command_id, None, "append would exceed")

    cluster.replica.answer = refuse

    async def scenario(pool: ClientPool) -> None:
        with pytest.raises(Rejected, match="append would exceed"):
            await pool.execute(("append", "k", "v"))
        assert counts(pool) == (1, 1)

    run(cluster, scenario)


def test_a_request_cancelled_mid_command_drops_its_client(cluster):
    cluster.replica.answer = silent_on(lambda c: c.command_id == 1)

    async def scenario(pool: ClientPool) -> None:
        task = asyncio.ensure_future(pool.execute(("put", "k", "v")))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert counts(pool) == (1, 0)
        cluster.replica.answer = performs
        await pool.execute(("put", "k", "v"))
        assert counts(pool) == (2, 1) and pool.outcomes["error"] == 1

    run(cluster, scenario)


def test_every_replica_silent_is_503_without_sending(cluster):
    async def scenario(pool: ClientPool) -> None:
        pool._alive = []  # what a probe that no replica answered leaves
        with pytest.raises(Unavailable, match="answered the latest probe"):
            await pool.execute(("put", "k", "v"))
        assert cluster.replica.submitted == []

    run(cluster, scenario)


def test_the_probe_looks_up_handles_in_a_thread_once_and_again_after_a_death(cluster):
    main = threading.current_thread().name
    cluster.delay_s = 0.3

    async def scenario(pool: ClientPool) -> None:
        assert pool._alive == REPLICAS
        # The lookups ran in worker threads, and the loop kept running meanwhile.
        assert sorted(name for name, _ in cluster.lookups) == REPLICAS
        assert all(thread != main for _, thread in cluster.lookups)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        pool._handles.clear()  # force lookups
        await pool._probe()
        t.cancel()
        assert ticks >= 10  # 0.3 s of lookups did not stop the loop
        n = len(cluster.lookups)
        await pool._probe()
        assert len(cluster.lookups) == n  # cached
        # A replica gone for good: its cached handle is dropped and looked up again.
        ping = cluster.replica._ping

        async def died() -> str:
            raise ActorDiedError()

        cluster.replica.ping.fn = died
        await pool._probe()
        assert pool._alive == [] and pool._handles == {}
        cluster.replica.ping.fn = ping
        await pool._probe()
        assert pool._alive == REPLICAS and len(cluster.lookups) == n + 2
        # New clients start with the probe's handles: no lookup on the event loop.
        await pool.execute(("put", "k", "v"))
        assert len(cluster.lookups) == n + 2

    run(cluster, scenario)
