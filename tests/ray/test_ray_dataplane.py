"""The data plane and the multiplexed client path on real actors."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from pmmc_ray.check.linearizability import KV_MODEL, check
from pmmc_ray.core import Command
from pmmc_ray.runtime import HistoryRecorder, OutcomeUnknownError, SubmitMux

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("dataplane")


def _clients(dep, n, mux, recorder=None, prefix="m"):
    return dep.muxed_clients(
        n, mux, client_prefix=prefix, timeout_s=30.0, attempt_timeout_s=5.0, recorder=recorder
    )


def test_protocol_messages_take_the_streams(dep):
    c = dep.client(timeout_s=30)
    for i in range(20):
        c.put("stream", str(i))
    st = dep.status()["actors"]
    for name in ("commander-0", "commander-1", "replica-0"):
        assert st[name]["transport"] == "stream"
    # Whichever leader is active: its commander sent its p2a over streams, to acceptors
    # on this node's loopback address (never all interfaces).
    busy = max(("commander-0", "commander-1"), key=lambda n: st[n]["data_plane"]["frames_sent"])
    dp = st[busy]["data_plane"]
    assert dp["frames_sent"] >= 20 * 3
    assert {"acceptor-0", "acceptor-1", "acceptor-2"} <= set(dp["links_up"])
    assert dp["address"].startswith("127.0.0.1:")
    assert dp["refused_connections"] == 0 and dp["bad_frames"] == 0
    # Streams carried the bulk of it, Ray calls only what went before the links were up.
    assert st[busy]["sent_calls"] < dp["frames_sent"]


def test_the_ray_transport_still_works(make_deployment):
    d = make_deployment("raytransport", transport="ray")
    c = d.client(timeout_s=30)
    c.put("k", "v")
    c.append("k", "w")
    assert c.get("k") == "vw"
    st = d.status()["actors"]
    assert all(s["transport"] == "ray" and "data_plane" not in s for s in st.values())


def test_many_clients_share_calls_and_stay_linearizable(dep):
    recorder = HistoryRecorder()

    async def run():
        mux = SubmitMux()
        clients = _clients(dep, 200, mux, recorder)
        keys = [f"mux-{k}" for k in range(20)]

        async def drive(i, c):
            for j in range(6):
                key = keys[(i + j) % len(keys)]
                if j % 3 == 0:
                    await c.put(key, f"{i}.{j}")
                elif j % 3 == 1:
                    await c.append(key, f"[{i}.{j}]")
                else:
                    await c.get(key)

        await asyncio.gather(*(drive(i, c) for i, c in enumerate(clients)))
        return mux

    mux = asyncio.run(run())
    assert mux.commands >= 200 * 7  # sessions opened, then six operations each
    assert mux.calls * 5 < mux.commands, (mux.calls, mux.commands)  # shared calls
    verdict = check(recorder.operations(), KV_MODEL, timeout=60.0)
    assert verdict.verdict == "linearizable", verdict


def test_exactly_once_with_many_clients_in_flight_across_a_replica_kill(dep):
    """Appends of distinct tokens by 100 clients at once, while the replica they all
    talk to is killed: each acknowledged append appears exactly once, and none twice."""
    key = f"once-{time.time_ns()}"
    acked: list[str] = []
    unknown: list[str] = []

    async def run():
        mux = SubmitMux()
        clients = _clients(dep, 100, mux, prefix="once")
        await asyncio.gather(*(c.get(key) for c in clients))  # open every session

        async def drive(i, c):
            for j in range(8):
                token = f"<{i}.{j}>"
                try:
                    await c.append(key, token)
                    acked.append(token)
                except OutcomeUnknownError:
                    try:
                        await c.retry()  # the same command again: performed at most once
                        acked.append(token)
                    except OutcomeUnknownError:
                        unknown.append(token)

        async def killer():
            await asyncio.sleep(0.3)
            ray.kill(dep.handle("replica-0"), no_restart=False)

        await asyncio.gather(killer(), *(drive(i, c) for i, c in enumerate(clients)))

    asyncio.run(run())
    value = dep.client(timeout_s=30).get(key) or ""
    for token in acked:
        assert value.count(token) == 1, token
    for token in unknown:
        assert value.count(token) <= 1, token
    assert len(acked) >= 700


def test_cut_connections_lose_nothing_acknowledged_and_come_back(dep):
    """Every actor's streams are reset three times under load (frames in flight lost):
    the history stays linearizable, every acknowledged append is there exactly once,
    and the streams carry the traffic again afterwards."""
    key = f"cut-{time.time_ns()}"
    recorder = HistoryRecorder()
    acked: list[str] = []
    cut: list[dict] = []

    async def run():
        mux = SubmitMux()
        clients = _clients(dep, 40, mux, recorder, prefix="cut")
        await asyncio.gather(*(c.get(key) for c in clients))

        async def drive(i, c):
            for j in range(10):
                token = f"<{i}.{j}>"
                try:
                    await c.append(key, token)
                    acked.append(token)
                except OutcomeUnknownError:
                    pass

        async def cutter():
            loop = asyncio.get_running_loop()
            for _ in range(3):
                await asyncio.sleep(0.2)
                cut.append(await loop.run_in_executor(None, dep.cut_links))

        await asyncio.gather(cutter(), *(drive(i, c) for i, c in enumerate(clients)))

    asyncio.run(run())
    assert any(peers for c in cut for peers in c.values()), cut  # streams were up and cut
    value = dep.client(timeout_s=30).get(key) or ""
    for token in acked:
        assert value.count(token) == 1, token
    assert len(acked) >= 300
    verdict = check(recorder.operations(), KV_MODEL, timeout=60.0)
    assert verdict.verdict == "linearizable", verdict
    # The streams are back: new writes travel on them again.
    before = dep.status()["actors"]
    c = dep.client(timeout_s=30)
    for i in range(20):
        c.put("after-cut", str(i))
    after = dep.status()["actors"]
    sent = {
        n: after[n]["data_plane"]["frames_sent"] - before[n]["data_plane"]["frames_sent"]
        for n in ("commander-0", "commander-1")
    }
    assert max(sent.values()) >= 20 * 3, sent
    assert sum(s["data_plane"]["cuts"] for s in after.values()) > 0
    with pytest.raises(ValueError):
        dep.cut_links(["no-such-actor"])


def test_submit_many_refuses_malformed_commands(dep):
    h = dep.handle("replica-0")
    good = Command("sm-client", 0, ("get", "x"))
    with pytest.raises(ray.exceptions.RayTaskError, match="well-formed"):
        ray.get(h.submit_many.remote([good, "not a command"], [1.0, 1.0]), timeout=30)
    with pytest.raises(ray.exceptions.RayTaskError, match="one timeout per command"):
        ray.get(h.submit_many.remote([good], [1.0, 2.0]), timeout=30)
    # The replica is still serving.
    assert dep.client(timeout_s=30).get("never-written") is None


def test_the_pipelined_bench_measures_and_checks(dep):
    from pmmc_ray.runtime.bench import pipelined

    r = pipelined(dep, 32, 1.0)
    assert r["outstanding"] == 32 and r["ops"] > 0 and r["unknown"] == 0
    assert r["linearizable"] == "linearizable" and r["replicas_consistent"] is True
    assert r["commands_per_call"] > 1  # the mux shared calls
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    assert r["cpu_ms_per_op"] is None or r["cpu_ms_per_op"] > 0
