"""Commander (paper 2.4): runs phase 2 of the synod protocol for its leader.

The paper spawns one commander per pvalue. Here one long-lived commander process per
leader runs every pvalue of that leader and batches them: all pending slots of a
ballot travel to an acceptor in one p2a, and the acceptor answers with one p2b
listing the slots it accepted. Per (ballot, slot) the logic is the paper's: wait for
a majority of p2b at this ballot, then send the decision to every replica; any higher
ballot in a p2b means preempted.

A run is kept per epoch, for the newest ballot seen in it. Silent acceptors get the
pending entries again after ``Timing.retry``, then after twice that, and so on while
none answers (:class:`RetryTimer`). A Phase2 for a slot already pending is
a retransmission: the p2a goes out again. A Phase2 for a slot that was already
decided runs again, which re-sends the decision to replicas that missed it; running
the same pvalue twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import (
    Decisions,
    Effect,
    Message,
    P2a,
    P2b,
    Phase2,
    Preempted,
    Retire,
    Send,
    Timer,
)
from .timing import RetryTimer, Timing, chunks
from .types import Ballot, Batch, Config, ProtocolViolation

RETRY = "retry"


@dataclass(slots=True)
class Pending:
    value: Batch
    waitfor: set[str]


@dataclass(slots=True)
class CommanderRun:
    config: Config
    ballot: Ballot
    pending: dict[int, Pending] = field(default_factory=dict)


class Commander:
    """A pure commander: ``handle(msg, now)`` returns effects."""

    def __init__(self, commander_id: str, leader_id: str, timing: Timing) -> None:
        self.id = commander_id
        self.leader = leader_id
        self.timing = timing
        self._retry = RetryTimer(RETRY, timing.retry)
        self.runs: dict[int, CommanderRun] = {}  # epoch -> run at the newest ballot

    def start(self, now: int) -> list[Effect]:
        return []

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        match msg:
            case Phase2():
                return self._on_phase2(msg)
            case P2b():
                return self._on_p2b(msg)
            case Retire(epoch=upto):
                for epoch in [e for e in self.runs if e <= upto]:
                    del self.runs[epoch]
                return []
            case Timer(name=name) if name == RETRY:
                self._retry.fired()
                return self._on_retry()
            case _:
                return []

    def _p2a(self, run: CommanderRun, acceptor: str, slots: list[int]) -> list[Effect]:
        entries = [(s, run.pending[s].value) for s in slots]
        return [
            Send(acceptor, P2a(self.id, run.config.epoch, run.ballot, part))
            for part in chunks(entries, self.timing.max_entries_per_message)
        ]

    def _on_phase2(self, m: Phase2) -> list[Effect]:
        epoch = m.config.epoch
        run = self.runs.get(epoch)
        if run is not None and run.ballot > m.ballot:
            return []  # our leader has since moved to a higher ballot
        if run is None or run.ballot < m.ballot:
            run = self.runs[epoch] = CommanderRun(m.config, m.ballot)
        per_acceptor: dict[str, list[int]] = {a: [] for a in m.config.acceptors}
        for slot, value in m.entries:
            p = run.pending.get(slot)
            if p is None:
                p = run.pending[slot] = Pending(value, set(m.config.acceptors))
                self._retry.progress()  # new work: retransmit it soon if unanswered
            elif p.value != value:
                # C1: one command per (ballot, slot). The leader broke it.
                raise ProtocolViolation(
                    f"C1: leader proposed two values for slot {slot} at {m.ballot}"
                )
            for a in m.config.acceptors:
                if a in p.waitfor:
                    per_acceptor[a].append(slot)
        effects: list[Effect] = []
        for a in m.config.acceptors:
            if per_acceptor[a]:
                effects += self._p2a(run, a, per_acceptor[a])
        effects += self._retry.arm()
        return effects

    def _on_p2b(self, m: P2b) -> list[Effect]:
        run = self.runs.get(m.epoch)
        if run is None or run.ballot != m.for_ballot:
            return []  # stale
        if m.ballot > run.ballot:
            del self.runs[m.epoch]
            return [Send(self.leader, Preempted(m.epoch, run.ballot, m.ballot))]
        if m.collected_below > 0:
            # Decided and collected (paper 4.2): the replicas have these; stop trying.
            for slot in [s for s in run.pending if s < m.collected_below]:
                del run.pending[slot]
        decided: list[tuple[int, Batch]] = []
        quorum = run.config.quorum
        n = len(run.config.acceptors)
        for slot in m.slots:
            p = run.pending.get(slot)
            if p is None or m.src not in p.waitfor:
                continue
            p.waitfor.discard(m.src)
            self._retry.progress()
            if n - len(p.waitfor) >= quorum:
                decided.append((slot, p.value))
                del run.pending[slot]
        if not decided:
            return []
        decided.sort(key=lambda e: e[0])
        effects: list[Effect] = []
        for part in chunks(decided, self.timing.max_entries_per_message):
            msg = Decisions(part, run.ballot)
            effects += [Send(r, msg) for r in run.config.replicas]
        return effects

    def _on_retry(self) -> list[Effect]:
        effects: list[Effect] = []
        for epoch in sorted(self.runs):
            run = self.runs[epoch]
            for a in run.config.acceptors:
                slots = sorted(s for s, p in run.pending.items() if a in p.waitfor)
                if slots:
                    effects += self._p2a(run, a, slots)
        if any(run.pending for run in self.runs.values()):
            effects += self._retry.arm()
        return effects
