"""Scout (paper 2.4): runs phase 1 of the synod protocol for its leader.

One scout process serves one leader and runs any number of ballots, one run per
(epoch, ballot); starting a higher ballot in an epoch abandons the lower one. A run
sends p1a to every acceptor of the configuration and re-sends to the silent ones every
``Timing.retry``, until a majority has answered with this ballot (``Adopted``, with the
pvalues reduced by pmax) or one acceptor answers with a higher ballot (``Preempted``).
Retransmissions back off exponentially while nobody answers (:class:`RetryTimer`).

A scout keeps nothing on disk: if it restarts, its leader sends ``StartScout`` again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import (
    Adopted,
    Effect,
    Message,
    P1a,
    P1b,
    Preempted,
    Retire,
    Send,
    StartScout,
    Timer,
)
from .timing import RetryTimer, Timing
from .types import Ballot, Config, ProtocolViolation, PValue

RETRY = "retry"


@dataclass(slots=True)
class ScoutRun:
    config: Config
    ballot: Ballot
    waitfor: set[str]
    pvalues: dict[int, PValue] = field(default_factory=dict)
    floor: int = 0
    collected_below: int = 0  # the highest collected mark seen (and the floor)


class Scout:
    """A pure scout: ``handle(msg, now)`` returns effects."""

    def __init__(self, scout_id: str, leader_id: str, timing: Timing) -> None:
        self.id = scout_id
        self.leader = leader_id
        self.timing = timing
        self._retry = RetryTimer(RETRY, timing.retry)
        self.runs: dict[int, ScoutRun] = {}  # epoch -> the run for the highest ballot

    def start(self, now: int) -> list[Effect]:
        return []

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        match msg:
            case StartScout():
                return self._on_start(msg)
            case P1b():
                return self._on_p1b(msg)
            case Retire(epoch=upto):
                for epoch in [e for e in self.runs if e <= upto]:
                    del self.runs[epoch]
                return []
            case Timer(name=name) if name == RETRY:
                self._retry.fired()
                return self._on_retry()
            case _:
                return []

    def _p1a_to(self, run: ScoutRun, dsts: list[str]) -> list[Effect]:
        msg = P1a(self.id, run.config.epoch, run.ballot, run.floor)
        return [Send(a, msg) for a in dsts]

    def _on_start(self, m: StartScout) -> list[Effect]:
        epoch = m.config.epoch
        cur = self.runs.get(epoch)
        if cur is not None and cur.ballot > m.ballot:
            return []  # stale request for an abandoned ballot
        if cur is not None and cur.ballot == m.ballot:
            # Duplicate: our leader is retrying; re-send to the silent acceptors.
            return self._p1a_to(cur, [a for a in cur.config.acceptors if a in cur.waitfor])
        run = ScoutRun(m.config, m.ballot, set(m.config.acceptors), {}, m.floor, m.floor)
        self.runs[epoch] = run
        self._retry.progress()
        return [*self._p1a_to(run, list(m.config.acceptors)), *self._retry.arm()]

    def _on_p1b(self, m: P1b) -> list[Effect]:
        run = self.runs.get(m.epoch)
        if run is None or run.ballot != m.for_ballot or m.src not in run.waitfor:
            return []  # stale, duplicate, or for an abandoned ballot
        if m.ballot > run.ballot:
            del self.runs[m.epoch]
            return [Send(self.leader, Preempted(m.epoch, run.ballot, m.ballot))]
        if m.ballot != run.ballot:
            # An acceptor always adopts a higher ballot, so this cannot happen.
            raise ProtocolViolation(f"A1: p1b for {run.ballot} carries lower ballot {m.ballot}")
        for pv in m.accepted:
            cur = run.pvalues.get(pv.slot)
            if cur is None or pv.ballot > cur.ballot:
                run.pvalues[pv.slot] = pv
        # A slot below any answering acceptor's collected mark is decided, and known to
        # every replica: the leader must not run phase 2 for it (paper 4.2).
        run.collected_below = max(run.collected_below, m.collected_below)
        run.waitfor.discard(m.src)
        self._retry.progress()
        if len(run.config.acceptors) - len(run.waitfor) < run.config.quorum:
            return []
        del self.runs[m.epoch]
        below = run.collected_below
        pvals = tuple(run.pvalues[s] for s in sorted(run.pvalues) if s >= below)
        return [Send(self.leader, Adopted(m.epoch, run.ballot, pvals, below))]

    def _on_retry(self) -> list[Effect]:
        if not self.runs:
            return []
        effects: list[Effect] = []
        for epoch in sorted(self.runs):
            run = self.runs[epoch]
            effects += self._p1a_to(run, [a for a in run.config.acceptors if a in run.waitfor])
        effects += self._retry.arm()
        return effects
