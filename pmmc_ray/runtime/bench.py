"""``pmmc-ray bench``: what each hop costs, next to the raw-Ray floor, in one run.

Measures, on the Ray this process is connected to:
  - raw Ray: a driver -> actor round trip (``ping``), and a fire-and-forget chain of
    N hops between two asyncio actors (the cost of one protocol message hop);
  - the cost of submitting one actor call with a list of protocol messages versus the
    same list pre-pickled to bytes (what the runtime's transport sends);
  - pmmc-ray: one client ``put`` at a time (latency), and throughput/latency with
    several concurrent clients.
Nothing here asserts a number; the caller writes the result to a file.
"""

from __future__ import annotations

import asyncio
import pickle
import statistics
import time
from typing import Any

import ray

from ..core import Batch, Command, Config
from ..core.messages import Propose
from .deployment import deploy
from .workload import run_workload


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


def pmmc(config: dict[str, Any], clients: list[int], duration_s: float) -> dict[str, Any]:
    """Deploy, time sequential puts, then run the workload at each client count."""
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
    finally:
        dep.shutdown(delete_data=True)
    return out
