"""Python clients of a deployment: :class:`Client` (blocking) and :class:`AsyncClient`.

A client is a paper client with a session: it has a unique ``client_id``, opens its
session in the replicated client table on first use (an ``OpenSession`` command, its
command 0), numbers its commands, and keeps at most one command outstanding (the table
remembers only the latest command per client, which is what makes retries
exactly-once). It sends the command to one replica's ``submit``; if that replica does
not answer in time or is down, it retries the *same* command, with the same id, at the
next replica, until the per-operation deadline. Then the outcome is unknown, and the
client says so with :class:`OutcomeUnknownError` rather than guessing; :meth:`retry`
tries that same command again (it is performed at most once, whatever happens), and
the next :meth:`execute` gives it up (it may still be performed, at most once, until a
newer command of this client is).

If no replica confirms the ``OpenSession`` before the deadline, the operation itself
was never sent: the client raises :class:`SessionNotOpenedError` (a ConnectionError,
not an unknown outcome) and opens the session again on its next operation.

The table keeps a bounded number of sessions, least recently used first out. A command
of an evicted session is rejected; the client raises :class:`SessionExpiredError` (its
outcome is unknown: a retry may have been performed before) and opens a new session
under a new client id for its next command.

Operations are validated with the application's ``validate`` before anything is
sent, so bad input raises :class:`~pmmc_ray.app.InvalidOperation` (a ValueError) and
changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from ..app import InvalidOperation
from ..check.history import Operation
from ..core import SESSION_EXPIRED, Command, OpenSession, Reconfigure, Response
from ..core.replica import validate_reconfigure
from .actors import SubmitRefused, SubmitTimeout
from .config import DeploymentConfig, load_app_class
from .mux import SubmitMux

__all__ = [
    "AsyncClient",
    "Client",
    "HistoryRecorder",
    "OperationRejected",
    "OutcomeUnknownError",
    "SessionExpiredError",
    "SessionNotOpenedError",
    "outcome_of",
]

_RETRYABLE = (GetTimeoutError, RayActorError, ActorUnavailableError, asyncio.TimeoutError)


class OutcomeUnknownError(TimeoutError):
    """No replica confirmed the operation before the deadline.

    The operation may or may not have been applied (it may even be applied later).
    """


class SessionExpiredError(OutcomeUnknownError):
    """The replicas no longer have this client's session (evicted as least recently used):
    the command was refused, but a retry of it may have been performed before, so its
    outcome is unknown. The client continues under a new session."""


class SessionNotOpenedError(ConnectionError):
    """No replica confirmed the client's ``OpenSession`` (its command 0) before the
    deadline, so the operation was never sent: it certainly changed nothing, and may be
    tried again. The client opens its session again on its next operation."""


class OperationRejected(ValueError):
    """The replicated state machine rejected the operation (it changed nothing)."""


def outcome_of(e: BaseException) -> str:
    """What an exception raised by ``execute`` means for its operation:

    - ``"invalid"``: malformed (:class:`~pmmc_ray.app.InvalidOperation`), nothing sent;
    - ``"rejected"``: the state machine refused it (:class:`OperationRejected`), it
      changed nothing;
    - ``"not_sent"``: the session could not be opened (:class:`SessionNotOpenedError`);
    - ``"unknown"``: no confirmation before the deadline, or the session expired
      (:class:`OutcomeUnknownError`, :class:`SessionExpiredError` included): it may or
      may not have been applied;
    - ``"error"``: anything else (a bug, a cancellation): unknown too, and the client may
      be mid-command, so it must not be used again.

    After any of the first four the client is fit for its next operation (which gives up
    a command in doubt; an expired client already has a new session).
    """
    if isinstance(e, InvalidOperation):
        return "invalid"
    if isinstance(e, OperationRejected):
        return "rejected"
    if isinstance(e, SessionNotOpenedError):
        return "not_sent"
    if isinstance(e, OutcomeUnknownError):
        return "unknown"
    return "error"


# --- history recording -------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    client: str
    call: float
    op: tuple
    ret: float | None = None
    result: Any = None
    keep: bool = True


class HistoryRecorder:
    """Collects client operations as :class:`pmmc_ray.check.history.Operation` records.

    Pass one to several clients (thread-safe); times come from ``time.monotonic()``.
    Operations whose outcome is unknown are kept with ``ret=None``; operations the
    state machine rejected changed nothing and are left out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def begin(self, client: str, op: tuple) -> _Entry:
        e = _Entry(client, time.monotonic(), op)
        with self._lock:
            self._entries.append(e)
        return e

    def returned(self, e: _Entry, result: Any) -> None:
        with self._lock:
            e.ret, e.result = time.monotonic(), result

    def rejected(self, e: _Entry) -> None:
        with self._lock:
            e.keep = False

    def operations(self) -> list[Operation]:
        with self._lock:
            return [
                Operation(e.client, e.call, e.ret, e.op, e.result) for e in self._entries if e.keep
            ]


# --- shared logic ------------------------------------------------------------------------------


class _Base:
    def __init__(
        self,
        config: DeploymentConfig,
        *,
        timeout_s: float,
        attempt_timeout_s: float,
        recorder: HistoryRecorder | None,
        client_id: str | None,
        replicas: list[str] | None = None,
        handles: dict[str, Any] | None = None,
    ) -> None:
        if timeout_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        self.config = config
        self.namespace = config.namespace
        # Command ids restart with every session, and replicas remember the last
        # (client_id, command_id) they performed: a reused id would be answered with an
        # old command's result. So a given id is only a prefix.
        self._prefix = client_id
        self.client_id = self._new_id()
        self._opened = False
        self._session = 0  # the identity the log gave this client's session
        self._in_doubt: tuple[Command, _Entry | None] | None = None
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.recorder = recorder
        self._app = load_app_class(config.app)()
        self._replicas = list(replicas or config.replica_ids())
        # Every client starts at the first replica and moves on only when it does not
        # answer. Requests that meet at one replica share batches; requests spread over
        # replicas make them propose different batches for the same slots, and the
        # losers must propose again (measured: about half the throughput).
        self._start = 0
        self._counter = itertools.count(1)
        self._last = "no attempt"  # why the latest attempt of the current command failed
        self._handles: dict[str, Any] = dict(handles or {})

    def _new_id(self) -> str:
        suffix = uuid.uuid4().hex
        return f"{self._prefix}-{suffix[:12]}" if self._prefix else suffix

    def _validate(self, op: Any) -> None:
        """Raise InvalidOperation (before anything is sent) if ``op`` is malformed."""
        if isinstance(op, Reconfigure):
            validate_reconfigure(op)
        else:
            self._app.validate(op)

    def _command(self, op: Any) -> Command:
        """The next command of this client's session (open it first)."""
        self._in_doubt = None  # a new command gives up the one whose outcome is unknown
        return Command(self.client_id, next(self._counter), op, self._session)

    def _open_command(self) -> Command | None:
        """The OpenSession command to send before the first command, if needed."""
        return None if self._opened else Command(self.client_id, 0, OpenSession())

    def _take_in_doubt(self) -> tuple[Command, _Entry | None]:
        if self._in_doubt is None:
            raise RuntimeError(
                "nothing to retry: no operation of this client has an unknown outcome"
            )
        cmd_entry, self._in_doubt = self._in_doubt, None
        return cmd_entry

    def _begin(self, op: Any) -> _Entry | None:
        # Reconfigurations are not part of the application's history.
        if self.recorder is None or isinstance(op, Reconfigure):
            return None
        return self.recorder.begin(self.client_id, op)

    def _handle(self, name: str) -> Any:
        h = self._handles.get(name)
        if h is None:
            try:
                h = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
            self._handles[name] = h
        return h

    def _attempts(
        self, cmd: Command, clock: Callable[[], float]
    ) -> Iterator[tuple[str, Any, float, float] | float]:
        """The retry plan of one command, shared by both clients: (replica, handle,
        per-attempt timeout, time left) for each replica in turn, a float (seconds to
        pause) after each full round, and OutcomeUnknownError at the deadline."""
        deadline = clock() + self.timeout_s
        self._last = "no attempt"
        while True:
            for name in self._order():
                remaining = deadline - clock()
                if remaining <= 0:
                    raise self._unknown(cmd, self._last)
                h = self._handle(name)
                if h is None:
                    self._last = f"{name} not found"
                    continue
                yield name, h, min(self.attempt_timeout_s, remaining), remaining
            yield min(0.05, max(0.0, deadline - clock()))

    def _failed(self, cmd: Command, name: str, e: Exception) -> None:
        """An attempt raised: retry on the next replica, or give up (outcome unknown)."""
        if not isinstance(e, _RETRYABLE):
            self._last = f"{name}: {type(e).__name__}: {e}"
            raise self._unknown(cmd, self._last) from e
        self._last = f"{name}: {type(e).__name__}"
        if isinstance(e, RayActorError) and not isinstance(e, ActorUnavailableError):
            self._handles.pop(name, None)  # gone for good (it may be re-created)

    def _answered(self, name: str, res: Any) -> bool:
        """True if ``res`` is the replica's Response; otherwise note why and go on."""
        if isinstance(res, SubmitTimeout | SubmitRefused):
            self._last = f"{name}: {res!r}"
            return False
        self._start = self._replicas.index(name)  # stick to a replica that answers
        return True

    def _order(self) -> list[str]:
        n = len(self._replicas)
        return [self._replicas[(self._start + i) % n] for i in range(n)]

    def _outcome(self, cmd: Command, entry: _Entry | None, resp: Response) -> Any:
        if cmd.command_id == 0:
            # The session's identity, assigned by the log: every command names it.
            self._opened, self._session = True, int(resp.result)
            return None
        if resp.error == SESSION_EXPIRED:
            # Rejected by this decision; an earlier decision of a retry may have performed
            # it (the entry keeps an unknown outcome). Start over under a new session.
            old = self.client_id
            self.client_id, self._opened, self._session = self._new_id(), False, 0
            self._counter = itertools.count(1)
            raise SessionExpiredError(
                f"the session of client {old} expired (evicted from the replicas' client "
                f"table) before command {cmd.command_id} {cmd.op!r:.80}; it may or may not "
                "have been applied. The client continues under a new session."
            )
        if resp.error is not None:
            if entry is not None and self.recorder is not None:
                self.recorder.rejected(entry)
            raise OperationRejected(resp.error)
        if entry is not None and self.recorder is not None:
            self.recorder.returned(entry, resp.result)
        return resp.result

    def _not_opened(self) -> SessionNotOpenedError:
        # Whether or not that OpenSession was performed, sending it again is harmless
        # (same client id, command 0 again), so the next operation just does.
        return SessionNotOpenedError(
            f"client {self.client_id} could not open its session: no replica confirmed it "
            f"within {self.timeout_s:g}s (last problem: {self._last}); the operation was "
            "not sent"
        )

    def _unknown(self, cmd: Command, last: str) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"no replica confirmed command {cmd.command_id} {cmd.op!r:.80} of client "
            f"{self.client_id} within {self.timeout_s:g}s (last problem: {last}); "
            "it may or may not have been applied (retry() tries the same command again)"
        )


class KVMethods:
    """The KV store's operations on top of a blocking ``execute(op)`` (which the class
    that mixes this in defines)."""

    def get(self, key: str) -> str | None:
        """The value of ``key``, or None if it is absent."""
        return self.execute(("get", key))

    def put(self, key: str, value: str) -> None:
        self.execute(("put", key, value))

    def delete(self, key: str) -> None:
        self.execute(("delete", key))

    def append(self, key: str, value: str) -> None:
        self.execute(("append", key, value))

    def cas(self, key: str, expected: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: absent)."""
        return self.execute(("cas", key, expected, new))


class Client(KVMethods, _Base):
    """A blocking client (thread-safe; one command in flight at a time).

    ``handles``: actor handles of replicas the caller already holds, by name (copied).
    """

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_id: str | None = None,
        replicas: list[str] | None = None,
        handles: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            config,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            recorder=recorder,
            client_id=client_id,
            replicas=replicas,
            handles=handles,
        )
        self._lock = threading.Lock()

    def execute(self, op: Any) -> Any:
        """Perform ``op`` on the replicated state machine and return its result."""
        with self._lock:
            self._validate(op)
            opening = self._open_command()
            if opening is not None:
                self._submit(opening, None)
            return self._submit(self._command(op), self._begin(op))

    def retry(self) -> Any:
        """Try again the command of the last :class:`OutcomeUnknownError`, with the same
        command id: it is performed at most once, and this returns its result."""
        with self._lock:
            return self._submit(*self._take_in_doubt())

    def _submit(self, cmd: Command, entry: _Entry | None) -> Any:
        try:
            for step in self._attempts(cmd, time.monotonic):
                if isinstance(step, float):
                    time.sleep(step)
                    continue
                name, h, per, remaining = step
                try:
                    res = ray.get(h.submit.remote(cmd, per), timeout=min(per + 1.0, remaining))
                except Exception as e:
                    self._failed(cmd, name, e)
                    continue
                if self._answered(name, res):
                    return self._outcome(cmd, entry, res)
        except SessionExpiredError:
            raise  # nothing to retry: that session is gone
        except OutcomeUnknownError as e:
            if cmd.command_id == 0:
                raise self._not_opened() from e  # the operation itself was not sent
            self._in_doubt = (cmd, entry)  # for retry()
            raise
        raise AssertionError("unreachable: _attempts ends by raising")


class AsyncClient(_Base):
    """An asyncio client (one command in flight at a time).

    ``handles``: actor handles of replicas the caller already holds, by name (copied);
    the client looks up the others itself, with a blocking call the first time.
    ``mux``: a :class:`~pmmc_ray.runtime.mux.SubmitMux` shared by the clients of this
    event loop, so that their commands to a replica travel in one call per loop turn.
    """

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_id: str | None = None,
        replicas: list[str] | None = None,
        handles: dict[str, Any] | None = None,
        mux: SubmitMux | None = None,
    ) -> None:
        super().__init__(
            config,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            recorder=recorder,
            client_id=client_id,
            replicas=replicas,
            handles=handles,
        )
        self._lock: asyncio.Lock | None = None
        self._mux = mux

    async def execute(self, op: Any) -> Any:
        """Perform ``op`` on the replicated state machine and return its result."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._validate(op)
            opening = self._open_command()
            if opening is not None:
                await self._submit(opening, None)
            return await self._submit(self._command(op), self._begin(op))

    async def retry(self) -> Any:
        """Try again the command of the last :class:`OutcomeUnknownError`, with the same
        command id: it is performed at most once, and this returns its result."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await self._submit(*self._take_in_doubt())

    async def _submit(self, cmd: Command, entry: _Entry | None) -> Any:
        try:
            for step in self._attempts(cmd, asyncio.get_running_loop().time):
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                name, h, per, remaining = step
                call = (
                    self._mux.submit(name, h, cmd, per)
                    if self._mux is not None
                    else h.submit.remote(cmd, per)
                )
                try:
                    res = await asyncio.wait_for(call, min(per + 1.0, remaining))
                except Exception as e:
                    self._failed(cmd, name, e)
                    continue
                if self._answered(name, res):
                    return self._outcome(cmd, entry, res)
        except SessionExpiredError:
            raise  # nothing to retry: that session is gone
        except OutcomeUnknownError as e:
            if cmd.command_id == 0:
                raise self._not_opened() from e  # the operation itself was not sent
            self._in_doubt = (cmd, entry)  # for retry()
            raise
        raise AssertionError("unreachable: _attempts ends by raising")

    async def get(self, key: str) -> str | None:
        return await self.execute(("get", key))

    async def put(self, key: str, value: str) -> None:
        await self.execute(("put", key, value))

    async def delete(self, key: str) -> None:
        await self.execute(("delete", key))

    async def append(self, key: str, value: str) -> None:
        await self.execute(("append", key, value))

    async def cas(self, key: str, expected: str | None, new: str) -> bool:
        return await self.execute(("cas", key, expected, new))
