"""A blocking client for many threads, with many commands in flight over one mux.

:class:`~pmmc_ray.runtime.client.Client` is thread-safe but keeps one command in
flight: threads that share it wait for each other. :class:`ThreadedClient` keeps up to
``sessions`` operations in flight for any number of threads. It owns

- one background thread running an asyncio event loop;
- one :class:`~pmmc_ray.runtime.mux.SubmitMux` on that loop, so the commands that reach
  the loop during one of its turns travel to a replica in one ``submit_many`` call;
- a pool of :class:`~pmmc_ray.runtime.client.AsyncClient` objects, each a paper client
  with its own session: one command in flight, retried under the same command id,
  performed at most once.

A call borrows an idle session (waiting while ``sessions`` operations are in flight),
runs the operation on the loop and returns its result or raises its exception, exactly
as a ``Client`` would: :class:`~pmmc_ray.app.InvalidOperation` (raised on the calling
thread before anything is borrowed or sent), ``OperationRejected``,
``OutcomeUnknownError``, ``SessionNotOpenedError``, ``SessionExpiredError``.

Operations in doubt. When an operation raises ``OutcomeUnknownError`` (and not
``SessionExpiredError``), its session stays with the calling thread, as a ``Client``
would stay with its caller:

- ``retry()`` from that thread sends that same command again (same client id and
  command id), so it is performed at most once, and returns its result;
- the thread's next operation runs on that same session, and so gives the command in
  doubt up, as ``Client.execute`` does: it may still be performed, at most once, until
  that next command is performed; after that it never is (the replicas remember the
  latest command of each session and ignore older ones).

A session is never given to another thread while its command is in doubt, unless the
thread that holds it has ended: then the session goes back to the pool, and its next
command (from whichever thread) gives the doubtful one up in the same way. While a
thread holds a session, another one takes its place in the pool (created on demand), so
held sessions never block other threads; the pool has at most ``sessions`` sessions
plus one per thread holding one. A decided command is therefore never performed twice,
and never skipped except in the way just described for a command given up, which is
what ``Client`` does too.

A session whose operation ended in anything else (a bug, or a cancellation by
:meth:`ThreadedClient.close`) may be mid-command: it is dropped, never used again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import ray

from ..core import Reconfigure
from ..core.replica import validate_reconfigure
from .client import AsyncClient, HistoryRecorder, KVMethods, OutcomeUnknownError, outcome_of
from .config import DeploymentConfig, load_app_class
from .mux import SubmitMux

__all__ = ["ClientClosedError", "ThreadedClient"]


class ClientClosedError(RuntimeError):
    """The :class:`ThreadedClient` is closed: the operation was not sent."""


class ThreadedClient(KVMethods):
    """A blocking client that any number of threads may share, with up to ``sessions``
    operations in flight (one per paper client of its pool), their commands multiplexed
    by one :class:`~pmmc_ray.runtime.mux.SubmitMux` on a background event loop.

    ``replicas``: the replicas to talk to, in order (default: the config's).
    ``handles``: actor handles of replicas the caller already holds, by name; the others
    are looked up here, on the caller's thread, not on the event loop.
    ``client_prefix``: session ``i`` gets the client id ``{client_prefix}{i}-{random}``.
    ``recorder``: a :class:`~pmmc_ray.runtime.client.HistoryRecorder` for every session.

    Close it (:meth:`close`, or use it as a context manager) to stop its thread.
    """

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        sessions: int = 64,
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_prefix: str = "threaded-",
        replicas: list[str] | None = None,
        handles: dict[str, Any] | None = None,
        max_batch: int = 2048,
    ) -> None:
        if sessions < 1:
            raise ValueError("sessions must be >= 1")
        if timeout_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        self.config = config
        self.sessions = sessions
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.recorder = recorder
        self.client_prefix = client_prefix
        self._replicas = list(replicas or config.replica_ids())
        self._handles = dict(handles or {})
        for name in self._replicas:
            if name not in self._handles:
                try:
                    self._handles[name] = ray.get_actor(name, namespace=config.namespace)
                except ValueError:
                    pass  # not there now: a session looks it up again when it needs it
        self._app = load_app_class(config.app)()
        self.mux = SubmitMux(max_batch)
        self._lock = threading.RLock()
        self._slot_free = threading.Condition(self._lock)  # an operation ended
        self._drained = threading.Condition(self._lock)  # no operation in flight
        self._created = 0
        self._alive = 0  # sessions not dropped
        self._idle: list[AsyncClient] = []  # a stack: the most recently used first
        self._idle.extend(reversed([self._new_session() for _ in range(sessions)]))
        self._held: dict[threading.Thread, AsyncClient] = {}  # sessions in doubt, by thread
        self._futures: set[concurrent.futures.Future] = set()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._closed = False
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"pmmc-threaded-client-{config.namespace}", daemon=True
        )
        self._thread.start()

    # --- operations -------------------------------------------------------------------

    def execute(self, op: Any) -> Any:
        """Perform ``op`` on the replicated state machine and return its result."""
        return self._call(op, retry=False)

    def retry(self) -> Any:
        """Try again the command of this thread's last :class:`OutcomeUnknownError`, with
        the same command id: it is performed at most once, and this returns its result.
        Raises RuntimeError if this thread has no operation in doubt on this client."""
        return self._call(None, retry=True)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new operations (they raise :class:`ClientClosedError`, and so do threads
        waiting for a session), wait for the operations in flight to end (each ends by its
        own deadline; at most ``timeout_s`` if given), cancel those still running (their
        callers get :class:`OutcomeUnknownError`), then stop the event loop and its
        thread. Calling it again does nothing more."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() cannot be called from the client's own event loop")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            self._closed = True
            self._slot_free.notify_all()
            while self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._drained.wait(left)
            pending = list(self._futures)
            first, self._stopping = not self._stopping, True
        for fut in pending:
            fut.cancel()  # the task is cancelled on the loop; its caller is told at once
        if first:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> ThreadedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Sessions (``sessions``: not dropped; ``idle``; ``held_in_doubt``: kept for a
        thread's retry), operations in flight now and at most so far, and the mux's
        ``submit_many`` calls and the commands they carried."""
        with self._lock:
            return {
                "sessions": self._alive,
                "idle": len(self._idle),
                "held_in_doubt": len(self._held),
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "mux_calls": self.mux.calls,
                "mux_commands": self.mux.commands,
            }

    # --- internals ----------------------------------------------------------------------

    def _new_session(self) -> AsyncClient:
        client = AsyncClient(
            self.config,
            timeout_s=self.timeout_s,
            attempt_timeout_s=self.attempt_timeout_s,
            recorder=self.recorder,
            client_id=f"{self.client_prefix}{self._created}",
            replicas=self._replicas,
            handles=self._handles,
            mux=self.mux,
        )
        self._created += 1
        self._alive += 1
        return client

    def _validate(self, op: Any) -> None:
        """Raise InvalidOperation, as Client does, before anything is borrowed or sent."""
        if isinstance(op, Reconfigure):
            validate_reconfigure(op)
        else:
            self._app.validate(op)

    def _call(self, op: Any, *, retry: bool) -> Any:
        me = threading.current_thread()
        if me is self._thread:
            raise RuntimeError("a ThreadedClient cannot be called from its own event loop")
        if self._closed:
            raise ClientClosedError("this ThreadedClient is closed; the operation was not sent")
        if not retry:
            self._validate(op)
        fut = self._start(me, op, retry)
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            what = "the retried command" if retry else f"operation {op!r:.80}"
            raise OutcomeUnknownError(
                f"the ThreadedClient was closed while {what} was in flight: it may or may "
                "not have been applied"
            ) from None

    def _start(self, me: threading.Thread, op: Any, retry: bool) -> concurrent.futures.Future:
        """Borrow a session (waiting for a free slot) and start the operation on the loop.
        Both under the lock, so that close() sees every operation it must wait for."""
        with self._lock:
            if retry and me not in self._held:
                raise RuntimeError(
                    "nothing to retry: no operation of this thread through this client has "
                    "an unknown outcome"
                )
            while not self._closed and self._in_flight >= self.sessions:
                self._slot_free.wait()
            if self._closed:
                raise ClientClosedError("this ThreadedClient is closed; the operation was not sent")
            session = self._held.pop(me, None)  # its command in doubt: retried or given up
            if session is None:
                session = self._take_idle()
            fut = asyncio.run_coroutine_threadsafe(self._run(session, op, retry, me), self._loop)
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._futures.add(fut)
            fut.add_done_callback(self._forget)
            return fut

    def _take_idle(self) -> AsyncClient:
        if not self._idle:
            # Sessions held for threads that have ended: nobody will retry them.
            for t in [t for t in self._held if not t.is_alive()]:
                self._idle.append(self._held.pop(t))
        return self._idle.pop() if self._idle else self._new_session()

    def _forget(self, fut: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(fut)

    async def _run(self, session: AsyncClient, op: Any, retry: bool, me: threading.Thread) -> Any:
        """On the loop: one operation of one session, then the session goes where its
        outcome says (back to the pool, held for ``me``, or dropped)."""
        drop = False
        try:
            if retry:
                return await session.retry()
            return await session.execute(op)
        except BaseException as e:
            drop = outcome_of(e) == "error"  # a bug or a cancellation: maybe mid-command
            raise
        finally:
            self._give_back(session, me, drop)

    def _give_back(self, session: AsyncClient, me: threading.Thread, drop: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            if drop:
                self._alive -= 1
            elif session._in_doubt is not None:  # set by an OutcomeUnknownError: retry() can
                old = self._held.get(me)  # only if the thread was interrupted meanwhile
                if old is not None:
                    self._idle.append(old)
                self._held[me] = session
            else:
                self._idle.append(session)
            self._slot_free.notify()
            if self._in_flight == 0:
                self._drained.notify_all()

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
