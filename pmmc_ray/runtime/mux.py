"""Many clients, one call: the commands of a process's clients to one replica travel
together.

A paper client keeps one command in flight, so a process that wants thousands of
operations in flight runs thousands of clients (each its own session in the replicated
client table, so exactly-once holds per client as before). Giving each its own Ray call
would cost the process one call per operation. :class:`SubmitMux` collects the commands
that clients of one event loop submit to the same replica during one turn of the loop
and sends them in one ``submit_many`` call; the replica takes them in one step, so they
can share one slot. Each client still gets its own answer, timeout and retry.

Propose at once when idle, batch when busy: at most ``max_calls`` calls per replica are
in flight; commands submitted meanwhile wait in the mux and go together in the next
call, when one returns. With few operations in flight each goes at once (one call per
loop turn); under load, and with operations arriving one per loop turn (an open-loop
client), the calls grow instead of multiplying. A ``submit_many`` returns when all its
commands are answered, so a call carrying a slow command holds its place until then.

Use one mux per event loop::

    mux = SubmitMux()
    clients = [dep.async_client(mux=mux) for _ in range(1000)]
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core import Command

__all__ = ["SubmitMux"]


class SubmitMux:
    """Batches ``submit`` calls per replica and per event-loop turn."""

    def __init__(self, max_batch: int = 2048, max_calls: int = 4) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_calls < 1:
            raise ValueError("max_calls must be >= 1")
        self.max_batch = max_batch
        self.max_calls = max_calls
        self._waiting: dict[str, tuple[Any, list[tuple[Command, float, asyncio.Future]]]] = {}
        self._scheduled: set[str] = set()  # replicas with a flush due on this loop turn
        self._inflight: dict[str, int] = {}  # replica -> its calls not yet returned
        self.calls = 0
        self.commands = 0
        self.held = 0  # times commands waited for a call in flight to return
        self._tasks: set[asyncio.Future] = set()

    def submit(self, name: str, handle: Any, command: Command, timeout_s: float) -> asyncio.Future:
        """What ``handle.submit.remote(command, timeout_s)`` would answer, as a future."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = self._waiting.get(name)
        if entry is None:
            entry = self._waiting[name] = (handle, [])
        entry[1].append((command, timeout_s, fut))
        self._schedule(name, loop)
        return fut

    def _schedule(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        if name in self._scheduled or name not in self._waiting:
            return
        if self._inflight.get(name, 0) >= self.max_calls:
            self.held += 1
            return  # busy: the next call goes when one returns, with all that waits
        self._scheduled.add(name)
        loop.call_soon(self._flush, name)

    def _returned(self, name: str) -> None:
        self._inflight[name] -= 1
        self._schedule(name, asyncio.get_running_loop())

    def _flush(self, name: str) -> None:
        self._scheduled.discard(name)
        handle, items = self._waiting.pop(name)
        items = [it for it in items if not it[2].done()]  # a client may have given up
        for i in range(0, len(items), self.max_batch):
            part = items[i : i + self.max_batch]
            try:
                ref = handle.submit_many.remote([c for c, _, _ in part], [t for _, t, _ in part])
            except Exception as e:
                _fail(part, e)
                continue
            self.calls += 1
            self.commands += len(part)
            self._inflight[name] = self._inflight.get(name, 0) + 1
            task = asyncio.ensure_future(_deliver(ref, part))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t, n=name: self._returned(n))


async def _deliver(ref: Any, part: list[tuple[Command, float, asyncio.Future]]) -> None:
    try:
        answers = await ref
    except BaseException as e:  # the replica died or is unreachable: every client retries
        _fail(part, e if isinstance(e, Exception) else ConnectionError("submit cancelled"))
        if not isinstance(e, Exception):
            raise
        return
    for (_, _, fut), answer in zip(part, answers, strict=True):
        if not fut.done():
            fut.set_result(answer)


def _fail(part: list[tuple[Command, float, asyncio.Future]], e: Exception) -> None:
    for _, _, fut in part:
        if not fut.done():
            fut.set_exception(e)
