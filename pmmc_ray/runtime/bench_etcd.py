"""etcd as a peer of ``pmmc-ray bench``, when an ``etcd`` binary is on PATH.

``etcd_bench`` starts 3 etcd members on 127.0.0.1 (free client and peer ports, one
data directory each in a new temporary directory, etcd's defaults otherwise: the WAL
is fsynced before a put is acknowledged) and drives them from this process over
etcd's HTTP/JSON gateway (``POST /v3/kv/put``, key and value base64) with aiohttp, one
HTTP connection per operation in flight. Every put goes to the member that is the Raft
leader (found with ``POST /v3/maintenance/status``), as a pmmc-ray client sticks to
one replica and PySyncObj's driver sends to its leader. It measures

  - sequential ``put`` latency, one put in flight (p50, p99);
  - committed puts/s and latency in a closed loop with N puts in flight;
  - open loop (``rates``): puts started at a fixed rate on a pool of N connections
    (:mod:`.openloop`, latency from each put's scheduled start).

The driver is Python (aiohttp, JSON, base64, one event loop), so at high rates it can
be what limits the figures, not etcd. The members this started are stopped by pid
(SIGKILL: their data is thrown away) and the temporary directory removed, whatever
happens. Without an ``etcd`` binary the result says it was skipped. Nothing here
imports Ray.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from .bench_peers import KEYS, SEQUENTIAL_SAMPLES, _free_ports, _percentiles
from .openloop import UNKNOWN, run_open_loop

PEER = "etcd"
NOT_FOUND = {
    "skipped": "not found on PATH (install etcd, e.g. apt-get install etcd-server; see README)"
}
MEMBERS = 3
READY_TIMEOUT_S = 30.0
PUT_TIMEOUT_S = 10.0
_OPEN_DRAIN_S = 15.0


class EtcdError(Exception):
    """The gateway answered a put with an HTTP error (the put was not applied)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _value(client: int, n: int, value_bytes: int) -> str:
    """A ``value_bytes``-byte value naming the client and its put (its tail if short)."""
    return f"{client:04x}{n:012x}".ljust(value_bytes, ".")[-value_bytes:]


def error_kind(e: BaseException) -> str:
    """An open-loop outcome for a failed put: a timeout or a broken connection leaves
    the put's outcome unknown; an HTTP error is ``http_<status>``."""
    if isinstance(e, EtcdError):
        return f"http_{e.status}"
    if isinstance(e, TimeoutError | aiohttp.ClientError | OSError):
        return UNKNOWN
    return "error"


async def _put(session: aiohttp.ClientSession, url: str, key: str, value: str) -> None:
    body = json.dumps({"key": _b64(key), "value": _b64(value)})
    async with session.post(
        url,
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=PUT_TIMEOUT_S),
    ) as r:
        data = await r.read()
        if r.status != 200:
            raise EtcdError(r.status, data)


async def _leader(session: aiohttp.ClientSession, endpoints: list[str]) -> str | None:
    """The endpoint of the member that says it is the leader, if one does."""
    for ep in endpoints:
        try:
            async with session.post(
                f"{ep}/v3/maintenance/status",
                data="{}",
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as r:
                if r.status != 200:
                    continue
                st = await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            continue
        me, leader = str(st.get("header", {}).get("member_id", "")), str(st.get("leader", ""))
        if me and me != "0" and me == leader:
            return ep
    return None


async def _wait_ready(
    session: aiohttp.ClientSession,
    endpoints: list[str],
    timeout_s: float,
    alive: Callable[[], None] | None,
) -> str:
    """Wait until a member is the leader and a put through it commits; its endpoint."""
    deadline = time.monotonic() + timeout_s
    last = "no leader"
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        ep = await _leader(session, endpoints)
        if ep is not None:
            try:
                await _put(session, f"{ep}/v3/kv/put", "warm", "up")
                return ep
            except (TimeoutError, EtcdError, aiohttp.ClientError) as e:
                last = f"{type(e).__name__}: {e}"
        await asyncio.sleep(0.1)
    raise TimeoutError(f"etcd not ready within {timeout_s:g} s ({last})")


async def _closed_loop(
    session: aiohttp.ClientSession, url: str, n: int, duration_s: float, value_bytes: int
) -> dict[str, Any]:
    """``n`` puts in flight, each one's successor issued when it returns."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: Counter[str] = Counter()
    t0 = loop.time()
    stop_at = t0 + duration_s

    async def worker(c: int) -> None:
        j = 0
        while loop.time() < stop_at:
            j += 1
            t = loop.time()
            try:
                await _put(session, url, f"k{(c * 7919 + j) % KEYS}", _value(c, j, value_bytes))
            except Exception as e:
                errors[error_kind(e)] += 1
                continue
            lat.append((loop.time() - t) * 1000)

    await asyncio.gather(*(worker(c) for c in range(n)))
    elapsed = loop.time() - t0
    return {
        "clients": n,
        "ops_ok": len(lat),
        "errors": dict(sorted(errors.items())),
        "throughput_ops_per_s": round(len(lat) / elapsed, 1),
        "latency_ms": _percentiles(lat),
    }


async def _open_loop(
    session: aiohttp.ClientSession,
    url: str,
    rate: float,
    pool: int,
    duration_s: float,
    value_bytes: int,
) -> dict[str, Any]:
    async def op(client: int, i: int) -> None:
        await _put(session, url, f"k{(i * 7919) % KEYS}", _value(client, i, value_bytes))

    out = await run_open_loop(
        op,
        rate=rate,
        duration_s=duration_s,
        clients=pool,
        classify=error_kind,
        drain_s=_OPEN_DRAIN_S,
    )
    return {**out, "ops": f"put, {value_bytes}-byte values"}


async def drive(
    endpoints: list[str],
    clients: list[int],
    duration_s: float,
    *,
    rates: list[tuple[float, int]] | None = None,
    value_bytes: int = 16,
    samples: int = SEQUENTIAL_SAMPLES,
    ready_timeout_s: float = READY_TIMEOUT_S,
    alive: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Measure the etcd cluster at ``endpoints`` (``http://host:port``). ``alive`` is
    called while waiting for it to be ready, and may raise (a member exited)."""
    # No connection limit: the runs themselves bound what is in flight.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        ep = await _wait_ready(session, endpoints, ready_timeout_s, alive)
        ready_s = time.monotonic() - t0
        url = f"{ep}/v3/kv/put"
        xs = []
        for i in range(samples):
            t = time.perf_counter()
            await _put(session, url, f"k{i % KEYS}", _value(0, i, value_bytes))
            xs.append((time.perf_counter() - t) * 1000)
        runs = [await _closed_loop(session, url, n, duration_s, value_bytes) for n in clients]
        open_runs = [
            await _open_loop(session, url, rate, pool, duration_s, value_bytes)
            for rate, pool in rates or []
        ]
    return {
        "ready_s": round(ready_s, 2),
        "leader": ep,
        "sequential_put_ms": _percentiles(xs),
        "workload": runs,
        "open_loop": open_runs,
    }


# --- the members ------------------------------------------------------------------------------


def find_etcd() -> str | None:
    return shutil.which("etcd")


def etcd_version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return None


def _start_members(
    binary: str, root: Path, procs: list[subprocess.Popen], spawned: list[int] | None
) -> list[str]:
    """Start the members (appended to ``procs`` as they start); their client URLs."""
    ports = _free_ports(2 * MEMBERS)
    client = [f"http://127.0.0.1:{p}" for p in ports[:MEMBERS]]
    peer = [f"http://127.0.0.1:{p}" for p in ports[MEMBERS:]]
    cluster = ",".join(f"m{i}={peer[i]}" for i in range(MEMBERS))
    # etcd refuses a flag that an ETCD_* variable also sets: only the flags count here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    for i in range(MEMBERS):
        log = open(root / f"m{i}.log", "wb")  # closed below: the child has its own copy
        try:
            p = subprocess.Popen(
                [
                    binary,
                    "--name",
                    f"m{i}",
                    "--data-dir",
                    str(root / f"m{i}.etcd"),
                    "--listen-client-urls",
                    client[i],
                    "--advertise-client-urls",
                    client[i],
                    "--listen-peer-urls",
                    peer[i],
                    "--initial-advertise-peer-urls",
                    peer[i],
                    "--initial-cluster",
                    cluster,
                    "--initial-cluster-token",
                    f"pmmc-bench-{os.getpid()}",
                    "--initial-cluster-state",
                    "new",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        procs.append(p)
        if spawned is not None:
            spawned.append(p.pid)
    return client


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each member this started and reap it. Not SIGTERM: their data is thrown
    away, and a leader stopped by SIGTERM first tries to hand its leadership to members
    that may be stopping too (about 5 s here)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def _log_tail(root: Path, n: int = 400) -> str:
    tails = []
    for log in sorted(root.glob("m*.log")):
        text = log.read_text(errors="replace").strip()
        if text:
            tails.append(f"{log.stem}: {text[-n:]}")
    return " | ".join(tails)


def etcd_bench(
    clients: list[int],
    duration_s: float,
    *,
    rates: list[tuple[float, int]] | None = None,
    value_bytes: int = 16,
    samples: int = SEQUENTIAL_SAMPLES,
    binary: str | None = None,
    spawned: list[int] | None = None,
    tmp_parent: str | None = None,
) -> dict[str, Any]:
    """Start 3 etcd members, measure them (:func:`drive`), stop them, remove their data.

    ``binary`` defaults to ``etcd`` on PATH; without one, returns ``NOT_FOUND``.
    ``spawned``, if given, receives the pid of each member started; ``tmp_parent`` is
    where the temporary directory is made (default: the system's).
    """
    binary = binary or find_etcd()
    if binary is None:
        return dict(NOT_FOUND)
    if not clients or min(clients) < 1 or duration_s <= 0 or samples < 1 or value_bytes < 1:
        raise ValueError(
            "clients must be counts >= 1, duration_s > 0, samples and value_bytes >= 1"
        )
    rates = list(rates or [])
    if any(r <= 0 or n < 1 for r, n in rates):
        raise ValueError("rates must be > 0 with pools >= 1")
    version = etcd_version(binary)
    root = Path(tempfile.mkdtemp(prefix="pmmc-etcd-bench-", dir=tmp_parent))
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()

    def alive() -> None:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"etcd member pid {p.pid} exited {p.returncode}: {_log_tail(root)}"
                )

    try:
        endpoints = _start_members(binary, root, procs, spawned)
        try:
            result = asyncio.run(
                drive(
                    endpoints,
                    clients,
                    duration_s,
                    rates=rates,
                    value_bytes=value_bytes,
                    samples=samples,
                    alive=alive,
                )
            )
        except TimeoutError as e:
            raise TimeoutError(f"{e}; logs: {_log_tail(root)}") from e
        except (EtcdError, aiohttp.ClientError) as e:
            # A failed sequential put or a broken connection: the caller reports it.
            raise RuntimeError(f"{type(e).__name__}: {e}; logs: {_log_tail(root)}") from e
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "version": version,
        "binary": binary,
        "setup": (
            f"{MEMBERS} members, each its own process, on 127.0.0.1; data dirs in a temporary "
            "directory, etcd's defaults (the WAL fsynced before a put is acknowledged); driven "
            "from the bench process over the HTTP/JSON gateway (POST /v3/kv/put) with aiohttp, "
            "one connection per put in flight, every put sent to the leader"
        ),
        "ops": f"put, {value_bytes}-byte values, {KEYS} keys",
        "total_s": round(time.monotonic() - t0, 2),
        **result,
    }
