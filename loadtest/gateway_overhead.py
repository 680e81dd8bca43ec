"""What one HTTP request costs: the aiohttp gateway actor against Ray Serve, and both
against the direct Python client, on one local Ray, in one run.

    .venv/bin/python loadtest/gateway_overhead.py [--seconds 8] [--out results/gateway-overhead.json]

Measured for each way in:
  - a no-op request (the gateway's ``GET /v1/health``, which answers from memory; for
    Serve, a deployment that returns the same small JSON): latency one at a time and
    throughput with 32 requests in flight, plus the server-side CPU per request
    (gateway actor process; Serve's proxy and replica processes);
  - a put through the cluster: the direct ``AsyncClient`` (16 clients), the gateway,
    and a Serve deployment running the same client pool.
Ray Serve needs ``pip install 'ray[serve]==2.60.*'`` (not a dependency of pmmc-ray);
without it, its rows are skipped. The load generator (an aiohttp client) runs in this
process for every variant, so it costs each the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways  # noqa: E402
from pmmc_ray.ops.loadtest import free_port  # noqa: E402
from pmmc_ray.runtime import deploy  # noqa: E402
from pmmc_ray.runtime.deployment import start_local_ray, stop_ray  # noqa: E402


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            t = psutil.Process(p).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


async def _http_load(
    method: str, url: str, body: Any, concurrency: int, seconds: float, pids: list[int]
) -> dict[str, Any]:
    """Closed-loop HTTP load; latency percentiles, throughput, server CPU per request."""
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        for _ in range(20):  # warm up connections and handles
            async with s.request(method, url, json=body) as r:
                await r.read()
        cpu0, t0 = _cpu(pids), time.monotonic()
        stop = t0 + seconds
        n = 0

        async def worker(i: int) -> None:
            nonlocal errors, n
            while time.monotonic() < stop:
                b = body if body is None else {**body, "value": f"{i}-{n}"}
                t = time.perf_counter()
                async with s.request(method, url, json=b) as r:
                    await r.read()
                    if r.status >= 300:
                        errors += 1
                lat.append((time.perf_counter() - t) * 1000)
                n += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall, cpu = time.monotonic() - t0, _cpu(pids) - cpu0
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "per_s": round(len(lat) / wall, 1),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "server_cpu_ms_per_request": round(cpu / max(1, len(lat)) * 1000, 3) if pids else None,
    }


async def _direct_load(dep: Any, concurrency: int, seconds: float) -> dict[str, Any]:
    clients = [dep.async_client() for _ in range(concurrency)]
    for c in clients:
        await c.put("warm", "x")
    lat: list[float] = []
    stop = time.monotonic() + seconds
    t0 = time.monotonic()

    async def worker(i: int, c: Any) -> None:
        n = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            await c.put("k", f"{i}-{n}")
            lat.append((time.perf_counter() - t) * 1000)
            n += 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    wall = time.monotonic() - t0
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": 0,
        "per_s": round(len(lat) / wall, 1),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
    }


def _serve_app(namespace: str) -> Any:
    """A Ray Serve deployment answering the same two requests (None if no Serve)."""
    try:
        from ray import serve
        from starlette.requests import Request
        from starlette.responses import JSONResponse
    except ImportError:
        return None

    @serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
    class KVServe:
        def __init__(self, namespace: str) -> None:
            from pmmc_ray.gateway.pool import ClientPool

            self.pool = ClientPool(namespace)
            self.started = False

        async def __call__(self, request: Request) -> Any:
            from pmmc_ray.gateway.http import parse_kv

            if request.url.path.endswith("/health"):
                return JSONResponse({"status": "ok", "replicas_answering": ["replica-0"]})
            if not self.started:
                await self.pool.start()
                self.started = True
            op = parse_kv("put", await request.body())
            self.pool.validate(op)
            await self.pool.execute(op)
            return JSONResponse({"ok": True})

    return KVServe.bind(namespace)


def _serve_pids() -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and ("ProxyActor" in cmd or "ServeReplica" in cmd):
            out.append(p.pid)
    return out


async def _measure(args: argparse.Namespace, dep: Any, gw: dict, serve_url: str | None) -> dict:
    res: dict[str, Any] = {}
    put = {"key": "k", "value": "v"}
    gw_pid = [gw["pid"]]
    spids = _serve_pids() if serve_url else []
    # Alternate the variants in rounds: this machine is shared and noisy.
    for rnd in range(args.rounds):
        for name, method, url, body, c, pids in [
            ("noop_gateway", "GET", f"{gw['url']}/v1/health", None, 1, gw_pid),
            ("noop_serve", "GET", f"{serve_url}/v1/health", None, 1, spids),
            ("noop_gateway", "GET", f"{gw['url']}/v1/health", None, 32, gw_pid),
            ("noop_serve", "GET", f"{serve_url}/v1/health", None, 32, spids),
            ("put_gateway", "POST", f"{gw['url']}/v1/put", put, 1, gw_pid),
            ("put_serve", "POST", f"{serve_url}/v1/put", put, 1, spids),
            ("put_gateway", "POST", f"{gw['url']}/v1/put", put, 16, gw_pid),
            ("put_serve", "POST", f"{serve_url}/v1/put", put, 16, spids),
        ]:
            if "serve" in name and not serve_url:
                continue
            r = await _http_load(method, url, body, c, args.seconds, pids)
            res.setdefault(f"{name}_c{c}", []).append(r)
            print(rnd, name, json.dumps(r), flush=True)
        for c in (1, 16):
            r = await _direct_load(dep, c, args.seconds)
            res.setdefault(f"put_direct_c{c}", []).append(r)
            print(rnd, "put_direct", json.dumps(r), flush=True)
    # Medians over rounds.
    out = {}
    for k, runs in res.items():
        out[k] = {
            f: (statistics.median([r[f] for r in runs]) if runs[0][f] is not None else None)
            for f in ("per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
            if f in runs[0]
        }
        out[k]["rounds"] = runs
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every variant")
    p.add_argument("--out", default="results/gateway-overhead.json")
    args = p.parse_args()
    ns = f"overhead-{os.getpid()}"
    start_local_ray(ns, 2)
    data_dir = tempfile.mkdtemp(prefix="pmmc-overhead-")
    dep = None
    serve_url = None
    try:
        dep = deploy({"namespace": ns, "data_dir": data_dir})
        (gw,) = start_gateways(ns, GatewaySettings(port=0))
        app = _serve_app(ns)
        if app is not None:
            from ray import serve

            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve_url = f"http://127.0.0.1:{port}"
            serve.run(app, name="kv", route_prefix="/")
        res = asyncio.run(_measure(args, dep, gw, serve_url))
        res["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        res["load_average"] = os.getloadavg()
        res["serve"] = serve_url is not None
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(
            json.dumps(
                {
                    k: {f: v for f, v in r.items() if f != "rounds"}
                    for k, r in res.items()
                    if isinstance(r, dict)
                },
                indent=2,
            )
        )
        print(f"wrote {out}")
    finally:
        # Whatever happened: Serve, the gateway, the deployment and its data, then Ray.
        try:
            if serve_url:
                from ray import serve

                serve.shutdown()
            stop_gateways(ns)
            if dep is not None:
                dep.shutdown(delete_data=True)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            stop_ray()
    return 0


if __name__ == "__main__":
    sys.exit(main())
