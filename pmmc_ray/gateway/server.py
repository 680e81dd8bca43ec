"""The gateway on Ray: one HTTP server actor per node, and functions to manage them.

Each :class:`GatewayActor` runs an aiohttp server (:mod:`.http`) with a
:class:`~.pool.ClientPool` on its own asyncio event loop, in a thread of the actor
process; Ray method calls (``info``, ``stats``) stay free for control. It binds to
``host`` (default 127.0.0.1: only programs on that node can reach it; ``node``: each
node's own address) and ``port``, the same on every node, and serves no request of a
web page (:class:`~.http.AccessPolicy`).
Gateways are detached, restart without limit (a restarted one binds again), take no
CPU reservation, and live in the namespace ``<deployment namespace>--gateway``, so they
never count as members of the deployment itself. One runs on every alive node (hard
node affinity), so a Locust worker or any client on a node talks to its local gateway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import ray
from aiohttp import web
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..runtime.config import KV_NAMESPACE
from ..runtime.deployment import connect
from .http import API_KEY, DEFAULT_MAX_BODY_BYTES, AccessPolicy, make_app
from .pool import ClientPool

__all__ = [
    "NODE_ADDRESS",
    "GatewayActor",
    "GatewaySettings",
    "gateway_namespace",
    "list_gateways",
    "local_gateway_url",
    "start_gateways",
    "stop_gateways",
]


#: ``GatewaySettings.host`` meaning "this node's own address" (each node binds its own)
NODE_ADDRESS = "node"


@dataclass(frozen=True)
class GatewaySettings:
    """How a gateway listens, whom it serves, and how its client pool behaves."""

    host: str = "127.0.0.1"
    """Address to bind on every node: a loopback or wildcard address, or ``"node"``
    (each node's own address). A specific address exists on one node only."""
    port: int = 8080
    """The same on every node; 0: any free port (each gateway reports the one it got)."""
    max_clients: int = 256
    op_timeout_s: float = 10.0
    attempt_timeout_s: float = 1.5
    queue_timeout_s: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    allow_hosts: tuple[str, ...] = ()
    """Host names (besides loopback names and the bind address) requests may name."""
    allow_origins: tuple[str, ...] = ()
    """Origins of web pages that may use the gateway (none by default)."""
    require_token: bool = False
    """Require the deployment's bearer token even on loopback (always required when
    the gateway listens beyond loopback)."""

    def __post_init__(self) -> None:
        # Through Ray (asdict) the tuples arrive as lists.
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        object.__setattr__(self, "allow_origins", tuple(self.allow_origins))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.max_clients < 1 or self.op_timeout_s <= 0 or self.max_body_bytes < 1024:
            raise ValueError("max_clients >= 1, op_timeout_s > 0 and max_body_bytes >= 1024")

    def needs_token(self) -> bool:
        """True unless only programs on the node can reach the gateway."""
        if self.require_token:
            return True
        if self.host in ("localhost",):
            return False
        try:
            return not ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return True  # "node", or a name: reachable from other machines

    def single_node_address(self) -> str | None:
        """``host`` if it is an address that only one node can bind, else None."""
        try:
            ip = ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return None  # "node", or a name
        return None if ip.is_loopback or ip.is_unspecified else self.host


def gateway_token(namespace: str, create: bool = False) -> str | None:
    """The bearer token of deployment ``namespace``'s gateways, kept in the cluster's
    key-value store (which Ray's token authentication protects); ``create`` makes one
    if there is none. None if there is none."""
    key = f"gateway-token/{namespace}"
    raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    if raw is None and create:
        internal_kv._internal_kv_put(
            key, secrets.token_urlsafe(32).encode(), overwrite=False, namespace=KV_NAMESPACE
        )
        raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    return None if raw is None else raw.decode()


def gateway_namespace(namespace: str) -> str:
    """The Ray namespace holding the gateways of deployment ``namespace``."""
    return f"{namespace}--gateway"


class _Server:
    """The asyncio side of a gateway: the client pool and the aiohttp site."""

    def __init__(self, namespace: str, settings: GatewaySettings) -> None:
        self.namespace, self.settings = namespace, settings
        self.host = settings.host
        if settings.host == NODE_ADDRESS:
            self.host = ray.util.get_node_ip_address()
        self.pool: ClientPool | None = None
        self.app: web.Application | None = None
        self.port: int | None = None

    async def start(self) -> None:
        s = self.settings
        node = (ray.get_runtime_context().get_node_id() or "node")[:8]
        self.pool = ClientPool(
            self.namespace,
            max_clients=s.max_clients,
            op_timeout_s=s.op_timeout_s,
            attempt_timeout_s=s.attempt_timeout_s,
            queue_timeout_s=s.queue_timeout_s,
            client_prefix=f"gw-{node}-{os.getpid()}",
        )
        await self.pool.start()
        allowed = s.allow_hosts
        if self.host in ("0.0.0.0", "::", ""):  # reached at the node's address, at least
            allowed = (*allowed, ray.util.get_node_ip_address(), socket.gethostname())
        token = gateway_token(self.namespace) if s.needs_token() else None
        policy = AccessPolicy(self.host, allowed, s.allow_origins, token)
        self.app = make_app(self.pool, max_body_bytes=s.max_body_bytes, policy=policy)
        # No access log: a line per request would cost more than the request.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, s.port, backlog=1024, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else s.port

    async def stats(self) -> dict[str, Any]:
        assert self.app is not None and self.pool is not None
        api = self.app[API_KEY]
        return {
            "in_flight": api.in_flight,
            "responses": dict(api.responses),
            **(await self.pool.status()),
        }


class GatewayActor:
    """One node's HTTP gateway (see the module docstring).

    A threaded actor, not an asyncio one: the HTTP server runs on its own event loop
    in a thread, and these few control methods never wait on that loop for long.
    """

    def __init__(self, namespace: str, settings: dict[str, Any]) -> None:
        self.namespace = namespace
        self.settings = GatewaySettings(**settings)
        self.error: str | None = None
        self.server = _Server(namespace, self.settings)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._serve, name="pmmc-gateway", daemon=True).start()
        if not self._ready.wait(120):
            self.error = "the HTTP server did not start within 120 s"

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self.server.start())
        except BaseException as e:
            self.error = f"{type(e).__name__}: {e}"
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()

    def info(self) -> dict[str, Any]:
        """Where this gateway listens (``error`` set if it could not start)."""
        ctx = ray.get_runtime_context()
        host, port = self.server.host, self.server.port
        url_host = ray.util.get_node_ip_address() if host in ("0.0.0.0", "::", "") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        return {
            "namespace": self.namespace,
            "node_id": ctx.get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "host": host,
            "port": port,
            "url": None if self.error or port is None else f"http://{url_host}:{port}",
            "error": self.error,
            "reconstructed": ctx.was_current_actor_reconstructed,
            "settings": asdict(self.settings),
        }

    def stats(self) -> dict[str, Any]:
        """Counters of the HTTP layer and the pool (as in ``GET /v1/status``)."""
        if self.loop is None or self.error is not None:
            return {"error": self.error or "not started"}
        return asyncio.run_coroutine_threadsafe(self.server.stats(), self.loop).result(10)


_GatewayActor = ray.remote(num_cpus=0)(GatewayActor)


def _alive_node_ids() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


def _actor_name(node_id: str) -> str:
    return f"gateway-{node_id[:12]}"


def start_gateways(
    namespace: str,
    settings: GatewaySettings | None = None,
    *,
    address: str | None = None,
    nodes: list[str] | None = None,
    timeout_s: float = 120.0,
) -> list[dict[str, Any]]:
    """Start a gateway on every alive node (or ``nodes``) for deployment ``namespace``.

    Connects to Ray (``address``, default auto) if needed; raises
    :class:`~pmmc_ray.runtime.NotDeployedError` if there is no such deployment, and
    RuntimeError if one cannot listen, for example because the port is taken. Healthy
    gateways already running are kept (with their settings); one that reports an error
    or does not answer is replaced. Whatever goes wrong, the gateways this call created
    are removed again. Returns each gateway's :meth:`GatewayActor.info`.
    """
    connect(namespace, address=address)
    settings = settings or GatewaySettings()
    gw_ns = gateway_namespace(namespace)
    node_ids = nodes or _alive_node_ids()
    fixed = settings.single_node_address()
    if fixed is not None and len(node_ids) > 1:
        raise ValueError(
            f"--host {fixed} is an address of one node, but there are {len(node_ids)} nodes "
            "and each needs a gateway: use --host node (each node's own address) or 0.0.0.0"
        )
    if settings.needs_token():
        gateway_token(namespace, create=True)  # before any gateway needs it
    created: dict[str, Any] = {}
    try:
        handles: dict[str, Any] = {}
        for node in node_ids:
            name = _actor_name(node)
            old = _usable_gateway(name, gw_ns, timeout_s)
            if old is not None:
                handles[name] = old
                continue
            h = _GatewayActor.options(
                name=name,
                namespace=gw_ns,
                lifetime="detached",
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=4,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(namespace, asdict(settings))
            handles[name] = created[name] = h
        infos = dict(
            zip(
                handles,
                ray.get([h.info.remote() for h in handles.values()], timeout=timeout_s),
                strict=True,
            )
        )
        failed = {n: i["error"] for n, i in infos.items() if i["error"]}
        if failed:
            raise RuntimeError(f"gateway(s) could not start: {failed}")
    except BaseException:
        # Detached actors outlive this process: never leave one behind holding a port.
        for h in created.values():
            _kill(h)
        raise
    return [infos[n] for n in sorted(infos)]


def _usable_gateway(name: str, gw_ns: str, timeout_s: float) -> Any:
    """The running gateway ``name`` if it serves; None if there is none. One that
    reports an error (it could not listen) or does not answer is removed first, so a
    new one can take its name."""
    try:
        h = ray.get_actor(name, namespace=gw_ns)
    except ValueError:
        return None
    try:
        if ray.get(h.info.remote(), timeout=timeout_s)["error"] is None:
            return h
    except Exception:
        pass  # dead, or stuck: replace it
    _kill(h)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # ray.kill is asynchronous; the name frees later
        try:
            ray.get_actor(name, namespace=gw_ns)
        except ValueError:
            return None
        time.sleep(0.1)
    raise RuntimeError(
        f"the broken gateway {gw_ns}/{name} did not go away within {timeout_s:g}s; "
        "run `pmmc-ray gateway stop` and start again"
    )


def _kill(h: Any) -> None:
    try:
        ray.kill(h, no_restart=True)
    except Exception:
        pass  # already gone


def _gateway_handles(namespace: str) -> dict[str, Any]:
    gw_ns = gateway_namespace(namespace)
    names = sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == gw_ns and a["name"].startswith("gateway-")
    )
    out = {}
    for n in names:
        try:
            out[n] = ray.get_actor(n, namespace=gw_ns)
        except ValueError:
            pass
    return out


def list_gateways(
    namespace: str, *, timeout_s: float = 10.0, with_stats: bool = False
) -> list[dict[str, Any]]:
    """``info()`` (and with ``with_stats`` its ``stats()``) of every gateway of
    ``namespace`` (Ray must be initialized)."""
    out = []
    for name, h in _gateway_handles(namespace).items():
        try:
            info = ray.get(h.info.remote(), timeout=timeout_s)
            if with_stats:
                info["stats"] = ray.get(h.stats.remote(), timeout=timeout_s)
            out.append(info)
        except Exception as e:
            out.append({"name": name, "url": None, "error": f"{type(e).__name__}: {e}"[:300]})
    return out


def local_gateway_url(namespace: str) -> str | None:
    """The URL of the gateway on this process's node, if one is running."""
    here = ray.get_runtime_context().get_node_id()
    for info in list_gateways(namespace):
        if info.get("node_id") == here and info.get("url"):
            return info["url"]
    return None


def stop_gateways(namespace: str) -> int:
    """Kill every gateway of ``namespace`` for good; returns how many there were."""
    handles = _gateway_handles(namespace)
    for h in handles.values():
        _kill(h)
    return len(handles)
