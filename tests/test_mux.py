"""SubmitMux without Ray: a fake replica handle whose submit_many answers each command."""

from __future__ import annotations

import asyncio

import pytest

from pmmc_ray.core import Command
from pmmc_ray.runtime.mux import SubmitMux


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return asyncio.ensure_future(self.fn(*args))


class _Replica:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[list[Command]] = []
        self.fail = fail
        self.submit_many = _Method(self._submit_many)

    async def _submit_many(self, commands, timeouts):
        assert len(commands) == len(timeouts)
        self.calls.append(list(commands))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [f"done {c.client_id}/{c.command_id}" for c in commands]


def _cmd(i: int) -> Command:
    return Command(f"c{i}", 1, ("get", "k"))


def test_commands_of_one_turn_share_one_call_and_get_their_own_answers():
    async def main():
        mux, r = SubmitMux(), _Replica()
        futs = [mux.submit("replica-0", r, _cmd(i), 1.0) for i in range(5)]
        assert await asyncio.gather(*futs) == [f"done c{i}/1" for i in range(5)]
        assert len(r.calls) == 1 and (mux.calls, mux.commands) == (1, 5)
        # The next turn makes the next call.
        assert await mux.submit("replica-0", r, _cmd(9), 1.0) == "done c9/1"
        assert len(r.calls) == 2

    asyncio.run(main())


def test_each_replica_gets_its_own_call_and_big_turns_are_split():
    async def main():
        mux, a, b = SubmitMux(max_batch=3), _Replica(), _Replica()
        futs = [mux.submit("a", a, _cmd(i), 1.0) for i in range(7)]
        futs.append(mux.submit("b", b, _cmd(99), 1.0))
        await asyncio.gather(*futs)
        assert [len(c) for c in a.calls] == [3, 3, 1] and len(b.calls) == 1

    asyncio.run(main())


def test_a_failed_call_fails_every_command_of_it():
    async def main():
        mux, r = SubmitMux(), _Replica(fail=ConnectionError("replica died"))
        futs = [mux.submit("replica-0", r, _cmd(i), 1.0) for i in range(3)]
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert all(isinstance(x, ConnectionError) for x in results)

    asyncio.run(main())


def test_a_client_that_gave_up_is_not_sent_and_others_are_unaffected():
    async def main():
        mux, r = SubmitMux(), _Replica()
        gone = mux.submit("replica-0", r, _cmd(1), 1.0)
        kept = mux.submit("replica-0", r, _cmd(2), 1.0)
        gone.cancel()  # what asyncio.wait_for does on the client's timeout
        assert await kept == "done c2/1"
        assert [c.client_id for c in r.calls[0]] == ["c2"]

    asyncio.run(main())


class _SlowReplica:
    """submit_many answers only when the test releases it."""

    def __init__(self) -> None:
        self.calls: list[list[Command]] = []
        self.release = asyncio.Event()
        self.submit_many = _Method(self._submit_many)

    async def _submit_many(self, commands, timeouts):
        self.calls.append(list(commands))
        await self.release.wait()
        return [f"done {c.client_id}/{c.command_id}" for c in commands]


def test_when_max_calls_are_in_flight_later_commands_wait_and_then_travel_together():
    async def main():
        mux, r = SubmitMux(max_calls=2), _SlowReplica()
        first = [mux.submit("replica-0", r, _cmd(i), 1.0) for i in (0, 1)]
        await asyncio.sleep(0.01)
        assert len(r.calls) == 1  # idle: sent at once
        second = [mux.submit("replica-0", r, _cmd(2), 1.0)]
        await asyncio.sleep(0.01)
        assert len(r.calls) == 2  # one call in flight < 2: sent at once too
        later = []
        for i in range(3, 8):  # one per loop turn, as an open-loop client sends them
            later.append(mux.submit("replica-0", r, _cmd(i), 1.0))
            await asyncio.sleep(0)
        assert len(r.calls) == 2 and mux.held > 0  # busy: they wait in the mux
        # another replica is not held back by this one
        other = _Replica()
        assert await mux.submit("replica-1", other, _cmd(99), 1.0) == "done c99/1"
        r.release.set()
        answers = await asyncio.gather(*first, *second, *later)
        assert answers == [f"done c{i}/1" for i in range(8)]
        assert [len(c) for c in r.calls] == [2, 1, 5]  # the five went in one call

    asyncio.run(main())


def test_max_batch_and_max_calls_must_be_positive():
    with pytest.raises(ValueError):
        SubmitMux(max_batch=0)
    with pytest.raises(ValueError):
        SubmitMux(max_calls=0)
