"""``pmmc-ray bench``: what each hop costs, next to the raw-Ray floor, in one run.

Measures, on the Ray this process is connected to:
  - raw Ray: a driver -> actor round trip (``ping``), and a fire-and-forget chain of
    N hops between two asyncio actors (the cost of one protocol message hop);
  - the cost of submitting one actor call with a list of protocol messages versus the
    same list pre-pickled to bytes (what the runtime's transport sends);
  - pmmc-ray: one client ``put`` at a time (latency), throughput/latency with several
    concurrent clients (threads, one Ray call per operation), and with many
    operations outstanding from one process (asyncio clients sharing a
    :class:`~pmmc_ray.runtime.mux.SubmitMux`: one call per replica per loop turn);
  - pmmc-ray open loop: operations started at a fixed rate on a pool of such clients,
    latency from each operation's scheduled start (:mod:`.openloop`).
Nothing here asserts a number; the caller writes the result to a file.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import statistics
import time
from typing import Any

import ray

from ..check.linearizability import KV_MODEL, check
from ..core import Batch, Command, Config
from ..core.messages import Propose
from .client import AsyncClient, HistoryRecorder, OutcomeUnknownError, outcome_of
from .deployment import Deployment, deploy
from .mux import SubmitMux
from .openloop import run_open_loop
from .workload import replica_states, run_workload


@ray.remote(num_cpus=0)
class _HopNode:
    """A bare asyncio actor that forwards a counter to its peer until it reaches 0."""

    def __init__(self, peer: str, namespace: str) -> None:
        self.peer_name, self.ns = peer, namespace
        self.peer: Any = None
        self.done: asyncio.Future | None = None

    async def hop(self, left: int) -> None:
        if left == 0:
            if self.done is not None and not self.done.done():
                self.done.set_result(None)
            return
        if self.peer is None:
            self.peer = ray.get_actor(self.peer_name, namespace=self.ns)
        self.peer.hop.remote(left - 1)

    async def chain(self, hops: int) -> None:
        self.done = asyncio.get_running_loop().create_future()
        await self.hop(hops)
        await self.done

    async def sink(self, src: str, msgs: Any) -> None:
        return None

    async def ping(self) -> int:
        return 1


def _p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def raw_ray(namespace: str, samples: int = 200) -> dict[str, Any]:
    """Raw Ray costs: driver round trip, per-hop chain latency, call submission cost."""
    a = _HopNode.options(name="bench-a", namespace=namespace).remote("bench-b", namespace)
    b = _HopNode.options(name="bench-b", namespace=namespace).remote("bench-a", namespace)
    try:
        ray.get([a.ping.remote(), b.ping.remote()])
        rtt = []
        for _ in range(samples):
            t = time.perf_counter()
            ray.get(a.ping.remote())
            rtt.append((time.perf_counter() - t) * 1000)
        chains: dict[int, float] = {}
        for hops in (2, 4, 8):  # even: the chain A -> B -> A ... ends where it started
            xs = []
            for _ in range(samples // 2):
                t = time.perf_counter()
                ray.get(a.chain.remote(hops))
                xs.append((time.perf_counter() - t) * 1000)
            chains[hops] = _p50(xs)
        cfg = Config(0, 1, ("replica-0", "replica-1"), ("leader-0", "leader-1"), ("acceptor-0",))
        msgs = [
            Propose("replica-0", cfg, 1, ((1, Batch((Command("client", 1, ("put", "k", "v")),))),))
        ]
        # Alternate the two forms over several rounds: single rounds are noisy here.
        rounds: dict[str, list[float]] = {"list_of_messages": [], "pickled_bytes": []}
        for _ in range(6):
            for name in rounds:
                n = samples * 2
                t = time.perf_counter()
                for _ in range(n):
                    arg = msgs if name == "list_of_messages" else pickle.dumps(msgs, protocol=5)
                    a.sink.remote("x", arg)
                rounds[name].append((time.perf_counter() - t) / n * 1000)
                ray.get(a.ping.remote())
        submit = {name: _p50(xs) for name, xs in rounds.items()}
        return {
            "driver_actor_round_trip_ms_p50": _p50(rtt),
            "actor_chain_ms_p50": {str(k): v for k, v in chains.items()},
            "actor_hop_ms": round((chains[8] - chains[4]) / 4, 3),
            "submit_one_call_ms": submit,
        }
    finally:
        for h in (a, b):
            ray.kill(h, no_restart=True)


def tree_cpu_s(root: int | None = None) -> float | None:
    """CPU seconds (user + system) used so far by process ``root`` (default: this one)
    and every live descendant: with an embedded local Ray, that is the driver, the
    raylet, the GCS and every actor. None where /proc is not there."""
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in used.items():
        p, depth = pid, 0
        while p not in (root, 0, 1) and depth < 64:
            p, depth = parent.get(p, 0), depth + 1
        if p == root:
            total += cpu
    return total


async def _muxed_pool(
    dep: Deployment, n: int, label: str, recorder: HistoryRecorder
) -> tuple[SubmitMux, list[AsyncClient], int, str]:
    """``n`` paper clients sharing one mux, each with its session open (a trip through
    the log, before any timing), the number of keys (n/4) and a key prefix of this run
    only: the history checked is this run's, so no key may hold an earlier run's value."""
    mux = SubmitMux()
    clients = dep.muxed_clients(
        n,
        mux,
        client_prefix=f"{label}-",
        timeout_s=30.0,
        attempt_timeout_s=10.0,
        recorder=recorder,
    )
    keys = max(1, n // 4)
    prefix = f"{label}-{time.time_ns():x}-"
    await asyncio.gather(*(c.get(f"{prefix}{i % keys}") for i, c in enumerate(clients)))
    return mux, clients, keys, prefix


async def _pipelined(
    dep: Deployment, n: int, duration_s: float, value_bytes: int, recorder: HistoryRecorder
) -> dict[str, Any]:
    """``n`` paper clients in this event loop, one mux: puts and gets of
    ``value_bytes``-byte values on n/4 keys, closed loop, for ``duration_s``."""
    loop = asyncio.get_running_loop()
    mux, clients, keys, prefix = await _muxed_pool(dep, n, f"pipelined{n}", recorder)
    latencies: list[float] = []
    unknown = 0
    calls0, cmds0 = mux.calls, mux.commands
    t0 = loop.time()
    stop_at = t0 + duration_s

    async def drive(i: int, c: AsyncClient) -> None:
        nonlocal unknown
        key, j = f"{prefix}{i % keys}", 0
        while loop.time() < stop_at:
            j += 1
            t = loop.time()
            try:
                if j % 2:
                    await c.put(key, f"{i:x}.{j:x}".ljust(value_bytes, "."))
                else:
                    await c.get(key)
            except OutcomeUnknownError:
                unknown += 1
                continue
            latencies.append((loop.time() - t) * 1000)

    cpu0, all0 = time.process_time(), tree_cpu_s()
    await asyncio.gather(*(drive(i, c) for i, c in enumerate(clients)))
    elapsed = loop.time() - t0
    driver_cpu = time.process_time() - cpu0
    all1 = tree_cpu_s()
    all_cpu = None if all0 is None or all1 is None else all1 - all0
    latencies.sort()
    calls = mux.calls - calls0
    return {
        "outstanding": n,
        "value_bytes": value_bytes,
        "duration_s": round(elapsed, 2),
        "throughput_ops_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "p99": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        },
        "ops": len(latencies),
        "unknown": unknown,
        "commands_per_call": round((mux.commands - cmds0) / calls, 1) if calls else None,
        "driver_cpu_ms_per_op": round(driver_cpu * 1000 / len(latencies), 3) if latencies else None,
        # Every process of the embedded Ray (actors, raylet, GCS) and the driver; with a
        # Ray this process did not start, only the driver's share is known.
        "cpu_ms_per_op": (
            round(all_cpu * 1000 / len(latencies), 3) if latencies and all_cpu else None
        ),
    }


def pipelined(dep: Deployment, n: int, duration_s: float, value_bytes: int = 16) -> dict[str, Any]:
    """Run :func:`_pipelined` and check the recorded history and the replicas."""
    recorder = HistoryRecorder()
    out = asyncio.run(_pipelined(dep, n, duration_s, value_bytes, recorder))
    out["linearizable"] = check(recorder.operations(), KV_MODEL, timeout=60.0).verdict
    out["replicas_consistent"] = replica_states(dep)[0]
    return out


async def _open_loop(
    dep: Deployment,
    rate: float,
    duration_s: float,
    n: int,
    value_bytes: int,
    recorder: HistoryRecorder,
) -> dict[str, Any]:
    """``rate`` operations per second on a fixed schedule, on a pool of ``n`` paper
    clients sharing one mux: puts and gets (alternately) of ``value_bytes``-byte
    values on n/4 keys, as in :func:`_pipelined`."""
    mux, clients, keys, prefix = await _muxed_pool(dep, n, f"open{rate:g}", recorder)
    calls0, cmds0 = mux.calls, mux.commands

    async def op(client: int, i: int) -> None:
        c, key = clients[client], f"{prefix}{i % keys}"
        if i % 2 == 0:
            await c.put(key, f"{i:x}".ljust(value_bytes, "."))
        else:
            await c.get(key)

    # A client whose operation raised anything but the known outcomes leaves the pool
    # (outcome_of's "error"); the others take their next operation.
    cpu0 = time.process_time()
    out = await run_open_loop(
        op, rate=rate, duration_s=duration_s, clients=n, classify=outcome_of, drain_s=40.0
    )
    driver_cpu = time.process_time() - cpu0
    calls = mux.calls - calls0
    out["value_bytes"] = value_bytes
    out["ops"] = "put and get alternately"
    out["commands_per_call"] = round((mux.commands - cmds0) / calls, 1) if calls else None
    # This process's CPU (the schedule, the clients, Ray's calls) per operation started:
    # near 1000 / rate ms, the driver itself is what limits the run.
    started = out["started"]
    out["driver_cpu_ms_per_op"] = round(driver_cpu * 1000 / started, 3) if started else None
    return out


def open_loop(
    dep: Deployment, rate: float, duration_s: float, clients: int, value_bytes: int = 16
) -> dict[str, Any]:
    """Run :func:`_open_loop` and check the recorded history and the replicas."""
    recorder = HistoryRecorder()
    out = asyncio.run(_open_loop(dep, rate, duration_s, clients, value_bytes, recorder))
    out["linearizable"] = check(recorder.operations(), KV_MODEL, timeout=60.0).verdict
    out["replicas_consistent"] = replica_states(dep)[0]
    return out


def pmmc(
    config: dict[str, Any],
    clients: list[int],
    duration_s: float,
    outstanding: list[int] | None = None,
    value_bytes: int = 16,
    rates: list[tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Deploy, time sequential puts, then run the workload at each client count, the
    pipelined runs at each count of ``outstanding``, and the open-loop runs at each
    (rate, pool size) of ``rates``."""
    t0 = time.monotonic()
    dep = deploy(config)
    out: dict[str, Any] = {"deploy_s": round(time.monotonic() - t0, 2)}
    try:
        c = dep.client()
        c.put("warm", "up")
        xs = []
        for i in range(100):
            t = time.perf_counter()
            c.put("k", str(i))
            xs.append((time.perf_counter() - t) * 1000)
        xs.sort()
        out["sequential_put_ms"] = {"p50": _p50(xs), "p99": round(xs[98], 3)}
        runs = []
        for n in clients:
            r = run_workload(dep, clients=n, duration_s=duration_s, keys=50, kill_leader=False)
            d = r.to_dict()
            runs.append(
                {
                    "clients": n,
                    "throughput_ops_per_s": d["throughput_ops_per_s"],
                    "latency_ms": d["latency_ms"],
                    "linearizable": d["linearizable"],
                    "replicas_consistent": d["replicas_consistent"],
                }
            )
        out["workload"] = runs
        out["pipelined"] = [pipelined(dep, n, duration_s, value_bytes) for n in outstanding or []]
        out["open_loop"] = [
            open_loop(dep, rate, duration_s, n, value_bytes) for rate, n in rates or []
        ]
    finally:
        dep.shutdown(delete_data=True)
    return out
