"""Protocol constants and timeouts, in milliseconds of whatever clock the interpreter uses."""

from __future__ import annotations

from dataclasses import dataclass

from .messages import SetTimer


@dataclass(frozen=True, slots=True)
class Timing:
    """Timeouts and sizes shared by all roles of a deployment.

    Leader failure detection follows paper section 3: a passive leader pings the
    leader that preempted it every ``ping_interval``; if that leader has not answered
    "active" for ``timeout`` it scouts again. ``timeout`` grows by
    ``timeout_factor`` on every preemption and shrinks by ``timeout_decrease`` on
    every adoption, within [``timeout_min``, ``timeout_max``], so duelling leaders
    back off instead of preempting each other forever.
    """

    window: int = 8
    """WINDOW: how many slots a replica may propose beyond slot_out (paper 2.1)."""
    max_batch: int = 64
    """Most client commands decided in one slot."""
    max_inflight: int = 8
    """Most undecided proposals a replica keeps out at once. Requests that arrive
    meanwhile wait and then share one slot: under load this is what fills batches."""
    replica_tick: int = 40
    """Replica retransmits proposals / asks peers to catch up when stalled this long."""
    retry: int = 25
    """Scout and commander retransmit p1a / p2a to silent acceptors after this, doubling
    the wait on each retransmission without an answer (up to 16x)."""
    ping_interval: int = 20
    timeout_initial: int = 100
    timeout_min: int = 60
    timeout_max: int = 2000
    timeout_factor: float = 2.0
    timeout_decrease: int = 25
    scout_retry: int = 150
    """A leader re-sends StartScout if its scout (maybe restarted) has not answered."""
    retire_check: int = 1000
    """A leader asks a replica whether an epoch that has been idle this long is retired."""
    keep_decisions: int = 1000
    """Applied decisions a replica keeps to help peers catch up; older ones by snapshot."""
    state_chunk: int = 1 << 20
    """Bytes of application state per chunk of a state transfer."""
    max_sessions: int = 100_000
    """Client sessions the replicated client table keeps; beyond it the least recently
    used is evicted. Part of the replicated state's definition: every replica must use
    the same value."""
    snapshot_every: int = 1000
    """A replica writes a checkpoint of its state (a ReplicaSnapshot record, which lets
    its earlier records go) once this many slots were applied since the last one."""
    max_entries_per_message: int = 256
    """Largest number of (slot, batch) entries in one Propose / Phase2 / P2a / Decisions."""

    def __post_init__(self) -> None:
        for name in (
            "window",
            "max_batch",
            "max_inflight",
            "replica_tick",
            "retry",
            "ping_interval",
            "timeout_initial",
            "timeout_min",
            "timeout_max",
            "scout_retry",
            "retire_check",
            "keep_decisions",
            "snapshot_every",
            "state_chunk",
            "max_sessions",
            "max_entries_per_message",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Timing.{name} must be >= 1")
        if not self.timeout_min <= self.timeout_initial <= self.timeout_max:
            raise ValueError("Timing needs timeout_min <= timeout_initial <= timeout_max")
        if self.timeout_factor < 1.0:
            raise ValueError("Timing.timeout_factor must be >= 1")
        if self.timeout_decrease < 0:
            raise ValueError("Timing.timeout_decrease must be >= 0")


def chunks(entries: list, size: int) -> list[tuple]:
    """Split ``entries`` into tuples of at most ``size`` (for bounded message sizes)."""
    return [tuple(entries[i : i + size]) for i in range(0, len(entries), size)]


class RetryTimer:
    """A retransmission timer with exponential backoff, armed at most once at a time.

    Re-arming on every message would push the deadline back forever under steady load,
    and the retransmission would never fire. Each firing without progress doubles the
    next delay, up to ``cap``; :meth:`progress` goes back to ``delay``. A jitter of 20%
    keeps processes that lost the same peer from retrying in step.
    """

    JITTER = 0.2

    def __init__(self, name: str, delay: int, cap: int | None = None) -> None:
        self.name = name
        self.delay = delay
        self.cap = max(delay, cap if cap is not None else 16 * delay)
        self.current = delay
        self.armed = False

    def arm(self) -> list[SetTimer]:
        """A SetTimer effect, unless one is already pending."""
        if self.armed:
            return []
        self.armed = True
        return [SetTimer(self.name, self.current, self.JITTER)]

    def fired(self) -> None:
        """Call when the timer's Timer input arrives: the next wait is longer."""
        self.armed = False
        self.current = min(self.cap, self.current * 2)

    def progress(self) -> None:
        """An answer came: the next retransmission waits the base delay again."""
        self.current = self.delay
