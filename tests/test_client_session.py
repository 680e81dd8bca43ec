"""The clients' session handling with fake replica handles (no Ray): an OpenSession
that no replica confirms means the operation was never sent (SessionNotOpenedError,
not an unknown outcome); an unconfirmed command is in doubt (OutcomeUnknownError,
retry() sends it again); an evicted session is SessionExpiredError."""

from __future__ import annotations

import asyncio

import pytest
from fake_replicas import FakeReplica, expired, is_open, performs, silent_on
from ray.exceptions import GetTimeoutError

from pmmc_ray.app import InvalidOperation
from pmmc_ray.core import OpenSession
from pmmc_ray.runtime import (
    AsyncClient,
    Client,
    DeploymentConfig,
    OperationRejected,
    OutcomeUnknownError,
    SessionExpiredError,
    SessionNotOpenedError,
)
from pmmc_ray.runtime.client import outcome_of

CONFIG = DeploymentConfig(namespace="t-fake", f=1)
FAST = {"timeout_s": 0.3, "attempt_timeout_s": 0.05}


def async_client(replica: FakeReplica) -> AsyncClient:
    return AsyncClient(
        CONFIG, client_id="c", handles={"replica-0": replica, "replica-1": replica}, **FAST
    )


def test_an_unconfirmed_open_session_is_not_sent_and_opens_again_next_time():
    r = FakeReplica(silent_on(is_open))
    c = async_client(r)

    async def run():
        with pytest.raises(SessionNotOpenedError, match="the operation was not sent") as e:
            await c.put("k", "v")
        assert not isinstance(e.value, OutcomeUnknownError)
        assert "retry()" not in str(e.value)
        assert {cmd.command_id for cmd in r.submitted} == {0}  # the put never left
        with pytest.raises(RuntimeError, match="nothing to retry"):
            await c.retry()
        r.answer = performs  # the replicas come back
        first = c.client_id
        assert await c.get("k") == "v"
        return first

    first = asyncio.run(run())
    # The same session, opened again (harmless if the first OpenSession was performed);
    # the put never left, so the get takes the first command id.
    assert c.client_id == first
    assert [(cmd.command_id, type(cmd.op)) for cmd in r.submitted[-2:]] == [
        (0, OpenSession),
        (1, tuple),
    ]


def test_an_unconfirmed_command_is_in_doubt_and_retry_sends_it_again():
    r = FakeReplica(silent_on(lambda cmd: cmd.command_id == 1))
    c = async_client(r)

    async def run():
        with pytest.raises(OutcomeUnknownError, match="may or may not have been applied") as e:
            await c.append("k", "x")
        assert not isinstance(e.value, SessionNotOpenedError | SessionExpiredError)
        r.answer = performs
        assert await c.retry() is None

    asyncio.run(run())
    ids = [cmd.command_id for cmd in r.submitted]
    assert ids[0] == 0 and set(ids[1:]) == {1}  # every attempt, and the retry: command 1


def test_an_evicted_session_is_expired_and_the_client_starts_a_new_one():
    r = FakeReplica(expired)
    c = async_client(r)
    old = c.client_id

    async def run():
        with pytest.raises(SessionExpiredError):
            await c.put("k", "v")
        r.answer = performs
        await c.put("k", "v")

    asyncio.run(run())
    assert c.client_id != old and r.submitted[-2].client_id == c.client_id


def test_the_blocking_client_says_the_same(monkeypatch):
    import ray

    r = FakeReplica(silent_on(is_open))

    def fake_get(coro, timeout):  # what ray.get of an ObjectRef would do
        async def bounded():
            return await asyncio.wait_for(coro, timeout)

        try:
            return asyncio.run(bounded())
        except TimeoutError:
            raise GetTimeoutError("fake") from None

    monkeypatch.setattr(ray, "get", fake_get)
    c = Client(CONFIG, handles={"replica-0": r, "replica-1": r}, **FAST)
    with pytest.raises(SessionNotOpenedError):
        c.put("k", "v")
    r.answer = performs
    assert c.get("k") == "v"


@pytest.mark.parametrize(
    "exc,kind",
    [
        (InvalidOperation("bad"), "invalid"),
        (OperationRejected("too long"), "rejected"),
        (SessionNotOpenedError("no session"), "not_sent"),
        (OutcomeUnknownError("deadline"), "unknown"),
        (SessionExpiredError("evicted"), "unknown"),
        (RuntimeError("bug"), "error"),
        (asyncio.CancelledError(), "error"),
    ],
)
def test_outcome_of_every_exception(exc, kind):
    assert outcome_of(exc) == kind
