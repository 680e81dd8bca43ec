"""The main job's workload: concurrent KV clients, a leader kill halfway, and a report.

``run_workload`` drives a deployment with ``clients`` threads for ``duration_s``
seconds, records every operation, optionally kills the active leader halfway
(``ray.kill(..., no_restart=False)``: Ray restarts it), and returns throughput,
latency percentiles, the failover time, whether the replicas ended with identical
state, and the linearizability verdict of the recorded history. It prints nothing:
progress goes to a callback.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from ..check.linearizability import KV_MODEL, check
from .client import (
    HistoryRecorder,
    OperationRejected,
    OutcomeUnknownError,
    SessionNotOpenedError,
)
from .deployment import Deployment


@dataclass
class WorkloadResult:
    """What a workload run measured (times in seconds unless named _ms)."""

    clients: int
    duration_s: float
    ops_ok: int = 0
    ops_unknown: int = 0
    ops_rejected: int = 0
    client_errors: list[str] = field(default_factory=list)
    ops_ok_after_kill: int = 0
    chaos_kills: list[tuple[float, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    killed: str | None = None
    kill_at_s: float | None = None
    failover_s: float | None = None
    """From the kill to the completion of the first operation started after it."""
    longest_gap_s: float | None = None
    """Longest time without any completed operation, from the kill on: the failover
    time reported (``ray.kill`` is asynchronous, so the first figure can flatter)."""
    replicas_consistent: bool | None = None
    replica_states: dict[str, Any] = field(default_factory=dict)
    linearizable: str | None = None
    lin_detail: str = ""
    baseline_ping_ms_p50: float | None = None

    @property
    def throughput(self) -> float:
        return self.ops_ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 2) -> float | None:
            return None if x is None else round(x, n)

        return {
            "clients": self.clients,
            "duration_s": r(self.duration_s),
            "ops_ok": self.ops_ok,
            "ops_unknown_outcome": self.ops_unknown,
            "ops_rejected": self.ops_rejected,
            "client_errors": self.client_errors[:5],
            "ops_ok_after_kill": self.ops_ok_after_kill if self.killed else None,
            "throughput_ops_per_s": r(self.throughput, 1),
            "latency_ms": {
                "p50": r(self.percentile(0.50)),
                "p90": r(self.percentile(0.90)),
                "p99": r(self.percentile(0.99)),
                "max": r(max(self.latencies_ms) if self.latencies_ms else None),
            },
            "raw_ray_round_trip_ms_p50": r(self.baseline_ping_ms_p50, 3),
            "killed": self.killed,
            "kill_at_s": r(self.kill_at_s),
            "chaos_kills": [list(k) for k in self.chaos_kills],
            "failover_s": r(self.longest_gap_s, 3),
            "first_op_after_kill_s": r(self.failover_s, 3),
            "replicas_consistent": self.replicas_consistent,
            "replica_states": self.replica_states,
            "linearizable": self.linearizable,
            "linearizability_detail": self.lin_detail,
        }


def active_leader(dep: Deployment, wait_s: float = 0.0) -> str | None:
    """The name of a leader that reports itself active in the newest epoch it knows,
    asking again for up to ``wait_s`` seconds (an election may be under way)."""
    deadline = time.monotonic() + wait_s
    while True:
        best: tuple[int, int, str] | None = None
        leaders = [n for n in dep.names() if n.startswith("leader-")]
        for name, st in dep._gather("status", 5.0, names=leaders).items():
            for epoch, ep in (st.get("epochs") or {}).items():
                if ep.get("active"):
                    key = (int(epoch), int(ep["ballot"][0]), name)
                    if best is None or key > best:
                        best = key
        if best is not None or time.monotonic() >= deadline:
            return best[2] if best else None
        time.sleep(0.1)


def raw_ray_round_trip_ms(dep: Deployment, n: int = 200) -> float:
    """p50 of a plain actor call round trip (``ping``) to a replica: the Ray floor."""
    h = dep.handle(dep.config.replica_ids()[0])
    ray.get(h.ping.remote())
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        ray.get(h.ping.remote())
        xs.append((time.perf_counter() - t) * 1000.0)
    xs.sort()
    return xs[len(xs) // 2]


def replica_states(dep: Deployment, settle_s: float = 15.0) -> tuple[bool, dict[str, Any]]:
    """Wait until the replicas agree on slot_out and compare their state hashes (each
    hashes its whole state on request: an end-of-run check, not a request path)."""
    deadline = time.monotonic() + settle_s
    while True:
        reps = [n for n in dep.names() if n.startswith("replica-")]
        st = dep._gather("status", 5.0, names=reps)
        hashes = dep._gather("state_hash", 15.0, names=reps)
        summary = {}
        for n in sorted(reps):
            s, h = st[n], hashes[n]
            if not isinstance(s, dict) or "error" in s or "error" in h:
                summary[n] = {"error": str(s.get("error") if isinstance(s, dict) else s)}
                continue
            summary[n] = {
                "slot_out": h.get("slot_out"),
                "state_sha256": h.get("state_sha256"),
                "recovering": s.get("recovering"),
            }
        vals = {(v.get("slot_out"), v.get("state_sha256")) for v in summary.values()}
        healthy = all(
            "error" not in v and not v.get("recovering") and not st[n].get("refusing")
            for n, v in summary.items()
        )
        ok = healthy and len(reps) > 0 and len(vals) == 1
        if ok or time.monotonic() > deadline:
            return ok, summary
        time.sleep(0.25)


def _chaos_victim(dep: Deployment, rng: random.Random) -> str:
    """A random actor of the deployment (replicas too: they recover from their disks)."""
    return rng.choice(dep.names())


def run_workload(
    dep: Deployment,
    *,
    clients: int = 4,
    duration_s: float = 20.0,
    keys: int = 50,
    kill_leader: bool = True,
    chaos_every_s: float | None = None,
    seed: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    lincheck_timeout_s: float = 60.0,
) -> WorkloadResult:
    """Drive ``dep`` with ``clients`` concurrent clients for ``duration_s`` seconds.

    ``kill_leader``: kill the active leader once, halfway. ``chaos_every_s``: also kill
    a random actor of the deployment (Ray restarts it) every so many seconds, any role,
    so kills may compound (every replica down at once included).
    """
    if clients < 1 or duration_s <= 0 or keys < 1:
        raise ValueError("clients and keys must be >= 1 and duration_s > 0")
    if chaos_every_s is not None and chaos_every_s <= 0:
        raise ValueError("chaos_every_s must be > 0")
    rng = random.Random(seed)
    # Fresh keys for every run: the linearizability check assumes they start absent.
    prefix = f"w{uuid.uuid4().hex[:8]}"
    recorder = HistoryRecorder()
    res = WorkloadResult(clients=clients, duration_s=duration_s)
    res.baseline_ping_ms_p50 = raw_ray_round_trip_ms(dep)
    lock = threading.Lock()
    stop = threading.Event()
    completions: list[float] = []
    t0 = time.monotonic()

    def worker(i: int) -> None:
        r = random.Random(rng.random())
        c = dep.client(timeout_s=10.0, recorder=recorder, client_id=f"run-{i}-{rng.random():.6f}")
        n = 0
        while not stop.is_set():
            k = f"{prefix}-k{r.randrange(keys)}"
            n += 1
            tag = f"{i}.{n}"
            kind = r.random()
            if kind < 0.5:
                op: tuple = ("get", k)
            elif kind < 0.7:
                op = ("put", k, tag)
            elif kind < 0.9:
                op = ("append", k, f"[{tag}]")
            else:
                op = ("cas", k, None, tag)
            start = time.monotonic()
            try:
                c.execute(op)
            except OutcomeUnknownError:
                with lock:
                    res.ops_unknown += 1
                continue
            except SessionNotOpenedError:
                continue  # not sent (no session yet): nothing happened, go on
            except OperationRejected:
                with lock:
                    res.ops_rejected += 1
                continue
            except Exception as e:  # report it; a silently dead worker skews the numbers
                with lock:
                    res.client_errors.append(f"client {i}: {type(e).__name__}: {e}")
                return
            end = time.monotonic()
            if stop.is_set():
                return  # finished after the measured window: not counted
            with lock:
                res.ops_ok += 1
                res.latencies_ms.append((end - start) * 1000.0)
                completions.append(end - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    kill_at = duration_s / 2 if kill_leader else None
    next_chaos = chaos_every_s
    last_report = 0.0
    while (now := time.monotonic() - t0) < duration_s:
        if next_chaos is not None and now >= next_chaos:
            next_chaos += chaos_every_s or 0
            victim = _chaos_victim(dep, rng)
            dep.kill(victim, restart=True)
            res.chaos_kills.append((round(now, 2), victim))
        if kill_at is not None and res.killed is None and now >= kill_at:
            name = active_leader(dep)
            if name is not None:
                res.kill_at_s = time.monotonic() - t0
                dep.kill(name, restart=True)
                res.killed = name
        if progress is not None and now - last_report >= 1.0:
            last_report = now
            with lock:
                ok, unk = res.ops_ok, res.ops_unknown
                recent = sum(1 for x in completions[-5000:] if x > now - 1.0)
            progress(
                {
                    "t": now,
                    "ops_ok": ok,
                    "ops_unknown": unk,
                    "ops_last_s": recent,
                    "killed": res.killed,
                }
            )
        time.sleep(0.05)
    stop.set()
    res.duration_s = time.monotonic() - t0
    for t in threads:
        t.join(timeout=15.0)

    if res.kill_at_s is not None:
        ops = recorder.operations()
        after = [o.ret - t0 for o in ops if o.ret is not None and o.call - t0 >= res.kill_at_s]
        res.failover_s = (min(after) - res.kill_at_s) if after else None
        times = sorted([res.kill_at_s] + [x for x in completions if x >= res.kill_at_s])
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        res.longest_gap_s = max(gaps) if gaps else None
        res.ops_ok_after_kill = sum(1 for x in completions if x >= res.kill_at_s)

    res.replicas_consistent, res.replica_states = replica_states(dep)
    verdict = check(recorder.operations(), KV_MODEL, timeout=lincheck_timeout_s)
    res.linearizable = verdict.verdict
    res.lin_detail = str(getattr(verdict, "detail", ""))
    return res
