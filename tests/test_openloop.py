"""The open-loop scheduler, on explicit times and on a fake clock: no wall-clock figure is
asserted anywhere (the machine is shared)."""

from __future__ import annotations

import asyncio

import pytest

from pmmc_ray.runtime.openloop import (
    ABANDONED,
    OK,
    RETIRE,
    UNKNOWN,
    Schedule,
    percentiles,
    pool_size,
    run_open_loop,
)

# Rates whose intervals are exact in binary floating point, so times compare exactly.
RATE = 4.0  # one operation every 0.25 s


def test_schedule_is_fixed_and_latency_runs_from_the_scheduled_start():
    s = Schedule(RATE, 2.0, clients=2, start=10.0)
    assert s.total == 8 and [s.at(i) for i in (0, 1, 7)] == [10.0, 10.25, 11.75]
    assert s.due(10.0) == [(0, 0)]
    # The driver lagged: operation 1 (due at 10.25) starts at 10.6 and ends at 10.7.
    assert s.due(10.6) == [(1, 1)]  # op 2 (due 10.5) finds no free client
    assert s.not_started == 1
    s.finish(1, 1, 10.7, OK)
    assert s.latencies_ms == [pytest.approx(450.0)]  # not the 100 ms it ran
    assert s.start_lag_ms == [0.0, pytest.approx(350.0)]


def test_a_busy_pool_drops_at_the_source_and_the_schedule_goes_on():
    s = Schedule(RATE, 2.0, clients=1, start=0.0)
    assert s.due(0.0) == [(0, 0)]
    assert s.due(1.0) == []  # ops 1..4 are due, the only client is busy
    assert s.not_started == 4 and s.started == 1
    assert s.next_time() == 1.25  # not slowed down: op 5 is still due at 1.25
    s.finish(0, 0, 1.1, OK)
    assert s.due(1.25) == [(5, 0)]
    assert s.max_in_flight == 1


def test_outcomes_errors_and_retired_clients():
    s = Schedule(RATE, 1.0, clients=3, start=0.0)
    (a, ca), (b, cb), (c, cc) = s.due(0.5)
    s.finish(a, ca, 0.6, UNKNOWN)  # the client is fit for its next operation
    s.finish(b, cb, 0.6, RETIRE)  # not fit: it leaves the pool
    s.finish(c, cc, 0.6, "not_sent")
    assert s.due(0.75) == [(3, ca)]
    s.finish(3, ca, 0.8, ABANDONED)
    r = s.result()
    assert r["scheduled"] == 4 and r["started"] == 4 and r["not_started"] == 0
    assert r["ok"] == 0 and r["unknown"] == 1
    assert r["errors"] == {ABANDONED: 1, RETIRE: 1, "not_sent": 1}
    assert s.retired == 2 and r["latency_ms"]["p50"] is None


def test_committed_rate_counts_until_the_last_completion():
    s = Schedule(RATE, 1.0, clients=4, start=0.0)
    for i, c in s.due(0.75):
        s.finish(i, c, 0.75 if i < 3 else 2.0, OK)
    r = s.result()
    assert r["elapsed_s"] == 2.0 and r["committed_ops_per_s"] == 2.0
    s2 = Schedule(RATE, 1.0, clients=4, start=0.0)
    for i, c in s2.due(0.75):
        s2.finish(i, c, 0.8, OK)
    assert s2.result()["committed_ops_per_s"] == 4.0  # at least the duration


def test_percentiles_nearest_rank():
    xs = [float(i) for i in range(1, 1001)]
    p = percentiles(xs, {"p50": 0.5, "p99": 0.99, "p999": 0.999, "max": 1.0})
    assert p == {"p50": 501.0, "p99": 991.0, "p999": 1000.0, "max": 1000.0}
    assert percentiles([], {"p50": 0.5}) == {"p50": None}


def test_pool_size():
    assert pool_size(1000) == 500 and pool_size(10) == 16 and pool_size(10, 3) == 3


@pytest.mark.parametrize(
    "args", [(0, 1.0, 1, 0.0), (1.0, 0, 1, 0.0), (1.0, 1.0, 0, 0.0), (-1.0, 1.0, 1, 0.0)]
)
def test_bad_schedules_are_refused(args):
    with pytest.raises(ValueError):
        Schedule(*args)


# --- the asyncio runner on a fake clock ---------------------------------------------------


class FakeTime:
    """A clock that moves only when the runner sleeps; operations wait on it with
    ``until``. ``stalls`` adds time to the next sleeps (a driver that lagged)."""

    def __init__(self, stalls: list[float] | None = None) -> None:
        self.now = 0.0
        self.stalls = list(stalls or [])
        self.timers: list[tuple[float, asyncio.Future]] = []

    def __call__(self) -> float:
        return self.now

    async def until(self, t: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.timers.append((t, fut))
        await fut

    async def sleep(self, d: float) -> None:
        await asyncio.sleep(0)  # operations just started take their first step now
        target = self.now + d + (self.stalls.pop(0) if self.stalls else 0.0)
        while True:
            due = sorted((t, i) for i, (t, _) in enumerate(self.timers) if t <= target)
            if not due:
                break
            t, i = due[0]
            self.now = t
            self.timers.pop(i)[1].set_result(None)
            for _ in range(3):  # let the woken operation finish at this time
                await asyncio.sleep(0)
        self.now = target


def _run(op, fake: FakeTime, **kw):
    async def main():
        return await run_open_loop(op, clock=fake, sleep=fake.sleep, **kw)

    return asyncio.run(main())


def test_runner_counts_a_stalled_driver_in_the_latency():
    fake = FakeTime(stalls=[1.0])  # the first sleep (0.25 s) lasts 1.25 s

    async def op(client, i):
        return None  # completes at once

    r = _run(op, fake, rate=RATE, duration_s=2.0, clients=8, drain_s=1.0)
    assert r["scheduled"] == 8 and r["started"] == 8 and r["not_started"] == 0
    # ops 1..5 (due 0.25..1.25) all started at 1.25: each counts from its own schedule.
    assert r["latency_ms"]["max"] == 1000.0
    assert r["start_lag_ms"]["max"] == 1000.0
    assert r["ok"] == 8 and r["committed_ops_per_s"] == 4.0


def test_runner_with_slow_operations_drops_what_the_pool_cannot_start():
    fake = FakeTime()

    async def op(client, i):
        await fake.until(fake.now + 1.0)  # every operation takes 1 s

    r = _run(op, fake, rate=RATE, duration_s=3.0, clients=2, drain_s=5.0)
    # Two in flight at a time: ops 0,1 start, 2,3 are dropped, 4,5 start when 0,1 end...
    assert r["scheduled"] == 12 and r["started"] == 6 and r["not_started"] == 6
    assert r["ok"] == 6 and r["max_in_flight"] == 2
    assert r["latency_ms"]["p50"] == r["latency_ms"]["max"] == 1000.0
    # The last ones (started at 2.0 and 2.25) completed during the drain.
    assert r["elapsed_s"] == 3.25 and r["committed_ops_per_s"] == round(6 / 3.25, 1)


def test_runner_abandons_what_outlives_the_drain_and_classifies_errors():
    fake = FakeTime()
    never = None

    async def op(client, i):
        nonlocal never
        if i % 2:
            raise TimeoutError("outcome unknown")
        if never is None:
            never = asyncio.Event()
        await never.wait()

    def classify(e):
        return UNKNOWN if isinstance(e, TimeoutError) else "other"

    r = _run(op, fake, rate=RATE, duration_s=1.0, clients=4, classify=classify, drain_s=0.5)
    assert r["started"] == 4 and r["unknown"] == 2
    assert r["errors"] == {ABANDONED: 2} and r["ok"] == 0


def test_runner_retires_a_client_whose_operation_failed_unexpectedly():
    fake = FakeTime()

    async def op(client, i):
        raise RuntimeError("a bug")  # default classify: RETIRE

    r = _run(op, fake, rate=RATE, duration_s=1.0, clients=1, drain_s=0.1)
    assert r["started"] == 1 and r["not_started"] == 3
    assert r["errors"] == {RETIRE: 1}
