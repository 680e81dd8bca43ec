"""ThreadedClient without Ray: fake replica handles (tests/fake_replicas.py) answer the
commands that its sessions send through its SubmitMux, on its own event loop thread."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fake_replicas import FakeReplica, is_open, performs, silent_on

from pmmc_ray.app import InvalidOperation
from pmmc_ray.core import Response
from pmmc_ray.runtime import (
    ClientClosedError,
    DeploymentConfig,
    OperationRejected,
    OutcomeUnknownError,
    SessionNotOpenedError,
    ThreadedClient,
)

CONFIG = DeploymentConfig(namespace="t-fake", f=1)
FAST = {"timeout_s": 0.3, "attempt_timeout_s": 0.05}


def threaded(replica: FakeReplica, sessions: int, **kw: Any) -> ThreadedClient:
    opts = {**FAST, **kw}
    return ThreadedClient(
        CONFIG, sessions=sessions, handles={"replica-0": replica, "replica-1": replica}, **opts
    )


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a new thread; the dict gets its "result" or "error"."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def sent_ops(r: FakeReplica) -> list[tuple[str, int, Any]]:
    """(client id, command id, op) of every command that reached the replica but the
    sessions' openings."""
    return [(c.client_id, c.command_id, c.op) for c in r.submitted if not is_open(c)]


def test_many_threads_share_the_sessions_and_their_commands_travel_together():
    r = FakeReplica()
    with threaded(r, 4, timeout_s=30.0, attempt_timeout_s=10.0) as c:
        # Keep the loop busy until four operations are in flight: their commands must
        # then leave in shared submit_many calls.
        hold = threading.Event()
        c._loop.call_soon_threadsafe(hold.wait)

        def work(i: int) -> list[Any]:
            got = []
            for j in range(5):
                got.append(c.put(f"k{i}", f"{i}.{j}"))
                got.append(c.get(f"k{i}"))
            return got

        runs = [in_thread(lambda i=i: work(i)) for i in range(8)]
        wait_for(lambda: c.stats()["in_flight"] == 4, "four operations in flight")
        hold.set()
        for t, _ in runs:
            t.join(30)
        for _, out in runs:
            assert out == {"result": [None, "v"] * 5}
        st = c.stats()
    assert st["sessions"] == 4 and st["idle"] == 4 and st["held_in_doubt"] == 0
    assert st["peak_in_flight"] == 4 and st["in_flight"] == 0
    assert st["mux_commands"] == 8 * 10 + 4  # every operation, and four sessions opened
    assert st["mux_calls"] < st["mux_commands"]  # commands shared calls
    # Four sessions, each opened once, each numbering its own commands 1, 2, ...
    opens = Counter(cmd.client_id for cmd in r.submitted if is_open(cmd))
    assert len(opens) == 4 and set(opens.values()) == {1}
    for client in opens:
        ids = [cid for who, cid, _ in sent_ops(r) if who == client]
        assert ids == list(range(1, len(ids) + 1))


@pytest.mark.parametrize("op", [("put", "k", 1), ("frobnicate", "k"), ["get", "k"], ("get",)])
def test_bad_input_raises_on_the_calling_thread_and_sends_nothing(op):
    r = FakeReplica()
    with threaded(r, 2) as c:
        with pytest.raises(InvalidOperation):
            c.execute(op)
        with pytest.raises(InvalidOperation):
            c.put("k", None)
        assert r.submitted == [] and c.stats()["peak_in_flight"] == 0
        assert c.get("k") == "v"  # still serving


def test_a_rejection_and_an_unopened_session_are_raised_as_by_client():
    def refuse(cmd):
        return (
            performs(cmd)
            if is_open(cmd)
            else Response(cmd.client_id, cmd.command_id, None, "too long")
        )

    r = FakeReplica(refuse)
    with threaded(r, 1) as c:
        with pytest.raises(OperationRejected, match="too long"):
            c.append("k", "x")
        assert c.stats()["held_in_doubt"] == 0  # nothing in doubt: it changed nothing
    r = FakeReplica(silent_on(is_open))
    with threaded(r, 1) as c:
        with pytest.raises(SessionNotOpenedError, match="the operation was not sent"):
            c.append("k", "x")
        assert sent_ops(r) == [] and c.stats()["held_in_doubt"] == 0
        r.answer = performs
        assert c.get("k") == "v"  # the same session, opened this time
        assert c.stats()["sessions"] == 1


def _run_joined(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    t, out = in_thread(fn)
    t.join(30)
    return t, out


def test_an_operation_in_doubt_stays_with_its_thread_for_retry():
    r = FakeReplica(silent_on(lambda cmd: not is_open(cmd) and cmd.op[0] == "append"))
    with threaded(r, 1) as c:
        with pytest.raises(OutcomeUnknownError, match="may or may not have been applied"):
            c.append("k", "x")
        assert c.stats()["held_in_doubt"] == 1
        # Another thread is not blocked by the held session (one more is made)...
        _, out = _run_joined(lambda: c.get("k"))
        assert out == {"result": "v"}
        # ...and cannot retry what is not its own.
        _, out = _run_joined(c.retry)
        assert isinstance(out["error"], RuntimeError) and "nothing to retry" in str(out["error"])
        assert c.stats()["sessions"] == 2
        r.answer = performs
        doubtful = sent_ops(r)[0]
        assert c.retry() is None  # this thread's: the same command again
        client, cid, op = doubtful
        assert {(w, i) for w, i, o in sent_ops(r) if o == op} == {(client, cid)}
        assert c.stats()["held_in_doubt"] == 0
        with pytest.raises(RuntimeError, match="nothing to retry"):
            c.retry()


def test_the_next_operation_of_that_thread_gives_the_doubt_up_on_the_same_session():
    r = FakeReplica(silent_on(lambda cmd: not is_open(cmd) and cmd.op[0] == "append"))
    with threaded(r, 4) as c:
        with pytest.raises(OutcomeUnknownError):
            c.append("k", "x")
        client, cid, _ = sent_ops(r)[-1]
        r.answer = performs
        assert c.get("k") == "v"
        # The same session's next command: the append is given up (performed at most
        # once, and never after this get is).
        assert sent_ops(r)[-1] == (client, cid + 1, ("get", "k"))
        assert c.stats()["held_in_doubt"] == 0
        with pytest.raises(RuntimeError, match="nothing to retry"):
            c.retry()


def test_a_session_held_by_an_ended_thread_goes_back_to_the_pool():
    r = FakeReplica(silent_on(lambda cmd: not is_open(cmd) and cmd.op[0] == "append"))
    with threaded(r, 1) as c:
        _, out = _run_joined(lambda: c.append("k", "x"))
        assert isinstance(out["error"], OutcomeUnknownError)
        client, cid, _ = sent_ops(r)[-1]
        r.answer = performs
        assert c.get("k") == "v"
        # No new session: the held one came back, and its next command gave the doubt up.
        assert sent_ops(r)[-1] == (client, cid + 1, ("get", "k"))
        st = c.stats()
        assert st["sessions"] == 1 and st["held_in_doubt"] == 0


def test_close_cancels_what_is_in_flight_fails_waiters_and_refuses_calls():
    r = FakeReplica(silent_on(lambda cmd: not is_open(cmd)))
    c = threaded(r, 1, timeout_s=60.0, attempt_timeout_s=30.0)
    t1, out1 = in_thread(lambda: c.put("k", "1"))
    wait_for(lambda: len(sent_ops(r)) == 1, "the put to be sent")
    t2, out2 = in_thread(lambda: c.put("k", "2"))  # waits for the only session
    wait_for(lambda: t2.is_alive(), "the second caller")
    c.close(timeout_s=0.2)
    t1.join(10)
    t2.join(10)
    assert isinstance(out1["error"], OutcomeUnknownError)
    assert "closed while" in str(out1["error"])
    assert isinstance(out2["error"], ClientClosedError)
    assert [op for _, _, op in sent_ops(r)] == [("put", "k", "1")]  # the second never left
    assert not c._thread.is_alive() and c._loop.is_closed() and c.closed
    with pytest.raises(ClientClosedError):
        c.get("k")
    with pytest.raises(ClientClosedError):
        c.retry()
    c.close()  # again: nothing more to do


def test_close_waits_for_what_is_in_flight():
    r = FakeReplica()
    c = threaded(r, 2)
    assert c.get("k") == "v"
    c.close()
    assert not c._thread.is_alive()
    with pytest.raises(ClientClosedError):
        c.put("k", "v")


def test_bad_arguments():
    with pytest.raises(ValueError):
        threaded(FakeReplica(), 0)
    with pytest.raises(ValueError):
        threaded(FakeReplica(), 1, timeout_s=0)
