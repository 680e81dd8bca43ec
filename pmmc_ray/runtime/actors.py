"""Ray actors that host the core's roles: the Ray interpreter of the core's effects.

Theory of operation. Each actor owns one pure role from :mod:`pmmc_ray.core` and does
exactly what the simulator (:mod:`pmmc_ray.sim.world`) does with it: construct it (or
rebuild it with ``recover`` after a restart), call ``start(now)``, then
``handle(input, now)`` for every delivered message and every fired timer, and execute
the returned effects in order. The actor makes no protocol decision.

All actors are asyncio actors: methods, timer callbacks and delayed sends all run on
one event loop, and a step never awaits in the middle, so the role is never entered
twice at once.

A *step* here is one call of :meth:`_Host.deliver` (a batch of messages from one
peer), one timer, or one client request. Its effects are executed as one unit:

1. every :class:`Persist` record of the step is appended to the actor's SQLite log in
   one transaction, and the commit (fsync) returns, *before* anything else happens.
   An acceptor must never answer a p1b/p2b for state that is not yet durable
   (``pmmc_ray.core.messages``). Persisting several inputs' records together, before
   any of their sends, only makes records durable earlier, which is always safe.
2. Sends are grouped by destination: one fire-and-forget ``deliver`` call per peer,
   carrying the list of messages (batching is worth two orders of magnitude on Ray).
   A peer that cannot be looked up (not created yet, dead) gets nothing: the
   protocol retransmits.
3. Timers are set (a timer of the same name replaces the pending one), client
   replies resolve the waiting :meth:`ReplicaActor.submit` calls.

Restarts: Ray re-runs the constructor, and every role reloads its records: an acceptor
its promises and pvalues, a leader its ballot identity and rounds, a replica its last
checkpoint and the decided slots after it. Without its storage, an acceptor refuses to
take part (it must be replaced by reconfiguration), a leader takes a fresh ballot
identity, and a replica recovers its state from a peer (see :class:`_Host`). Storage
that belongs to another deployment, is locked by another live process or is in a
format this version cannot read is refused, never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import pickle
import random
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.experimental import internal_kv

from ..core import (
    Acceptor,
    ClientReply,
    Command,
    Commander,
    Config,
    Leader,
    Persist,
    ProtocolViolation,
    Replica,
    Request,
    Requests,
    Response,
    Scout,
    Send,
    SetTimer,
    Timer,
)
from ..core.ids import commander_of, scout_of
from .config import KV_NAMESPACE, DeploymentConfig, load_app_class
from .dataplane import DataPlane, new_secret, secret_key
from .storage import FileLock, RecordLog, StorageError, lock_path, remove_log, storage_path

__all__ = [
    "AcceptorActor",
    "CommanderActor",
    "LeaderActor",
    "ReplicaActor",
    "ScoutActor",
    "SubmitRefused",
    "SubmitTimeout",
]

log = logging.getLogger("pmmc_ray.runtime")

STORAGE_LOST = "storage lost: replace this acceptor by reconfiguration"


def _storage_lost_advice(name: str, namespace: str) -> str:
    return (
        f"{STORAGE_LOST} (it must never vote again): "
        f"pmmc-ray replace {name} --namespace {namespace}"
    )


INJECT_BUG_ENV = "PMMC_RAY_INJECT_BUG"
INJECTABLE_BUGS = ("acceptor-no-persist",)
"""TEST ONLY. Bugs the actor host injects on purpose when the environment variable
``PMMC_RAY_INJECT_BUG`` holds exactly one of these names, so that a test can show the
chaos checks catch a broken build (``tests/ray/test_chaos.py``). Never set it for a real
deployment: ``acceptor-no-persist`` makes acceptors skip their durable records, so an
acceptor that restarts has forgotten its promises and votes (paper 4.3), which can lose
decided values. Every actor that sees it logs it at CRITICAL and reports it in
``status()["injected_bug"]``; any other value is refused with an error in the log."""


def _injected_bug(name: str) -> str | None:
    raw = os.environ.get(INJECT_BUG_ENV)
    if not raw:
        return None
    if raw not in INJECTABLE_BUGS:
        log.error("%s: ignoring %s=%r: not one of %s", name, INJECT_BUG_ENV, raw, INJECTABLE_BUGS)
        return None
    log.critical(
        "%s: INJECTED BUG %r from %s: TEST ONLY, this deployment is NOT safe",
        name,
        raw,
        INJECT_BUG_ENV,
    )
    return raw


_LOOKUP_RETRY_S = 0.5
_CHECKPOINT_LOG_BYTES = 4 << 20
"""A replica checkpoints once its log since the last checkpoint holds more than this
and more than twice that checkpoint."""
_LOCK_WAIT_S = 10.0
"""How long a starting actor waits for its storage lock: a killed predecessor on the
same node may still be exiting. After that, another live process holds it."""


class _Refused(Exception):
    """This actor's storage cannot be used; the actor refuses to take part."""


# --- values returned to clients ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitTimeout:
    """``submit`` gave up waiting: the command may or may not be performed later."""

    replica: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class SubmitRefused:
    """This replica cannot serve requests (it lost its state or hit a protocol error)."""

    replica: str
    reason: str


# --- fault injection -----------------------------------------------------------------------


@dataclass(slots=True)
class _Faults:
    drop: float = 0.0
    delay_ms: int = 0
    duplicate: float = 0.0
    blocked: set[tuple[str, str]] = field(default_factory=set)

    @property
    def active(self) -> bool:
        return bool(self.drop or self.delay_ms or self.duplicate or self.blocked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "delay_ms": self.delay_ms,
            "duplicate": self.duplicate,
            "blocked": sorted([a, b] for a, b in self.blocked),
        }


_WARM_AFTER_S = 1.0
"""How long after its start an actor opens its streams to the other members."""


# --- metrics -------------------------------------------------------------------------------


class _Metrics:
    """Lazily created ``ray.util.metrics``; a metrics failure never reaches the protocol."""

    _BATCH_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    _LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

    def __init__(self, actor: str) -> None:
        self.tags = {"actor": actor}
        self._m: dict[str, Any] = {}
        self._broken = False

    def _get(self, kind: str, name: str, desc: str, bounds: list | None = None) -> Any:
        m = self._m.get(name)
        if m is None:
            from ray.util import metrics

            if kind == "counter":
                m = metrics.Counter(name, description=desc, tag_keys=("actor",))
            elif kind == "gauge":
                m = metrics.Gauge(name, description=desc, tag_keys=("actor",))
            else:
                m = metrics.Histogram(
                    name, description=desc, boundaries=bounds, tag_keys=("actor",)
                )
            self._m[name] = m
        return m

    def _do(self, fn: Callable[[], None]) -> None:
        if self._broken:
            return
        try:
            fn()
        except Exception:  # metrics are optional; never let them break a step
            log.exception("metrics disabled after an error")
            self._broken = True

    def inc(self, name: str, desc: str, value: float = 1.0) -> None:
        self._do(lambda: self._get("counter", name, desc).inc(value, tags=self.tags))

    def observe(self, name: str, desc: str, value: float, bounds: list) -> None:
        self._do(lambda: self._get("hist", name, desc, bounds).observe(value, tags=self.tags))

    def set(self, name: str, desc: str, value: float) -> None:
        self._do(lambda: self._get("gauge", name, desc).set(value, tags=self.tags))


# --- the host ------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    """This process's resident set size (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _restart_info() -> tuple[bool, int | None]:
    """(was this actor reconstructed?, how many restarts Ray counted, if known)."""
    ctx = ray.get_runtime_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the property uses a deprecated accessor inside
        reconstructed = bool(ctx.was_current_actor_reconstructed)
    count: int | None = None
    try:  # the same GCS record the property reads, for the number itself
        from ray._private.state import actors

        info = actors(actor_id=ctx.get_actor_id())
        count = int(info["NumRestarts"]) if info else None
    except Exception:
        count = None
    return reconstructed, count


class _Host:
    """Owns one core role and executes its effects (shared by all five actor classes).

    ``refusing`` is set when the actor must not take part in the protocol (its durable
    storage is gone after a restart): it then ignores every message and says why in
    :meth:`status`. When the role raises (a :class:`~pmmc_ray.core.ProtocolViolation`
    or any other error), the process exits before anything of that step leaves, and Ray
    restarts it from what is durable: it never carries on from a state that broke an
    invariant, and never lingers alive and useless.
    """

    ROLE = "?"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        # Fire-and-forget calls to a dead peer leave error objects nobody reads.
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        self.name = name
        self.cfg = DeploymentConfig.model_validate(config)
        self.ns = self.cfg.namespace
        self.timing = self.cfg.timing()
        self.loop = asyncio.get_running_loop()
        self.started_at = time.time()
        self.reconstructed, self.restarts = _restart_info()
        self.refusing: str | None = None
        self.storage: RecordLog | None = None
        self._lock: FileLock | None = None
        self.first_start = False  # set when this start created the actor's storage
        self.storage_lost = False  # set when this start found its storage gone
        self.metrics = _Metrics(name)
        self.faults = _Faults()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._peers: dict[str, Any] = {}
        self._lookup_failed: dict[str, float] = {}
        self.sent_calls = 0
        self.sent_messages = 0
        self.max_payload: dict[str, int] = {}
        self.payload_bytes: dict[str, int] = {}
        self.dropped_messages = 0
        self.steps = 0
        self.injected_bug = _injected_bug(name)
        self.data: DataPlane | None = None
        if self.cfg.transport == "stream":
            self._start_data_plane()
        if self.reconstructed:
            log.warning("%s restarted (restart #%s)", name, self.restarts)
            self.metrics.inc("pmmc_restarts", "actor reconstructions seen at startup")
        self.role: Any = self._build_role()
        if self.role is not None:
            self._run(lambda now: self.role.start(now))

    def _start_data_plane(self) -> None:
        key = secret_key(self.ns, self.cfg.deployment_id)
        try:
            # The first actor of the deployment creates the secret; the others read it.
            internal_kv._internal_kv_put(key, new_secret(), overwrite=False, namespace=KV_NAMESPACE)
            secret = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
            if not secret:
                raise RuntimeError("the deployment's secret is not in the GCS")
        except Exception:
            # Without it, this actor's messages go through Ray calls (slower, still safe).
            log.warning("%s: no data plane (Ray calls only)", self.name, exc_info=True)
            return
        self.data = DataPlane(
            self.name,
            str(self.cfg.deployment_id),
            secret,
            self._deliver_stream,
            self._resolve,
            host=ray.util.get_node_ip_address(),
        )
        self.loop.create_task(self.data.start())
        self.loop.create_task(self._warm_links())

    async def _warm_links(self) -> None:
        """Open the streams to every member of the initial configuration (and their
        scouts and commanders) soon after start: the paths a failover takes for the
        first time (a passive leader's scout to the acceptors, its commander to the
        acceptors and replicas) are then up when it happens."""
        await asyncio.sleep(_WARM_AFTER_S)  # the deployment's other actors are being made
        if self.data is None or self.data.closed:
            return
        c = self.cfg
        leaders = c.leader_ids()
        names = [*c.replica_ids(), *leaders, *c.acceptor_ids()]
        names += [scout_of(x) for x in leaders] + [commander_of(x) for x in leaders]
        self.data.warm(n for n in names if n != self.name)

    async def _resolve(self, dst: str) -> tuple[str, int]:
        h = self._peer(dst)
        if h is None:
            raise LookupError(f"no actor named {dst}")
        try:
            addr = await asyncio.wait_for(h.data_address.remote(), 2.0)
        except Exception:
            self._peers.pop(dst, None)  # maybe a stale handle: look the name up again
            raise
        if addr is None:
            raise LookupError(f"{dst} has no data plane")
        return addr[0], int(addr[1])

    def _deliver_stream(self, src: str, msgs: list) -> None:
        if self.role is not None:
            self._handle_all(msgs)

    # --- to override --------------------------------------------------------------------

    def _build_role(self) -> Any:
        raise NotImplementedError

    def _role_status(self) -> dict[str, Any]:
        return {}

    def _before_step(self) -> Any:
        return None

    def _after_step(self, before: Any) -> None:
        return None

    def _on_client_reply(self, response: Response) -> None:
        return None  # only replicas have clients

    # --- storage ------------------------------------------------------------------------

    def _open_storage(self) -> list[Any] | None:
        """The durable records to rebuild from, or None if they are gone.

        Raises :class:`_Refused` when the storage must not be used: its lock is held by
        another live process, it belongs to another deployment, or it is in a format
        this version cannot read. Otherwise: our own file is loaded, whatever Ray says
        about restarts. No file, but a cluster-wide note that we created one before (or
        that the deployment was re-attached with us as a member): it is gone, so return
        None. Neither: this is the actor's first start, with a new, empty log.
        """
        path = storage_path(self.cfg.storage_dir(), self.name)
        dep = self.cfg.deployment_id
        holder = (
            f"{self.name} pid {os.getpid()} on {socket.gethostname()}, "
            f"namespace {self.ns}, deployment {dep}"
        )
        try:
            self._lock = FileLock.acquire(lock_path(path), holder, timeout_s=_LOCK_WAIT_S)
        except StorageError as e:
            raise _Refused(f"storage in use: {e}") from None
        if dep is None:  # actors built outside deploy(): trust Ray's restart flag
            if not self.reconstructed and not RecordLog.exists(path):
                self.storage = RecordLog.create(path)
                self.first_start = True
                return []
            if not RecordLog.exists(path):
                return None
            return self._load(path)
        owner = RecordLog.owner(path)
        if owner is not None and owner != dep:
            raise _Refused(
                f"storage {path} belongs to deployment {owner or '(none)'}, not {dep}; "
                "it is never loaded or overwritten"
            )
        if owner == dep:
            return self._load(path)
        if self._created_storage_before():
            return None
        self._create_storage()
        self.first_start = True
        return []

    def _load(self, path: Any) -> list[Any]:
        try:
            self.storage = RecordLog.open(path)
            return self.storage.load()
        except StorageError as e:
            raise _Refused(str(e)) from None
        except Exception as e:  # unreadable records: refuse, never guess
            raise _Refused(f"storage {path} cannot be read: {type(e).__name__}: {e}") from None

    def _init_key(self) -> str:
        return f"init/{self.ns}/{self.cfg.deployment_id}/{self.name}"

    def _created_storage_before(self) -> bool:
        try:
            return bool(internal_kv._internal_kv_exists(self._init_key(), namespace=KV_NAMESPACE))
        except Exception:
            log.warning("%s: cannot reach the cluster KV; trusting Ray's restart flag", self.name)
            return self.reconstructed

    def _create_storage(self) -> None:
        path = storage_path(self.cfg.storage_dir(), self.name)
        self.storage = RecordLog.create(path, self.cfg.deployment_id or "")
        if self.cfg.deployment_id is not None:
            internal_kv._internal_kv_put(self._init_key(), b"1", namespace=KV_NAMESPACE)

    def _refuse(self, reason: str) -> None:
        self.role = None
        self.refusing = reason
        log.error(
            "%s REFUSES to take part in the protocol: %s (path %s)",
            self.name,
            reason,
            storage_path(self.cfg.storage_dir(), self.name),
        )

    # --- executing effects ----------------------------------------------------------------

    @staticmethod
    def _now() -> int:
        return int(time.monotonic() * 1000)

    def _run(self, produce: Callable[[int], list]) -> None:
        """Run one step: get the effects from the role, then execute them (persist first)."""
        if self.role is None:
            return
        before = self._before_step()
        try:
            effects = produce(self._now())
        except ProtocolViolation:
            # An invariant broke. Never carry on from that state, and never stay alive
            # doing nothing (a leader that does so can stall the store): nothing of this
            # step was sent, so exit, and Ray rebuilds the role from what is durable.
            log.critical(
                "%s: the role raised a protocol violation; exiting so Ray restarts it",
                self.name,
                exc_info=True,
            )
            os._exit(72)
        except Exception:
            # Anything else (a bug, MemoryError): the same.
            log.critical(
                "%s: the role raised; exiting so Ray restarts it", self.name, exc_info=True
            )
            os._exit(71)
        self.steps += 1
        self._execute(effects)
        self._after_step(before)

    def _execute(self, effects: list) -> None:
        records = [e.record for e in effects if isinstance(e, Persist)]
        if records and self.injected_bug == "acceptor-no-persist" and self.ROLE == "acceptor":
            records = []  # TEST ONLY (INJECT_BUG_ENV): promises and votes never reach disk
        if records:
            assert self.storage is not None, f"{self.name} has no storage but persists"
            try:
                self.storage.append(records)
            except Exception:
                # Nothing of this step may leave, and the role's memory is now ahead of
                # its storage: die, and let Ray rebuild the role from what is durable.
                log.critical("%s cannot persist; exiting", self.name, exc_info=True)
                os._exit(70)
        out: dict[str, list] = {}
        for e in effects:
            if isinstance(e, Send):
                out.setdefault(e.dst, []).append(e.msg)
            elif isinstance(e, SetTimer):
                delay = e.delay * (1 + random.uniform(-e.jitter, e.jitter)) if e.jitter else e.delay
                self._set_timer(e.name, delay)
            elif isinstance(e, ClientReply):
                self._on_client_reply(e.response)
            elif not isinstance(e, Persist):
                raise TypeError(f"unknown effect {e!r}")
        # The same messages to several peers (a commander's p2a, a replica's proposal)
        # are encoded once for the streams.
        encoded: dict[tuple[int, ...], bytes] = {}
        for dst, msgs in out.items():
            self._send(dst, msgs, encoded)

    def _set_timer(self, name: str, delay_ms: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self.loop.call_later(delay_ms / 1000.0, self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        timer = Timer(name)
        self._run(lambda now: self.role.handle(timer, now))

    # --- transport ------------------------------------------------------------------------

    def _send(self, dst: str, msgs: list, encoded: dict | None = None) -> None:
        f = self.faults
        if f.active:
            if (self.name, dst) in f.blocked:
                self.dropped_messages += len(msgs)
                return
            if f.drop:
                kept = [m for m in msgs if random.random() >= f.drop]
                self.dropped_messages += len(msgs) - len(kept)
                msgs = kept
            if f.duplicate:
                msgs = msgs + [m for m in msgs if random.random() < f.duplicate]
            if not msgs:
                return
            if f.delay_ms:
                # Each call gets its own delay in [0, delay_ms]: this also reorders.
                delay = random.uniform(0, f.delay_ms) / 1000.0
                self.loop.call_later(delay, self._transmit, dst, msgs)
                return
        self._transmit(dst, msgs, encoded)

    def _peer(self, dst: str) -> Any:
        h = self._peers.get(dst)
        if h is not None:
            return h
        failed_at = self._lookup_failed.get(dst)
        if failed_at is not None and time.monotonic() - failed_at < _LOOKUP_RETRY_S:
            return None
        try:
            h = ray.get_actor(dst, namespace=self.ns)
        except Exception:
            self._lookup_failed[dst] = time.monotonic()
            return None
        self._lookup_failed.pop(dst, None)
        self._peers[dst] = h
        return h

    def _transmit(self, dst: str, msgs: list, encoded: dict | None = None) -> None:
        if self.data is not None:
            n = self.data.send(dst, msgs, encoded)
            if n is not None:
                self.sent_messages += len(msgs)
                self._count_payload(msgs, n)
                return
        h = self._peer(dst)
        if h is None:
            self.dropped_messages += len(msgs)
            return
        try:
            # Fire and forget: never awaited. Messages travel pre-pickled: Ray moves
            # bytes about a third cheaper than a list of dataclasses (measured).
            payload = pickle.dumps(msgs, protocol=pickle.HIGHEST_PROTOCOL)
            h.deliver.remote(self.name, payload, self.cfg.deployment_id)
        except Exception:
            self._peers.pop(dst, None)
            self.dropped_messages += len(msgs)
            return
        self.sent_calls += 1
        self.sent_messages += len(msgs)
        self._count_payload(msgs, len(payload))

    def _count_payload(self, msgs: list, n: int) -> None:
        """Per kind of message: the largest payload sent (a Ray call or a frame), and all."""
        kind = type(msgs[0]).__name__
        if n > self.max_payload.get(kind, 0):
            self.max_payload[kind] = n
        self.payload_bytes[kind] = self.payload_bytes.get(kind, 0) + n

    # --- actor methods --------------------------------------------------------------------

    async def deliver(self, src: str, msgs: list | bytes, deployment_id: str | None = None) -> None:
        """Hand ``msgs`` (from ``src``; a list, or one pickled by a peer) to the role as
        one step. Called fire-and-forget. Messages from another deployment (an old
        actor of the same name still dying after a redeploy) are dropped."""
        if self.role is None or deployment_id != self.cfg.deployment_id:
            return
        if isinstance(msgs, bytes):
            msgs = pickle.loads(msgs)
        self._handle_all(msgs)

    def _handle_all(self, msgs: list) -> None:
        """Hand ``msgs`` (one frame or call: everything one step of a peer sent us) to
        the role as one step, at once. (Grouping every delivery of a loop turn into one
        step, for one fsync, was tried: it cost each hop a loop iteration, 1-2 ms per
        put, and grouped 5 of 119 acceptor steps at 1,024 operations in flight.)"""
        handle = self.role.handle

        def produce(now: int) -> list:
            effects: list = []
            for m in msgs:
                effects.extend(handle(m, now))
            return effects

        self._run(produce)

    async def ping(self) -> str:
        """Readiness probe."""
        return "pong"

    async def data_address(self) -> tuple[str, int] | None:
        """Where this actor's data plane listens (None with ``transport: ray``)."""
        if self.data is None:
            return None
        return await self.data.address()

    async def reset_payload_stats(self) -> None:
        """Forget the payload sizes seen so far (to measure one event)."""
        self.max_payload.clear()
        self.payload_bytes.clear()

    async def where(self) -> dict[str, Any]:
        """Where this actor runs (cheap, unlike :meth:`status`)."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    async def set_faults(
        self,
        drop: float = 0.0,
        delay_ms: int = 0,
        duplicate: float = 0.0,
        blocked: list | tuple = (),
    ) -> dict[str, Any]:
        """Inject faults into this actor's outgoing messages (all zero/empty: off)."""
        if not (0.0 <= drop <= 1.0 and 0.0 <= duplicate <= 1.0 and delay_ms >= 0):
            raise ValueError("need 0 <= drop, duplicate <= 1 and delay_ms >= 0")
        self.faults = _Faults(
            float(drop), int(delay_ms), float(duplicate), {(str(a), str(b)) for a, b in blocked}
        )
        return self.faults.as_dict()

    async def warm_links(self, peers: list | tuple) -> int:
        """Open this actor's streams to ``peers`` now (see ``_warm_links``); how many."""
        if not all(isinstance(p, str) for p in peers):
            raise ValueError("peers must be actor names")
        if self.data is None:
            return 0
        names = [p for p in peers if p != self.name]
        self.data.warm(names)
        return len(names)

    async def cut_links(self, peers: list | tuple | None = None) -> list[str]:
        """Reset this actor's data-plane streams to and from ``peers`` (all if None), as
        a network fault would: what they buffered is lost, and they reconnect. The peers
        cut ([] with ``transport: ray``)."""
        if peers is not None and not all(isinstance(p, str) for p in peers):
            raise ValueError("peers must be actor names")
        if self.data is None:
            return []
        return self.data.cut(None if peers is None else list(peers))

    async def destroy_storage(self) -> bool:
        """Stop taking part and delete this actor's storage (used by shutdown)."""
        self.role = None
        self.refusing = "shut down"
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        if self.storage is not None:
            self.storage.close()
            self.storage = None
        if self._lock is None:
            return False  # someone else's files (this actor refused to use them)
        remove_log(storage_path(self.cfg.storage_dir(), self.name))
        self._lock.release()
        self._lock = None
        return True

    async def status(self) -> dict[str, Any]:
        """What this actor is and how it is doing (see the role-specific fields)."""
        ctx = ray.get_runtime_context()
        st: dict[str, Any] = {
            "role": self.ROLE,
            "name": self.name,
            "namespace": self.ns,
            "node_id": ctx.get_node_id(),
            "host": socket.gethostname(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "restarts": self.restarts,
            "reconstructed": self.reconstructed,
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "steps": self.steps,
            "sent_calls": self.sent_calls,
            "sent_messages": self.sent_messages,
            "dropped_messages": self.dropped_messages,
            "max_payload_bytes": dict(self.max_payload),
            "payload_bytes": dict(self.payload_bytes),
            "rss_bytes": _rss_bytes(),
            "faults": self.faults.as_dict(),
            "transport": self.cfg.transport,
        }
        if self.data is not None:
            st["data_plane"] = self.data.stats()
        if self.storage is not None:
            st["storage"] = str(self.storage.path)
            st["storage_records"] = self.storage.count()
            st["storage_bytes"] = self.storage.size_bytes()
        if self.storage_lost:
            st["storage_lost_at_start"] = True
        if self.injected_bug is not None:
            st["injected_bug"] = self.injected_bug
        if self.refusing is not None:
            st["refusing"] = self.refusing
        if self.role is not None:
            st.update(self._role_status())
        return st


def _actor(cls: type) -> Any:
    return ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(cls)


# --- the five roles --------------------------------------------------------------------------


class _AcceptorHost(_Host):
    ROLE = "acceptor"

    def _build_role(self) -> Acceptor | None:
        try:
            records = self._open_storage()
        except _Refused as e:
            self._refuse(str(e))
            return None
        if records is None:
            # An acceptor that forgot its promises could vote against them: it must
            # never vote again. A new acceptor takes its place through the log.
            self.storage_lost = True
            self._refuse(_storage_lost_advice(self.name, self.ns))
            return None
        return Acceptor.recover(self.name, records)

    def _role_status(self) -> dict[str, Any]:
        return {
            "epochs": {
                str(e): {
                    "ballot_num": str(st.ballot_num),
                    "accepted": len(st.accepted),
                    "collected_below": st.collected_below,
                }
                for e, st in sorted(self.role.epochs.items())
            },
            "ballot_num": {
                str(e): [st.ballot_num.round, st.ballot_num.leader]
                for e, st in sorted(self.role.epochs.items())
            },
        }


class _LeaderHost(_Host):
    ROLE = "leader"

    def _build_role(self) -> Leader | None:
        try:
            records = self._open_storage()
        except _Refused as e:
            self._refuse(str(e))
            return None
        if records is None:
            # Without its records this leader cannot know which rounds it used. It takes
            # a fresh ballot identity (Leader.recover persists it before any ballot), so
            # none of its ballots can equal one it made before, and leads again.
            log.warning("%s: storage lost; leading again under a fresh ballot identity", self.name)
            self.storage_lost = True
            self._create_storage()
            records = []
        return Leader.recover(
            self.name,
            self.cfg.initial_config(),
            self.timing,
            records,
            scout_id=scout_of(self.name),
            commander_id=commander_of(self.name),
            # 64 random bits: used only if the records hold no identity yet.
            fresh_identity=f"{self.name}/{uuid.uuid4().hex[:16]}",
        )

    def _before_step(self) -> Any:
        return (
            self.role.max_round,
            {e: ep.active for e, ep in self.role.epochs.items()},
        )

    def _after_step(self, before: Any) -> None:
        max_round, active = before
        m = self.metrics
        if self.role.max_round > max_round:
            m.inc("pmmc_leader_ballots_started", "ballot rounds this leader started")
        for e, ep in self.role.epochs.items():
            was = active.get(e, False)
            if ep.active and not was:
                m.inc("pmmc_leader_adoptions", "ballots adopted by a majority")
            elif was and not ep.active:
                m.inc("pmmc_leader_preemptions", "times this leader was preempted")

    def _role_status(self) -> dict[str, Any]:
        r = self.role
        return {
            "identity": r.identity,
            "max_round": r.max_round,
            "timeout": r.timeout,
            "epochs": {
                str(e): {
                    "ballot": [ep.ballot_num.round, ep.ballot_num.leader],
                    "active": ep.active,
                    "scouting": ep.scouting,
                    "watching": ep.watching,
                    "proposals": len(ep.proposals),
                    "collected_below": ep.collected_below,
                    "stepped_aside": not ep.active and self._now() < ep.hold_until,
                }
                for e, ep in sorted(r.epochs.items())
            },
        }


class _ScoutHost(_Host):
    ROLE = "scout"

    def _build_role(self) -> Scout:
        return Scout(self.name, "leader-" + self.name.removeprefix("scout-"), self.timing)

    def _role_status(self) -> dict[str, Any]:
        return {
            "leader": self.role.leader,
            "runs": {
                str(e): {"ballot": str(run.ballot), "waiting_for": sorted(run.waitfor)}
                for e, run in sorted(self.role.runs.items())
            },
        }


class _CommanderHost(_Host):
    ROLE = "commander"

    def _build_role(self) -> Commander:
        return Commander(self.name, "leader-" + self.name.removeprefix("commander-"), self.timing)

    def _role_status(self) -> dict[str, Any]:
        return {
            "leader": self.role.leader,
            "runs": {
                str(e): {"ballot": str(run.ballot), "pending": len(run.pending)}
                for e, run in sorted(self.role.runs.items())
            },
        }


class _ReplicaHost(_Host):
    ROLE = "replica"

    def __init__(
        self, name: str, config: dict[str, Any], join: list[dict[str, Any]] | None = None
    ) -> None:
        self._waiters: dict[tuple[str, int], list[asyncio.Future]] = {}
        self.decided_commands = 0
        # A replica added by reconfiguration gets the configurations known when it was
        # created, to find peers, and recovers its state from them before serving.
        self.join = [
            Config(
                c["epoch"],
                c["start_slot"],
                tuple(c["replicas"]),
                tuple(c["leaders"]),
                tuple(c["acceptors"]),
            )
            for c in join or []
        ]
        super().__init__(name, config)

    def _build_role(self) -> Replica | None:
        app = load_app_class(self.cfg.app)()
        configs = tuple(self.join) or (self.cfg.initial_config(),)
        try:
            records = self._open_storage()
        except _Refused as e:
            self._refuse(str(e))
            return None
        if records is None:
            # Its checkpoint and decided slots are gone: it recovers the state from a
            # peer (state transfer) before it serves, and writes it to a new log.
            log.warning("%s: storage lost; recovering the state from a peer", self.name)
            self.storage_lost = True
            self._create_storage()
            return Replica(self.name, configs, app, self.timing, recovering=True)
        if self.first_start:
            return Replica(self.name, configs, app, self.timing, recovering=bool(self.join))
        try:
            return Replica.recover(
                self.name, configs, app, self.timing, records, joined=bool(self.join)
            )
        except ValueError as e:
            self._refuse(f"storage cannot be replayed: {e}")
            return None

    def _before_step(self) -> Any:
        return self.role.slot_out

    def _after_step(self, before: Any) -> None:
        r = self.role
        st = self.storage
        if st is not None and st.bytes_since_checkpoint > max(
            2 * st.checkpoint_bytes, _CHECKPOINT_LOG_BYTES
        ):
            # The log since the last checkpoint outgrew it: disk stays within about
            # three times the state (checkpoint_every counts slots, not bytes).
            r.request_checkpoint()
        for slot in range(before, r.slot_out):
            batch = r.decisions.get(slot)
            if batch is None:
                continue  # arrived by state transfer
            n = len(batch.commands)
            self.decided_commands += n
            self.metrics.inc("pmmc_replica_commands_decided", "commands applied", n)
            self.metrics.observe(
                "pmmc_replica_batch_size", "commands per decided slot", n, _Metrics._BATCH_BOUNDS
            )

    def _on_client_reply(self, response: Response) -> None:
        for fut in self._waiters.pop((response.client_id, response.command_id), ()):
            if not fut.done():
                fut.set_result(response)

    async def submit(self, command: Command, timeout_s: float) -> Any:
        """Have ``command`` performed; return its :class:`Response`.

        Returns :class:`SubmitTimeout` if no answer came within ``timeout_s`` (the
        command may still be performed: retry it, with the same id, anywhere), or
        :class:`SubmitRefused` if this replica cannot serve at all.
        """
        return (await self.submit_many([command], [timeout_s]))[0]

    async def submit_many(self, commands: list[Command], timeouts_s: list[float]) -> list[Any]:
        """:meth:`submit` for several commands (of different clients) at once: they enter
        the replica in one step, so they can share one slot. Answers in order, each a
        :class:`Response`, :class:`SubmitTimeout` or :class:`SubmitRefused`."""
        # Checked here, where raising answers the caller: inside the step it would
        # stop the replica.
        if len(commands) != len(timeouts_s) or not commands:
            raise ValueError("one timeout per command, and at least one command")
        for c in commands:
            if not (
                type(c) is Command
                and isinstance(c.client_id, str)
                and type(c.command_id) is int
                and type(c.session) is int
            ):
                raise TypeError(f"not a well-formed Command: {c!r:.200}")
        for t in timeouts_s:
            if not (isinstance(t, int | float) and math.isfinite(t) and 0 < t <= 3600):
                raise ValueError(f"a timeout must be in (0, 3600] seconds, got {t!r:.40}")
        if self.role is None:
            refused = SubmitRefused(self.name, self.refusing or "not running")
            return [refused] * len(commands)
        t0 = time.monotonic()
        futs = []
        for command in commands:
            fut = self.loop.create_future()
            self._waiters.setdefault((command.client_id, command.command_id), []).append(fut)
            futs.append(fut)
        msg: Any = Request(commands[0]) if len(commands) == 1 else Requests(tuple(commands))
        try:
            self._run(lambda now: self.role.handle(msg, now))
            # One wait per distinct timeout (a mux's commands mostly share one), not a
            # task and a timer per command: that was a quarter of a busy replica's time.
            by_timeout: dict[float, list[asyncio.Future]] = {}
            for f, t in zip(futs, timeouts_s, strict=True):
                by_timeout.setdefault(t, []).append(f)
            await asyncio.gather(*(asyncio.wait(fs, timeout=t) for t, fs in by_timeout.items()))
            answers = [
                f.result() if f.done() else SubmitTimeout(self.name, t)
                for f, t in zip(futs, timeouts_s, strict=True)
            ]
        finally:
            for command, fut in zip(commands, futs, strict=True):
                key = (command.client_id, command.command_id)
                waiting = self._waiters.get(key)
                if waiting is not None:
                    if fut in waiting:
                        waiting.remove(fut)
                    if not waiting:
                        del self._waiters[key]
        ms = (time.monotonic() - t0) * 1000.0
        self.metrics.observe(
            "pmmc_replica_client_latency_ms",
            "submit latency at the replica",
            ms,
            _Metrics._LATENCY_BOUNDS_MS,
        )
        return answers

    def _configs(self) -> list[dict[str, Any]]:
        return [
            {
                "epoch": c.epoch,
                "start_slot": c.start_slot,
                "replicas": list(c.replicas),
                "leaders": list(c.leaders),
                "acceptors": list(c.acceptors),
            }
            for c in self.role.configs
        ]

    async def configs(self) -> dict[str, Any]:
        """The configurations this replica knows (cheap: clients call it)."""
        if self.role is None:
            return {"error": self.refusing or "not running"}
        return {"recovering": self.role.recovering, "configs": self._configs()}

    async def state_hash(self) -> dict[str, Any]:
        """slot_out, the history digest, and a sha256 of the whole application state and
        client table. The hash serializes the whole state: call it to compare replicas,
        not on a request path (status() gives the digest, which is kept incrementally)."""
        if self.role is None:
            return {"error": self.refusing or "not running"}
        r = self.role
        h = hashlib.sha256(r.app.snapshot())
        table = [(c, sid, cid) for c, (sid, cid, _) in r.client_table.items()]
        h.update(repr(table).encode())  # in LRU order: eviction depends on it
        return {"slot_out": r.slot_out, "digest": r.digest, "state_sha256": h.hexdigest()}

    def _role_status(self) -> dict[str, Any]:
        r = self.role
        return {
            "slot_in": r.slot_in,
            "slot_out": r.slot_out,
            "recovering": r.recovering,
            "configs": self._configs(),
            "digest": r.digest,
            "sessions": len(r.client_table),
            "decisions_kept": len(r.decisions),
            "requests": len(r.requests),
            "proposals": len(r.proposals),
            "decided_commands": self.decided_commands,
            "waiting_clients": len(self._waiters),
        }


# Ray actor classes. Options are set at creation (see deploy.py); these are the defaults:
# unlimited restarts, no task retries (a message retried by Ray after a restart would
# only duplicate what the protocol already retransmits), and no CPU reservation.
AcceptorActor = _actor(type("AcceptorActor", (_AcceptorHost,), {"__module__": __name__}))
LeaderActor = _actor(type("LeaderActor", (_LeaderHost,), {"__module__": __name__}))
ScoutActor = _actor(type("ScoutActor", (_ScoutHost,), {"__module__": __name__}))
CommanderActor = _actor(type("CommanderActor", (_CommanderHost,), {"__module__": __name__}))
ReplicaActor = _actor(type("ReplicaActor", (_ReplicaHost,), {"__module__": __name__}))

ACTOR_CLASSES = {
    "acceptor": AcceptorActor,
    "leader": LeaderActor,
    "scout": ScoutActor,
    "commander": CommanderActor,
    "replica": ReplicaActor,
}
