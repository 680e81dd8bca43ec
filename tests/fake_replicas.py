"""Stand-ins for replica actor handles, for client, pool and sidecar tests without Ray.

A client calls ``handle.submit.remote(command, timeout_s)`` and awaits the result (the
async client) or passes it to ``ray.get`` (the blocking one); clients sharing a
:class:`~pmmc_ray.runtime.mux.SubmitMux` call ``submit_many``; the gateway's probe
awaits ``handle.ping.remote()``. A :class:`FakeReplica` answers each command with what
its ``answer`` function returns: a :class:`Response`, an exception to raise, or
:data:`SILENT` for no answer at all.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from pmmc_ray.core import SESSION_EXPIRED, Command, OpenSession
from pmmc_ray.core.messages import Response

SILENT = object()
"""``answer`` result: the replica never answers (the caller's deadline passes)."""


class _Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeReplica:
    """A replica handle whose ``submit`` answers with ``answer(command)``."""

    def __init__(self, answer: Callable[[Command], Any] | None = None) -> None:
        self.answer = answer or performs
        self.submitted: list[Command] = []
        self.submit = _Method(self._submit)
        self.submit_many = _Method(self._submit_many)
        self.ping = _Method(self._ping)

    async def _submit(self, cmd: Command, timeout_s: float) -> Any:
        self.submitted.append(cmd)
        res = self.answer(cmd)
        if res is SILENT:
            await asyncio.sleep(3600)
        if isinstance(res, BaseException):
            raise res
        return res

    async def _submit_many(self, cmds: list[Command], timeouts_s: list[float]) -> list[Any]:
        # As the real one: every answer in one reply (a silent command holds it back,
        # an exception fails the whole call).
        return list(
            await asyncio.gather(
                *(self._submit(c, t) for c, t in zip(cmds, timeouts_s, strict=True))
            )
        )

    async def _ping(self) -> str:
        return "pong"


_slots = itertools.count(1)


def performs(cmd: Command) -> Response:
    """A replica that performs everything: an OpenSession's result, the session's
    identity (the slot that decided it, as a real replica answers); a put's, None; a
    get's, "v"."""
    if isinstance(cmd.op, OpenSession):
        return Response(cmd.client_id, cmd.command_id, next(_slots))
    return Response(cmd.client_id, cmd.command_id, "v" if cmd.op[0] == "get" else None)


def silent_on(pred: Callable[[Command], bool]) -> Callable[[Command], Any]:
    """Never answers the commands ``pred`` selects; performs the others."""
    return lambda cmd: SILENT if pred(cmd) else performs(cmd)


def expired(cmd: Command) -> Response:
    """The session of this client was evicted: every command but OpenSession is refused."""
    if isinstance(cmd.op, OpenSession):
        return performs(cmd)
    return Response(cmd.client_id, cmd.command_id, None, SESSION_EXPIRED)


def is_open(cmd: Command) -> bool:
    return cmd.command_id == 0
