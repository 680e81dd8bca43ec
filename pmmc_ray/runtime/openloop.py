"""Open-loop load: operations start on a fixed schedule, whatever the system does.

A closed loop (N clients, each issuing its next operation when the last one returns)
slows down with the system it measures, so a stall shows up as a few slow operations
instead of the many that would have waited behind it ("coordinated omission"). Here,
operation i of a run at ``rate`` per second is scheduled at ``start + i / rate`` for
``duration_s`` seconds, and:

  - it starts at its scheduled time on a free client of a fixed pool (one operation in
    flight per client), however many operations are still in flight;
  - if no client of the pool is free then, it is not started and counted in
    ``not_started`` (dropped at the source), rather than started later: the schedule
    never slows down;
  - its latency runs from its *scheduled* time to its completion, so an operation that
    started late because the driver itself lagged still counts the lag.

:class:`Schedule` is the bookkeeping, with times passed in (tested without a clock);
:func:`run_open_loop` drives it on an asyncio loop, with an injectable clock and
sleep. Nothing here knows what an operation is, and nothing imports Ray: the pmmc-ray,
PySyncObj and etcd benches all use it.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

# Outcomes a caller's ``classify`` may return besides its own error kinds.
OK = "ok"
UNKNOWN = "unknown"
ABANDONED = "abandoned"  # still running when the drain time ran out: cancelled
RETIRE = "error"  # the client is not fit for another operation: it leaves the pool

AUTO_POOL_S = 0.5
MIN_POOL = 16
MAX_POOL = 50_000
_DRAIN_POLL_S = 0.01


def pool_size(rate: float, clients: int = 0) -> int:
    """The pool for a run at ``rate``: ``clients`` if given (> 0), else enough clients
    for operations of up to AUTO_POOL_S seconds at that rate (at least MIN_POOL)."""
    if clients > 0:
        return clients
    return min(MAX_POOL, max(MIN_POOL, math.ceil(rate * AUTO_POOL_S)))


def percentiles(xs: list[float], qs: dict[str, float]) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``xs`` (milliseconds, rounded), None when empty."""
    if not xs:
        return {name: None for name in qs}
    xs = sorted(xs)
    n = len(xs)
    return {name: round(xs[min(n - 1, int(q * n))], 3) for name, q in qs.items()}


LATENCY_QS = {"p50": 0.5, "p99": 0.99, "p999": 0.999, "max": 1.0}


class Schedule:
    """The bookkeeping of one open-loop run; every time is passed in (seconds)."""

    def __init__(self, rate: float, duration_s: float, clients: int, start: float) -> None:
        if rate <= 0 or duration_s <= 0 or clients < 1:
            raise ValueError("rate and duration_s must be > 0 and clients >= 1")
        self.rate, self.duration_s, self.start = rate, duration_s, start
        self.total = max(1, round(rate * duration_s))
        self.clients = clients
        self._free: deque[int] = deque(range(clients))
        self._next = 0  # the first operation not yet due
        self.started = 0
        self.not_started = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.retired = 0
        self.outcomes: Counter[str] = Counter()
        self.latencies_ms: list[float] = []  # of the operations that succeeded
        self.start_lag_ms: list[float] = []  # scheduled time -> actual start
        self.last_done = start

    def at(self, i: int) -> float:
        """The scheduled start of operation i."""
        return self.start + i / self.rate

    def next_time(self) -> float | None:
        """When the next operation is due; None when all have been."""
        return self.at(self._next) if self._next < self.total else None

    def due(self, now: float) -> list[tuple[int, int]]:
        """Take every operation due by ``now``: (operation, client) for each that gets a
        free client; the others are counted as not started."""
        out = []
        while self._next < self.total and self.at(self._next) <= now:
            i = self._next
            self._next += 1
            if not self._free:
                self.not_started += 1
                continue
            out.append((i, self._free.popleft()))
            self.started += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.start_lag_ms.append((now - self.at(i)) * 1000)
        return out

    def finish(self, i: int, client: int, now: float, outcome: str) -> None:
        """Operation i, on ``client``, ended at ``now`` with ``outcome`` (OK, UNKNOWN,
        ABANDONED, RETIRE or a caller's error kind). Latency counts from its schedule."""
        self.in_flight -= 1
        self.outcomes[outcome] += 1
        self.last_done = max(self.last_done, now)
        if outcome == OK:
            self.latencies_ms.append((now - self.at(i)) * 1000)
        if outcome in (RETIRE, ABANDONED):
            self.retired += 1
        else:
            self._free.append(client)

    def result(self) -> dict[str, Any]:
        """The figures of the run. ``committed_ops_per_s`` is the operations that
        succeeded over the time from the first scheduled start to the last completion
        (at least ``duration_s``)."""
        ok = self.outcomes[OK]
        elapsed = max(self.duration_s, self.last_done - self.start)
        errors = {k: v for k, v in sorted(self.outcomes.items()) if k not in (OK, UNKNOWN)}
        return {
            "offered_ops_per_s": self.rate,
            "duration_s": self.duration_s,
            "clients": self.clients,
            "scheduled": self.total,
            "started": self.started,
            "not_started": self.not_started,
            "ok": ok,
            "unknown": self.outcomes[UNKNOWN],
            "errors": errors,
            "elapsed_s": round(elapsed, 3),
            "committed_ops_per_s": round(ok / elapsed, 1),
            "latency_ms": percentiles(self.latencies_ms, LATENCY_QS),
            "start_lag_ms": percentiles(self.start_lag_ms, {"p50": 0.5, "p99": 0.99, "max": 1.0}),
            "max_in_flight": self.max_in_flight,
        }


def _kind_error(e: BaseException) -> str:
    return RETIRE


async def run_open_loop(
    op: Callable[[int, int], Awaitable[Any]],
    *,
    rate: float,
    duration_s: float,
    clients: int,
    classify: Callable[[BaseException], str] = _kind_error,
    drain_s: float = 30.0,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> dict[str, Any]:
    """Run ``op(client, i)`` for each operation i of the schedule on a free client of
    ``clients``; an exception it raises is an outcome by ``classify`` (default: RETIRE).

    After the last scheduled start, waits up to ``drain_s`` for the operations still in
    flight, then cancels the rest (ABANDONED). ``clock`` defaults to the loop's time;
    ``sleep`` must wait that long by that clock.
    """
    if clock is None:
        clock = asyncio.get_running_loop().time
    sched = Schedule(rate, duration_s, clients, clock())
    tasks: set[asyncio.Task] = set()
    live: dict[int, int] = {}  # operation -> client, until it is finished

    def finish(i: int, outcome: str) -> None:
        sched.finish(i, live.pop(i), clock(), outcome)

    async def one(i: int, client: int) -> None:
        try:
            await op(client, i)
        except asyncio.CancelledError:
            finish(i, ABANDONED)
            raise
        except Exception as e:
            finish(i, classify(e))
        else:
            finish(i, OK)

    while True:
        for i, client in sched.due(clock()):
            live[i] = client
            t = asyncio.ensure_future(one(i, client))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        nxt = sched.next_time()
        if nxt is None:
            break
        await sleep(max(0.0, nxt - clock()))
    # The drain is timed by the same clock and sleep as the schedule (so a test can
    # drive both); polling every 10 ms only decides when it ends, not any latency.
    deadline = clock() + drain_s
    while tasks and clock() < deadline:
        await sleep(min(_DRAIN_POLL_S, max(0.0, deadline - clock())))
    pending = list(tasks)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for i in list(live):  # cancelled before it ever ran
        finish(i, ABANDONED)
    return sched.result()
