"""A long run at load that shows whether memory and disk stay flat (DESIGN 4b).

``run_soak`` drives a deployment with ``clients`` threads that overwrite ``keys`` keys
with values of ``value_bytes`` bytes (and read them back), so the history grows without
bound while the live state stays ``keys * value_bytes``. Every ``sample_every_s`` it
records each actor's resident memory and log size and the data directory's size; every
``kill_every_s`` it kills the active leader and measures the time to the next committed
write. At the end it checks that the replicas agree and that the recorded history is
linearizable. A bounded deployment shows flat memory and disk and failover times that
do not grow.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..check.linearizability import KV_MODEL, check
from ..core.ids import role_of
from ..runtime.client import (
    HistoryRecorder,
    OperationRejected,
    OutcomeUnknownError,
    SessionNotOpenedError,
)
from ..runtime.deployment import Deployment
from ..runtime.workload import active_leader, replica_states

__all__ = ["SoakResult", "run_soak"]


@dataclass
class Sample:
    t: float
    ops: int
    ops_per_s: float
    rss_mb: dict[str, float]  # role -> largest RSS among its actors
    storage_mb: dict[str, float]  # role -> largest log among its actors
    data_dir_mb: float  # everything under the data directory on this node


@dataclass
class Failover:
    t: float
    leader: str
    seconds: float  # kill -> the next committed write
    largest_p1b_bytes: int


@dataclass
class SoakResult:
    duration_s: float
    clients: int
    keys: int
    value_bytes: int
    ops: int = 0
    ops_unknown: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)
    replicas_agree: bool | None = None
    linearizable: str | None = None
    lin_detail: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and bool(self.replicas_agree)
            and self.linearizable == "linearizable"
            and self.ops > 0
        )

    def growth(self) -> dict[str, Any]:
        """First sample after warm-up against the last one: what grew, by how much."""
        if len(self.samples) < 3:
            return {}
        a, b = self.samples[1], self.samples[-1]
        out: dict[str, Any] = {
            "from_t": a.t,
            "to_t": b.t,
            "data_dir_mb": [a.data_dir_mb, b.data_dir_mb],
        }
        for role in sorted(b.rss_mb):
            out[f"rss_mb_{role}"] = [a.rss_mb.get(role), b.rss_mb[role]]
        f = [x.seconds for x in self.failovers]
        if f:
            out["failover_s_first_last_max"] = [f[0], f[-1], max(f)]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["growth"] = self.growth()
        return d


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _sample(dep: Deployment, t: float, ops: int, last: tuple[float, int]) -> Sample:
    st = dep._gather("status", 10.0)
    rss: dict[str, float] = {}
    disk: dict[str, float] = {}
    for name, s in st.items():
        if not isinstance(s, dict) or "error" in s:
            continue
        role = role_of(name)
        if s.get("rss_bytes"):
            rss[role] = max(rss.get(role, 0.0), round(s["rss_bytes"] / 2**20, 1))
        if s.get("storage_bytes") is not None:
            disk[role] = max(disk.get(role, 0.0), round(s["storage_bytes"] / 2**20, 2))
    dt = t - last[0]
    rate = (ops - last[1]) / dt if dt > 0 else 0.0
    data = round(_dir_bytes(dep.config.storage_dir()) / 2**20, 2)
    return Sample(round(t, 1), ops, round(rate, 1), rss, disk, data)


def _failover(dep: Deployment, t0: float, rng: random.Random) -> Failover | None:
    import ray

    lid = active_leader(dep, wait_s=10.0)
    if lid is None:
        return None
    accs = [n for n in dep.names() if n.startswith("acceptor-")]
    ray.get([dep.handle(a).reset_payload_stats.remote() for a in accs], timeout=30)
    probe = dep.client(timeout_s=60.0, client_id="soak-probe")
    probe.put("soak-probe", "before")  # session open: the write below is one command
    killed_at = time.monotonic()
    dep.kill(lid, restart=True)
    probe.put("soak-probe", f"after-{rng.random():.6f}")
    took = time.monotonic() - killed_at
    p1b = 0
    for s in dep._gather("status", 10.0, names=accs).values():
        if isinstance(s, dict):
            p1b = max(p1b, (s.get("max_payload_bytes") or {}).get("P1b", 0))
    return Failover(round(killed_at - t0, 1), lid, round(took, 3), p1b)


def run_soak(
    dep: Deployment,
    *,
    duration_s: float = 600.0,
    clients: int = 8,
    keys: int = 100,
    value_bytes: int = 1024,
    kill_every_s: float | None = 60.0,
    sample_every_s: float = 10.0,
    seed: int | None = None,
    progress: Callable[[str, Any], None] | None = None,
) -> SoakResult:
    """Run the soak on ``dep`` (see the module docstring); ``progress(kind, item)`` is
    called with ("sample", Sample) and ("failover", Failover) as they happen."""
    if clients < 1 or keys < 1 or value_bytes < 1 or duration_s <= 0 or sample_every_s <= 0:
        raise ValueError("clients, keys, value_bytes >= 1; duration_s, sample_every_s > 0")
    if kill_every_s is not None and kill_every_s <= 0:
        raise ValueError("kill_every_s must be > 0")
    rng = random.Random(seed)
    prefix = f"soak{uuid.uuid4().hex[:6]}"
    res = SoakResult(duration_s, clients, keys, value_bytes)
    recorder = HistoryRecorder()
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"ok": 0, "unknown": 0}

    def worker(i: int) -> None:
        r = random.Random(rng.random())
        c = dep.client(timeout_s=30.0, recorder=recorder, client_id=f"soak-{i}")
        n = 0
        while not stop.is_set():
            n += 1
            k = f"{prefix}-{r.randrange(keys)}"
            op: tuple = (
                ("get", k) if r.random() < 0.3 else ("put", k, f"{i}.{n}:".ljust(value_bytes, "x"))
            )
            try:
                c.execute(op)
            except OutcomeUnknownError:
                with lock:
                    counts["unknown"] += 1
                continue
            except SessionNotOpenedError:
                continue  # not sent (no session yet): nothing happened, go on
            except OperationRejected as e:
                with lock:
                    res.errors.append(f"client {i}: rejected {e}")
                return
            except Exception as e:
                with lock:
                    res.errors.append(f"client {i}: {type(e).__name__}: {e}")
                return
            with lock:
                counts["ok"] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    next_sample, next_kill = sample_every_s, kill_every_s
    last = (0.0, 0)
    while (now := time.monotonic() - t0) < duration_s:
        if now >= next_sample:
            next_sample += sample_every_s
            with lock:
                ops = counts["ok"]
            s = _sample(dep, now, ops, last)
            last = (now, ops)
            res.samples.append(s)
            if progress:
                progress("sample", s)
        if next_kill is not None and now >= next_kill:
            next_kill += kill_every_s or 0
            f = _failover(dep, t0, rng)
            if f is not None:
                res.failovers.append(f)
                if progress:
                    progress("failover", f)
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60.0)
    res.duration_s = round(time.monotonic() - t0, 1)
    res.ops, res.ops_unknown = counts["ok"], counts["unknown"]
    res.replicas_agree, _ = replica_states(dep)
    # Only the workers' keys: the probe's writes are not recorded.
    ops_hist = [o for o in recorder.operations() if o.op[1].startswith(prefix)]
    verdict = check(ops_hist, KV_MODEL, timeout=120.0)
    res.linearizable, res.lin_detail = verdict.verdict, str(getattr(verdict, "detail", ""))
    return res
