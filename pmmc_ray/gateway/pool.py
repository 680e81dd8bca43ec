"""The gateway's backend: a pool of :class:`~pmmc_ray.runtime.AsyncClient` objects.

Why a pool. A paper client keeps one command in flight and the replicas remember the
last command of every client id, so concurrent HTTP requests need distinct clients.
A fresh client per request would work but would open a session (one more trip through
the log) per request and churn the replicated client table, whose least recently used
sessions are evicted; a pool reuses at most ``max_clients`` sessions. A request
takes an idle client (or makes one, up to the cap), and gives it back when done. A
client whose command ended with an unknown outcome is dropped, not reused: its command
may still be decided later, and the next command is better off with a clean id.

Availability. A background probe pings the replicas every ``probe_interval_s``
(and re-reads the replica list every ``refresh_interval_s``). When
the latest probe found none answering, requests get :class:`Unavailable` at once
(HTTP 503 with Retry-After) and nothing is sent. A request that was sent and not
confirmed before ``op_timeout_s`` is :class:`OutcomeUnknown` (HTTP 504).

The replica list comes from the deployment (:func:`pmmc_ray.runtime.connect`) and is
refreshed, so clients created after a reconfiguration use the new
replicas; idle clients of an older list are dropped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, deque
from typing import Any

import ray

from ..runtime.client import AsyncClient, OperationRejected, OutcomeUnknownError
from ..runtime.config import load_app_class
from ..runtime.deployment import Deployment, connect
from .http import OutcomeUnknown, Overloaded, Rejected, Unavailable

__all__ = ["ClientPool"]


class ClientPool:
    """Backend of :func:`pmmc_ray.gateway.http.make_app` on a live deployment.

    Create it, then ``await start()`` on the event loop that will serve requests.
    """

    def __init__(
        self,
        namespace: str,
        *,
        max_clients: int = 256,
        op_timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        queue_timeout_s: float = 5.0,
        probe_interval_s: float = 1.0,
        refresh_interval_s: float = 10.0,
        client_prefix: str = "gw",
    ) -> None:
        if max_clients < 1 or op_timeout_s <= 0 or queue_timeout_s <= 0:
            raise ValueError("max_clients must be >= 1 and timeouts > 0")
        self.namespace = namespace
        self.max_clients = max_clients
        self.op_timeout_s = op_timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.probe_interval_s = probe_interval_s
        self.refresh_interval_s = refresh_interval_s
        self._refreshed_at = time.monotonic()
        self.client_prefix = client_prefix
        self.dep: Deployment | None = None
        self._app: Any = None
        self._replicas: list[str] = []
        self._generation = 0
        self._idle: deque[tuple[int, AsyncClient]] = deque()
        self._slots: asyncio.Semaphore | None = None
        self._created = 0
        self._alive: list[str] | None = None  # None: not probed yet
        self._probed_at: float | None = None
        self._probe_task: asyncio.Task | None = None
        self.outcomes: Counter[str] = Counter()

    async def start(self) -> None:
        """Find the deployment and start the replica probe (raises if not deployed)."""
        self.dep = await asyncio.to_thread(connect, self.namespace)
        self._app = load_app_class(self.dep.config.app)()
        self._replicas = await asyncio.to_thread(self.dep.replica_names)
        self._slots = asyncio.Semaphore(self.max_clients)
        await self._probe()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()

    # --- Backend ------------------------------------------------------------------------

    def validate(self, op: Any) -> None:
        self._app.validate(op)

    async def execute(self, op: Any) -> Any:
        if self._alive == []:
            raise Unavailable(f"no replica of {self.namespace!r} answered the latest probe")
        assert self._slots is not None, "start() first"
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            self.outcomes["overloaded"] += 1
            raise Overloaded(
                f"all {self.max_clients} clients of the gateway stayed busy for "
                f"{self.queue_timeout_s:g}s"
            ) from None
        try:
            gen, client = self._take()
            try:
                result = await client.execute(op)
            except OutcomeUnknownError as e:
                self.outcomes["outcome_unknown"] += 1
                raise OutcomeUnknown(str(e)) from None  # the client is dropped
            except OperationRejected as e:
                self.outcomes["rejected"] += 1
                self._idle.append((gen, client))
                raise Rejected(str(e)) from None
            self.outcomes["ok"] += 1
            self._idle.append((gen, client))
            return result
        finally:
            self._slots.release()

    async def health(self) -> tuple[bool, dict[str, Any]]:
        details = {
            "namespace": self.namespace,
            "replicas": list(self._replicas),
            "replicas_answering": list(self._alive or []),
        }
        return self._alive != [], details

    async def status(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "node_id": _node_id(),
            "pid": os.getpid(),
            "replicas": list(self._replicas),
            "replicas_answering": self._alive,
            "probed_s_ago": (
                None if self._probed_at is None else round(time.monotonic() - self._probed_at, 2)
            ),
            "pool": {
                "max_clients": self.max_clients,
                "created": self._created,
                "idle": len(self._idle),
                "op_timeout_s": self.op_timeout_s,
            },
            "outcomes": dict(sorted(self.outcomes.items())),
        }

    # --- internals ----------------------------------------------------------------------------

    def _take(self) -> tuple[int, AsyncClient]:
        while self._idle:
            gen, client = self._idle.pop()  # the most recently used: warm handles
            if gen == self._generation:
                return gen, client
        assert self.dep is not None
        self._created += 1
        client = AsyncClient(
            self.dep.config,
            timeout_s=self.op_timeout_s,
            attempt_timeout_s=self.attempt_timeout_s,
            client_id=f"{self.client_prefix}-{self._created}",
            replicas=list(self._replicas),
        )
        return self._generation, client

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe()
            except Exception:  # a failed probe must not end probing
                pass

    async def _probe(self) -> None:
        assert self.dep is not None
        now = time.monotonic()
        if self.dep.members and now - self._refreshed_at >= self.refresh_interval_s:
            # Follow reconfigurations: the newest configuration's replicas. (Replica
            # status hashes the whole state, so not at every probe.)
            self._refreshed_at = now
            names = await asyncio.to_thread(self.dep.replica_names)
            if names != self._replicas:
                self._replicas, self._generation = names, self._generation + 1

        async def answers(name: str) -> bool:
            try:
                h = ray.get_actor(name, namespace=self.namespace)
                return await asyncio.wait_for(h.ping.remote(), 1.0) == "pong"
            except Exception:
                return False

        replies = await asyncio.gather(*(answers(n) for n in self._replicas))
        self._alive = [n for n, ok in zip(self._replicas, replies, strict=True) if ok]
        self._probed_at = time.monotonic()


def _node_id() -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
