"""A peer system measured on the same workload as ``pmmc-ray bench``: PySyncObj (Raft).

``pysyncobj_bench`` starts a 3-node PySyncObj cluster on 127.0.0.1, each node in its own
child process (``python -m pmmc_ray.runtime.bench_peers node ...``), and a fourth child,
the driver, which joins as a read-only PySyncObj node: like a pmmc-ray client it is not
a voting member, and every command it submits travels to the Raft leader and is
counted when the driver sees it committed. The driver measures

  - sequential ``put`` latency, one command in flight (p50, p99);
  - committed puts/s in a closed loop with N outstanding commands (N = the client
    counts pmmc-ray uses), each the next put issued as soon as the last one commits;
  - open loop (``rates``): puts started at a fixed rate on a pool of N slots, one put
    in flight each, as pmmc-ray's open-loop runs do (:mod:`.openloop`; a put whose
    slot is not free at its scheduled time is not started but counted).

Values are 16 bytes over 50 keys. PySyncObj runs in memory, its default: no journal
file, no full dump, so nothing is fsynced (pmmc-ray's acceptors and replicas fsync
SQLite on every step). One setting differs from its defaults: ``appendEntriesUseBatch``
is off unless ``batch=True``. With it on (the default), the leader sends entries only
every ``appendEntriesPeriod`` (0.1 s), and one put took about 200 ms here; PySyncObj
documents turning it off "to improve single request speed". The parent kills every child it
started, by pid, whatever happens. Nothing here imports Ray.

Without ``pysyncobj`` (the ``bench`` extra) the result says it was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .openloop import run_open_loop

PEER = "pysyncobj"
SKIPPED = {"skipped": "pysyncobj not installed (pip install 'pmmc-ray[bench]')"}
KEYS = 50
VALUE_BYTES = 16
SEQUENTIAL_SAMPLES = 100
_READY_TIMEOUT_S = 30.0
_OPEN_DRAIN_S = 10.0


def _rates_arg(rates: list[tuple[float, int]]) -> str:
    """(rate, pool) pairs as the driver's --rates: RATE:POOL,RATE:POOL."""
    return ",".join(f"{r:g}:{n}" for r, n in rates)


def _parse_rates(arg: str) -> list[tuple[float, int]]:
    pairs = [x.split(":") for x in arg.split(",") if x]
    return [(float(r), int(n)) for r, n in pairs]


def _pysyncobj_version() -> str | None:
    try:
        import pysyncobj  # noqa: F401
        from pysyncobj.version import VERSION
    except ImportError:
        return None
    return str(VERSION)


def _free_ports(n: int) -> list[int]:
    """n ports the kernel says are free on 127.0.0.1 (closed again: a small race)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p99": None}
    xs = sorted(xs)
    return {
        "p50": round(statistics.median(xs), 3),
        "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 3),
    }


def pysyncobj_bench(
    clients: list[int],
    duration_s: float,
    *,
    samples: int = SEQUENTIAL_SAMPLES,
    batch: bool = False,
    spawned: list[int] | None = None,
    rates: list[tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Measure PySyncObj (3 nodes, loopback, in memory) on the bench workload, and
    open loop at each (rate, pool size) of ``rates``.

    ``spawned``, if given, receives the pid of every child process started (all of
    them are killed before this returns). Returns ``SKIPPED`` without pysyncobj.
    """
    version = _pysyncobj_version()
    if version is None:
        return dict(SKIPPED)
    if not clients or min(clients) < 1 or duration_s <= 0 or samples < 1:
        raise ValueError("clients must be counts >= 1, duration_s > 0 and samples >= 1")
    rates = list(rates or [])
    if any(r <= 0 or n < 1 for r, n in rates):
        raise ValueError("rates must be > 0 with pools >= 1")
    nodes = [f"127.0.0.1:{p}" for p in _free_ports(3)]
    env = dict(os.environ)
    # The children import this module from wherever the parent did.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pmmc_ray.runtime.bench_peers"]
    conf = ["--batch"] if batch else []
    procs: list[subprocess.Popen] = []

    def start(args: list[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(cmd + args, env=env, stdin=subprocess.DEVNULL, **kw)
        procs.append(p)
        if spawned is not None:
            spawned.append(p.pid)
        return p

    t0 = time.monotonic()
    try:
        for i, me in enumerate(nodes):
            others = [n for j, n in enumerate(nodes) if j != i]
            start(
                ["node", me, *others, *conf],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        driver = start(
            [
                "driver",
                ",".join(nodes),
                "--clients",
                ",".join(map(str, clients)),
                "--duration",
                str(duration_s),
                "--samples",
                str(samples),
                *(["--rates", _rates_arg(rates)] if rates else []),
                *conf,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        budget = _READY_TIMEOUT_S + samples * 5.0 + len(clients) * (duration_s + 10.0)
        budget += len(rates) * (duration_s + _OPEN_DRAIN_S + 5.0)
        out, err = driver.communicate(timeout=budget)
        if driver.returncode != 0 or not out.strip():
            raise RuntimeError(f"pysyncobj driver exited {driver.returncode}: {err.strip()[-500:]}")
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return {
        "version": version,
        "setup": (
            "3 nodes, each its own process, on 127.0.0.1; in memory (PySyncObj's "
            "default: no journal, no dump file, no fsync); appendEntriesUseBatch="
            f"{batch}; the driver is a read-only 4th process whose commands go to the "
            "Raft leader"
        ),
        "append_entries_use_batch": batch,
        "ops": f"put, {VALUE_BYTES}-byte values, {KEYS} keys",
        "total_s": round(time.monotonic() - t0, 2),
        **result,
    }


# --- ratios ---------------------------------------------------------------------------------


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if not ours or not theirs:
        return None
    return round(ours / theirs, 3)


def add_ratios(pmmc: dict[str, Any], peers: dict[str, dict[str, Any]]) -> None:
    """Put ``ratio_vs_<peer>`` (pmmc-ray / peer) next to each pmmc-ray figure, in place.

    Latency ratios above 1 mean pmmc-ray is slower; throughput ratios below 1 mean it
    does less. Closed-loop runs are matched by operations in flight, open-loop runs by
    offered rate. A skipped or failed peer gets no ratios.
    """
    for name, peer in peers.items():
        if "skipped" in peer or "error" in peer:
            continue
        key = f"ratio_vs_{name}"
        seq, peer_seq = pmmc.get("sequential_put_ms"), peer.get("sequential_put_ms") or {}
        if seq:
            seq[key] = {q: _ratio(seq.get(q), peer_seq.get(q)) for q in ("p50", "p99")}
        by_clients = {r["clients"]: r for r in peer.get("workload", [])}
        runs = [(r["clients"], r) for r in pmmc.get("workload", [])]
        # Operations in flight from one process: against the peer with as many outstanding.
        runs += [(r["outstanding"], r) for r in pmmc.get("pipelined", [])]
        for n, run in runs:
            theirs = by_clients.get(n)
            if theirs is None:
                continue
            run[key] = {
                "throughput": _ratio(
                    run.get("throughput_ops_per_s"), theirs.get("throughput_ops_per_s")
                ),
                "latency_p50": _ratio(
                    (run.get("latency_ms") or {}).get("p50"), theirs["latency_ms"].get("p50")
                ),
            }
        # Open loop: against the peer's run at the same offered rate.
        by_rate = {r["offered_ops_per_s"]: r for r in peer.get("open_loop", [])}
        for run in pmmc.get("open_loop", []):
            theirs = by_rate.get(run["offered_ops_per_s"])
            if theirs is None:
                continue
            ours_lat, their_lat = run.get("latency_ms") or {}, theirs.get("latency_ms") or {}
            run[key] = {
                "throughput": _ratio(
                    run.get("committed_ops_per_s"), theirs.get("committed_ops_per_s")
                ),
                **{
                    f"latency_{q}": _ratio(ours_lat.get(q), their_lat.get(q))
                    for q in ("p50", "p99")
                },
            }


# --- the child processes --------------------------------------------------------------------


def _kv_class(batch: bool) -> type:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):
        """A replicated dict with one command, ``put``: every put goes through the log."""

        def __init__(self, me: str | None, others: list[str]) -> None:
            # In memory, no files (the default); only the batching switch is ours.
            super().__init__(me, others, SyncObjConf(appendEntriesUseBatch=batch))
            self.data: dict[str, str] = {}

        @replicated
        def put(self, key: str, value: str) -> None:
            self.data[key] = value

    return KV


def _node(me: str, others: list[str], batch: bool) -> None:
    """A voting member; runs until killed (or its parent is gone)."""
    parent = os.getppid()
    _kv_class(batch)(me, others)
    while os.getppid() == parent:
        time.sleep(0.5)


def _value(client: int, n: int) -> str:
    return f"{client:04d}{n:012d}"[-VALUE_BYTES:]


def _driver(
    nodes: list[str],
    clients: list[int],
    duration_s: float,
    samples: int,
    batch: bool,
    rates: list[tuple[float, int]] | None = None,
) -> None:
    from pysyncobj import FAIL_REASON

    kv = _kv_class(batch)(None, nodes)  # None: a read-only node, not a voter
    t0 = time.monotonic()
    # Ready: a leader is known and a put commits (a vote may still be under way).
    while True:
        if time.monotonic() - t0 > _READY_TIMEOUT_S:
            raise TimeoutError("no PySyncObj leader within 30 s")
        if kv._getLeader() is not None:
            try:
                kv.put("warm", "up", sync=True, timeout=2.0)
                break
            except Exception:
                pass
        time.sleep(0.05)
    ready_s = time.monotonic() - t0

    xs = []
    for i in range(samples):
        t = time.perf_counter()
        kv.put(f"k{i % KEYS}", _value(0, i), sync=True, timeout=5.0)
        xs.append((time.perf_counter() - t) * 1000)

    runs = []
    for n in clients:
        runs.append(_closed_loop(kv, n, duration_s, FAIL_REASON.SUCCESS))
    open_runs = [
        asyncio.run(_open_loop(kv, rate, pool, duration_s, FAIL_REASON.SUCCESS))
        for rate, pool in rates or []
    ]
    kv.destroy()
    print(
        json.dumps(
            {
                "ready_s": round(ready_s, 2),
                "sequential_put_ms": _percentiles(xs),
                "workload": runs,
                "open_loop": open_runs,
            }
        ),
        flush=True,
    )


class _PutFailed(Exception):
    """PySyncObj answered a put with a FAIL_REASON other than SUCCESS."""


async def _open_loop(
    kv: Any, rate: float, pool: int, duration_s: float, success: int
) -> dict[str, Any]:
    """Puts at ``rate`` per second on a fixed schedule, at most ``pool`` in flight.

    Each put's callback (on PySyncObj's tick thread) hands its result to this loop.
    A failed put (no leader, queue full...) is counted under its FAIL_REASON code.
    """
    loop = asyncio.get_running_loop()

    def settle(fut: asyncio.Future, err: int) -> None:
        if not fut.done():
            fut.set_result(err)

    async def op(client: int, i: int) -> None:
        fut = loop.create_future()

        def on_commit(_result: Any, err: int) -> None:
            try:
                loop.call_soon_threadsafe(settle, fut, err)
            except RuntimeError:
                pass  # the run is over and its loop closed: a late answer

        kv.put(f"k{(i * 7919) % KEYS}", _value(client, i), callback=on_commit)
        err = await fut
        if err != success:
            raise _PutFailed(err)

    def classify(e: BaseException) -> str:
        return f"fail_reason_{e.args[0]}" if isinstance(e, _PutFailed) else "error"

    out = await run_open_loop(
        op,
        rate=rate,
        duration_s=duration_s,
        clients=pool,
        classify=classify,
        drain_s=_OPEN_DRAIN_S,
    )
    return {**out, "ops": f"put, {VALUE_BYTES}-byte values"}


def _closed_loop(kv: Any, clients: int, duration_s: float, success: int) -> dict[str, Any]:
    """``clients`` puts outstanding: each commit's callback issues that client's next put.

    Callbacks run on PySyncObj's tick thread; a put that completes after the window is
    not counted, and failed puts (no leader, queue full) are counted and reissued.
    """
    lock = threading.Lock()
    lat: list[float] = []
    failed = 0
    stop = threading.Event()
    done = threading.Event()
    live = clients
    t_end = 0.0

    def issue(c: int, n: int) -> None:
        start = time.perf_counter()

        def on_commit(_result: Any, err: int) -> None:
            nonlocal failed, live
            now = time.perf_counter()
            with lock:
                if stop.is_set() or now > t_end:
                    live -= 1
                    if live == 0:
                        done.set()
                    return
                if err == success:
                    lat.append((now - start) * 1000)
                else:
                    failed += 1
            issue(c, n + 1)

        kv.put(f"k{(c * 7919 + n) % KEYS}", _value(c, n), callback=on_commit)

    t_start = time.perf_counter()
    t_end = t_start + duration_s
    for c in range(clients):
        issue(c, 0)
    time.sleep(duration_s)
    stop.set()
    done.wait(timeout=10.0)  # let the last puts land before the next run starts
    with lock:
        xs = list(lat)
        nfail = failed
    return {
        "clients": clients,
        "ops_ok": len(xs),
        "ops_failed": nfail,
        "throughput_ops_per_s": round(len(xs) / duration_s, 1),
        "latency_ms": _percentiles(xs),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pmmc_ray.runtime.bench_peers")
    sub = ap.add_subparsers(dest="role", required=True)
    p = sub.add_parser("node", help="one voting PySyncObj node (run by pysyncobj_bench)")
    p.add_argument("me")
    p.add_argument("others", nargs="+")
    p.add_argument("--batch", action="store_true")
    p = sub.add_parser("driver", help="the read-only node that measures (run by pysyncobj_bench)")
    p.add_argument("nodes", help="host:port,host:port,host:port")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=SEQUENTIAL_SAMPLES)
    p.add_argument("--rates", default="", help="open-loop runs: RATE:POOL,RATE:POOL")
    p.add_argument("--batch", action="store_true")
    p = sub.add_parser("bench", help="the whole measurement, printed as JSON")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rates", default="", help="open-loop runs: RATE:POOL,RATE:POOL")
    p.add_argument("--batch", action="store_true", help="PySyncObj appendEntriesUseBatch")
    args = ap.parse_args(argv)
    if args.role == "node":
        _node(args.me, args.others, args.batch)
    elif args.role == "driver":
        clients = [int(x) for x in args.clients.split(",")]
        _driver(
            args.nodes.split(","),
            clients,
            args.duration,
            args.samples,
            args.batch,
            _parse_rates(args.rates),
        )
    else:
        clients = [int(x) for x in args.clients.split(",")]
        r = pysyncobj_bench(
            clients, args.duration, batch=args.batch, rates=_parse_rates(args.rates)
        )
        print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
