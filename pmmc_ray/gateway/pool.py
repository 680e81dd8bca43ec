"""The gateway's backend: a pool of :class:`~pmmc_ray.runtime.AsyncClient` objects.

Why a pool. A paper client keeps one command in flight and the replicas remember the
last command of every client id, so concurrent HTTP requests need distinct clients.
A fresh client per request would work but would open a session (one more trip through
the log) per request and churn the replicated client table, whose least recently used
sessions are evicted; a pool reuses at most ``max_clients`` sessions. A request takes
an idle client (or makes one, up to the cap), and gives it back when done, whatever
the client said: a client whose command has an unknown outcome gives that command up
with its next one (it may still be performed, at most once, until the next one is),
and a client whose session expired has already moved to a new one. Dropping such a client instead would leave its
session in the table and open another for its replacement; under faults that churn
could evict the sessions of clients still in use. A client is dropped only when
something else went wrong (a bug, or the request was cancelled mid-command).

Availability. A background probe pings the replicas every ``probe_interval_s`` through
cached actor handles (looked up in a worker thread, never on the event loop, and looked
up again once an actor is gone for good), and re-reads the replica list every
``refresh_interval_s``. When the latest probe found none answering, requests get
:class:`Unavailable` at once (HTTP 503 with Retry-After) and nothing is sent; so do
requests whose new client could not open its session. A request that was sent and not
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
from ray.exceptions import ActorUnavailableError, RayActorError

from ..runtime.client import AsyncClient, SessionExpiredError, outcome_of
from ..runtime.config import load_app_class
from ..runtime.deployment import Deployment, connect
from ..runtime.mux import SubmitMux
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
        self._handles: dict[str, Any] = {}  # replica name -> actor handle
        self._mux = SubmitMux()  # one call per replica per loop turn for all requests
        self._lookups: dict[str, asyncio.Future] = {}  # name -> its lookup in a thread
        self.outcomes: Counter[str] = Counter()

    async def start(self, dep: Deployment | None = None) -> None:
        """Find the deployment (or use ``dep``) and start the replica probe (raises
        :class:`~pmmc_ray.runtime.NotDeployedError` if there is none)."""
        self.dep = dep or await asyncio.to_thread(connect, self.namespace)
        self._app = load_app_class(self.dep.config.app)()
        self._replicas = await asyncio.to_thread(self.dep.replica_names)
        self._slots = asyncio.Semaphore(self.max_clients)
        await self._probe()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    # --- Backend ------------------------------------------------------------------------

    def validate(self, op: Any) -> None:
        self._app.validate(op)

    async def execute(self, op: Any) -> Any:
        if self._alive == []:
            self.outcomes["unavailable"] += 1
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
            except BaseException as e:
                kind = outcome_of(e)
                self.outcomes[
                    "session_expired" if isinstance(e, SessionExpiredError) else kind
                ] += 1
                if kind == "error":
                    raise  # a bug or a cancellation, maybe mid-command: drop the client
                self._idle.append((gen, client))  # fit for its next command (see above)
                if kind == "invalid":
                    raise  # the HTTP layer answers 400, as for its own validation
                raise self._answer(kind, e) from None
            self.outcomes["ok"] += 1
            self._idle.append((gen, client))
            return result
        finally:
            self._slots.release()

    def _answer(self, kind: str, e: BaseException) -> Exception:
        """What the HTTP layer is told (its own words: the client's speak of retry())."""
        if kind == "rejected":
            return Rejected(str(e))
        if kind == "not_sent":
            return Unavailable(
                f"the gateway could not open a session with the replicas of "
                f"{self.namespace!r} within {self.op_timeout_s:g}s"
            )
        if isinstance(e, SessionExpiredError):
            return OutcomeUnknown(
                "the replicas evicted the session of the gateway's client (more than "
                "max_sessions other clients used the store since) before confirming it: it "
                "may or may not have been applied"
            )
        return OutcomeUnknown(
            f"no replica confirmed it within {self.op_timeout_s:g}s: it may or may not have "
            "been applied (and may still be)"
        )

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
            handles=self._handles,  # the probe's: no lookup on the event loop
            mux=self._mux,  # concurrent requests to a replica share one call
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
            # Follow reconfigurations: the newest configuration's replicas (a call to
            # every replica, so not at every probe).
            self._refreshed_at = now
            names = await asyncio.to_thread(self.dep.replica_names)
            if names != self._replicas:
                self._replicas, self._generation = names, self._generation + 1
        replies = await asyncio.gather(*(self._answers(n) for n in self._replicas))
        self._alive = [n for n, ok in zip(self._replicas, replies, strict=True) if ok]
        self._probed_at = time.monotonic()

    async def _answers(self, name: str) -> bool:
        try:
            h = await self._handle(name)
            return h is not None and await asyncio.wait_for(h.ping.remote(), 1.0) == "pong"
        except RayActorError as e:
            if not isinstance(e, ActorUnavailableError):  # gone for good (may be re-created)
                self._handles.pop(name, None)
            return False
        except Exception:
            return False

    async def _handle(self, name: str, timeout_s: float = 2.0) -> Any:
        """The actor handle of ``name``, or None (not found, or the lookup is slow).

        ``ray.get_actor`` blocks on the cluster's control store (GCS): it runs in a
        worker thread, one at a time per name, so a slow GCS delays the probe but never
        the event loop that serves requests.
        """
        h = self._handles.get(name)
        if h is not None:
            return h
        lookup = self._lookups.get(name)
        if lookup is None:
            lookup = asyncio.ensure_future(asyncio.to_thread(_get_actor, name, self.namespace))
            self._lookups[name] = lookup

            def done(f: asyncio.Future, name: str = name) -> None:
                self._lookups.pop(name, None)
                if not f.cancelled() and f.exception() is None and f.result() is not None:
                    self._handles.setdefault(name, f.result())

            lookup.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), timeout_s)
        except TimeoutError:
            return None  # still looking: not answering for now


def _get_actor(name: str, namespace: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _node_id() -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
