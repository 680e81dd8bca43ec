"""ThreadedClient on real actors: many threads, many sessions in flight, one mux."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from pmmc_ray.app import InvalidOperation
from pmmc_ray.check.linearizability import KV_MODEL, check
from pmmc_ray.runtime import (
    ClientClosedError,
    HistoryRecorder,
    OutcomeUnknownError,
    SessionNotOpenedError,
)

pytestmark = pytest.mark.ray

THREADS = 16


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("threaded")


def _run_threads(n, fn):
    """Run ``fn(i)`` in ``n`` threads at once; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i):
        try:
            start.wait(30)
            fn(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_many_threads_one_client_exactly_once_linearizable_and_in_flight_together(dep):
    recorder = HistoryRecorder()
    log_key = f"tlog-{time.time_ns()}"
    regs = [f"treg-{k}" for k in range(4)]
    acked: list[str] = []
    unknown: list[str] = []

    with dep.threaded_client(32, timeout_s=30.0, attempt_timeout_s=5.0, recorder=recorder) as c:

        def work(i):
            for j in range(24):
                token = f"<{i}.{j}>"
                if j % 3 == 0:
                    try:
                        c.append(log_key, token)
                    except OutcomeUnknownError:
                        try:
                            c.retry()  # the same command again: performed at most once
                        except OutcomeUnknownError:
                            unknown.append(token)
                            continue
                    acked.append(token)
                elif j % 3 == 1:
                    c.put(regs[(i + j) % len(regs)], token)
                else:
                    c.get(regs[(i + j) % len(regs)] if j % 2 else log_key)

        _run_threads(THREADS, work)
        st = c.stats()
        value = c.get(log_key) or ""

    assert len(acked) + len(unknown) == THREADS * 8
    for token in acked:
        assert value.count(token) == 1, token
    for token in unknown:
        assert value.count(token) <= 1, token
    # More than one operation was in flight at once, and calls carried several commands.
    assert st["peak_in_flight"] > 1, st
    assert st["mux_calls"] < st["mux_commands"], st
    assert st["mux_commands"] >= THREADS * 24, st
    assert st["in_flight"] == 0 and st["sessions"] >= 1
    verdict = check(recorder.operations(), KV_MODEL, timeout=60.0)
    assert verdict.verdict == "linearizable", verdict


def test_appends_across_a_replica_kill_are_performed_once(dep):
    """The replica every session talks to is killed while 15 threads append: each
    acknowledged append (retried after an unknown outcome) appears exactly once."""
    key = f"tonce-{time.time_ns()}"
    acked: list[str] = []
    unknown: list[str] = []

    with dep.threaded_client(THREADS, timeout_s=30.0, attempt_timeout_s=2.0) as c:
        c.get(key)

        def work(i):
            if i == 0:  # the killer: once the appends are well under way
                deadline = time.monotonic() + 60
                while len(acked) < 60 and time.monotonic() < deadline:
                    time.sleep(0.001)
                ray.kill(dep.handle("replica-0"), no_restart=False)
                return
            for j in range(20):
                token = f"<{i}.{j}>"
                try:
                    c.append(key, token)
                except OutcomeUnknownError:
                    try:
                        c.retry()
                    except OutcomeUnknownError:
                        unknown.append(token)
                        continue
                acked.append(token)

        _run_threads(THREADS, work)
        value = c.get(key) or ""
    for token in acked:
        assert value.count(token) == 1, token
    for token in unknown:
        assert value.count(token) <= 1, token
    assert len(acked) + len(unknown) == (THREADS - 1) * 20 and len(acked) >= 60


def test_operations_in_doubt_are_retried_or_given_up_never_performed_twice(dep):
    """With every protocol message dropped, each thread's append ends in doubt and its
    session stays with the thread; once messages flow again, half the threads retry
    (same command: performed exactly once), the others go on with a new operation on
    the same session (the append is given up: performed at most once)."""
    recorder = HistoryRecorder()
    key = f"tdoubt-{time.time_ns()}"
    doubtful: list[str] = []
    retried: list[str] = []
    given_up: list[str] = []
    not_sent: list[str] = []
    in_doubt = threading.Barrier(THREADS + 1)
    healed = threading.Barrier(THREADS + 1)

    with dep.threaded_client(THREADS, timeout_s=2.0, attempt_timeout_s=0.5, recorder=recorder) as c:
        # Open every session first (all of them in flight at once), so that the appends
        # below are sent; one whose session could not open would not be.
        for _ in range(20):
            _run_threads(THREADS, lambda i: c.get(key))
            if c.stats()["peak_in_flight"] == THREADS:
                break

        def work(i):
            token = f"<{i}>"
            try:
                c.append(key, token)
            except SessionNotOpenedError:
                not_sent.append(token)
            except OutcomeUnknownError:
                doubtful.append(token)
                in_doubt.wait(60)
                healed.wait(60)
                if i % 2:
                    for _ in range(30):  # until the leaders are back
                        try:
                            c.retry()
                            retried.append(token)
                            break
                        except OutcomeUnknownError:
                            continue
                else:
                    for _ in range(30):
                        try:
                            c.get(key)  # gives the append up: at most once from now on
                            given_up.append(token)
                            break
                        except OutcomeUnknownError:
                            continue
                return
            in_doubt.wait(60)
            healed.wait(60)

        threads = []
        dep.set_faults(drop=1.0)
        try:
            for i in range(THREADS):
                threads.append(threading.Thread(target=work, args=(i,)))
                threads[-1].start()
            in_doubt.wait(60)
            held = c.stats()["held_in_doubt"]
        finally:
            dep.set_faults()
        healed.wait(60)
        for t in threads:
            t.join(300)
        value = c.get(key) or ""
        st = c.stats()

    assert held == len(doubtful) and len(doubtful) >= THREADS // 2, (held, doubtful, not_sent)
    for token in not_sent:
        assert token not in value, token
    assert len(retried) + len(given_up) == len(doubtful)
    for token in retried:
        assert value.count(token) == 1, token
    for token in given_up:
        assert value.count(token) <= 1, token
    assert st["held_in_doubt"] == 0 and st["in_flight"] == 0
    verdict = check(recorder.operations(), KV_MODEL, timeout=60.0)
    assert verdict.verdict == "linearizable", verdict


def test_bad_input_changes_nothing_and_a_closed_client_refuses(dep):
    c = dep.threaded_client(2, timeout_s=30.0)
    c.put("tbad", "v")
    for op in [("put", "tbad", 1), ("frobnicate", "tbad"), ["put", "tbad", "w"]]:
        with pytest.raises(InvalidOperation):
            c.execute(op)
    assert c.get("tbad") == "v"
    # Nothing of the bad operations was sent: one session opened, then the put and the get.
    assert c.stats()["mux_commands"] == 3
    c.close()
    with pytest.raises(ClientClosedError):
        c.get("tbad")
    assert dep.client(timeout_s=30).get("tbad") == "v"
