"""Acceptor (paper 2.3), with one pvalue kept per slot (paper 4.1).

State, per configuration epoch: ``ballot_num`` (the highest ballot adopted) and
``accepted`` (slot -> the highest-ballot pvalue accepted for that slot). Both are
durable: every change is a :class:`Persist` effect that comes before the reply, and a
restarted acceptor is rebuilt from those records (:meth:`Acceptor.recover`).

Paper invariants kept here:
  A1  ballot_num only increases.
  A2  a pvalue is accepted only at the acceptor's current ballot_num.
  A3  accepted pvalues are never forgotten (with 4.1: a slot's pvalue is replaced
      only by one with a higher ballot).

One deliberate difference from the paper's figure: a p2a whose ballot is *higher*
than ``ballot_num`` is adopted and then accepted (classic Paxos), instead of
rejected. A p2a at ballot b exists only after a majority adopted b, so this is safe,
and without it a lost p1a could leave a commander unable to reach a majority forever.

Garbage collection (paper 4.2): a :class:`Collect` from a leader says every slot below
``below`` is applied and durable at every replica that could need it. The acceptor
forgets those pvalues and keeps a *collected mark*: it never accepts a slot below it
again, and reports it in every p1b and p2b, so that a new leader never mistakes a
collected slot for an empty one (and never runs phase 2 for it). A p1b carries only
slots at or above both the mark and the p1a's floor. The log is compacted by an
:class:`AcceptorSnapshot` record once the records it holds for forgotten or replaced
pvalues outnumber the live ones (by ``COMPACT_SLACK``), so its size follows the live
state, whatever the size of the values.
A p2a for a pvalue the acceptor already holds (same ballot, so same value) is
acknowledged again without being persisted again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .messages import (
    AcceptorAccept,
    AcceptorCollected,
    AcceptorPromise,
    AcceptorSnapshot,
    Collect,
    DurableRecord,
    Effect,
    Message,
    P1a,
    P1b,
    P2a,
    P2b,
    Persist,
    Send,
    Timer,
)
from .types import BOTTOM, Ballot, PValue


@dataclass(slots=True)
class AcceptorEpoch:
    """An acceptor's state for one configuration epoch."""

    ballot_num: Ballot = BOTTOM
    accepted: dict[int, PValue] = field(default_factory=dict)
    collected_below: int = 0  # every slot below was decided and forgotten (paper 4.2)


COMPACT_SLACK = 8
"""The log is compacted once it holds this many more dead pvalue records than live ones
(or 64 more records of any kind than four times the live pvalues)."""


class Acceptor:
    """A pure acceptor: ``handle(msg, now)`` returns effects; it never does I/O."""

    def __init__(self, acceptor_id: str) -> None:
        self.id = acceptor_id
        self.epochs: dict[int, AcceptorEpoch] = {}
        self.records = 0  # records in the durable log since its last snapshot
        self.dead = 0  # pvalues in those records since forgotten or replaced

    @classmethod
    def recover(cls, acceptor_id: str, records: Iterable[DurableRecord]) -> Acceptor:
        """Rebuild an acceptor from its durable records, in the order they were persisted."""
        acc = cls(acceptor_id)
        for rec in records:
            acc._apply(rec)
            acc.records += 1
        return acc

    def start(self, now: int) -> list[Effect]:
        return []

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        match msg:
            case P1a():
                return self._on_p1a(msg)
            case P2a():
                return self._on_p2a(msg)
            case Collect():
                return self._on_collect(msg)
            case _:
                return []  # not an acceptor message: ignore (see messages.py)

    def state(self, epoch: int) -> AcceptorEpoch:
        st = self.epochs.get(epoch)
        if st is None:
            st = self.epochs[epoch] = AcceptorEpoch()
        return st

    def _apply(self, rec: DurableRecord) -> None:
        match rec:
            case AcceptorPromise(epoch=e, ballot=b):
                st = self.state(e)
                if b > st.ballot_num:
                    st.ballot_num = b
            case AcceptorAccept(epoch=e, pvalues=pvs):
                st = self.state(e)
                for pv in pvs:
                    if pv.slot < st.collected_below:
                        continue
                    cur = st.accepted.get(pv.slot)
                    if cur is None or pv.ballot >= cur.ballot:
                        st.accepted[pv.slot] = pv
                        self.dead += cur is not None
            case AcceptorCollected(epoch=e, below=below):
                st = self.state(e)
                if below > st.collected_below:
                    st.collected_below = below
                    kept = {s: pv for s, pv in st.accepted.items() if s >= below}
                    self.dead += len(st.accepted) - len(kept)
                    st.accepted = kept
            case AcceptorSnapshot(epochs=epochs):
                self.epochs = {
                    e: AcceptorEpoch(b, {pv.slot: pv for pv in pvs}, below)
                    for e, b, below, pvs in epochs
                }
                self.records = self.dead = 0
            case _:
                raise TypeError(f"not an acceptor record: {rec!r}")

    def _persist(self, rec: DurableRecord) -> Persist:
        self._apply(rec)
        self.records += 1
        return Persist(rec)

    def snapshot(self) -> AcceptorSnapshot:
        """All of this acceptor's state as one record."""
        return AcceptorSnapshot(
            tuple(
                (
                    e,
                    st.ballot_num,
                    st.collected_below,
                    tuple(st.accepted[s] for s in sorted(st.accepted)),
                )
                for e, st in sorted(self.epochs.items())
            )
        )

    def _on_p1a(self, m: P1a) -> list[Effect]:
        st = self.state(m.epoch)
        effects: list[Effect] = []
        if m.ballot > st.ballot_num:
            effects.append(self._persist(AcceptorPromise(m.epoch, m.ballot)))
        floor = max(m.floor, st.collected_below)
        accepted = tuple(st.accepted[s] for s in sorted(st.accepted) if s >= floor)
        effects.append(
            Send(
                m.src,
                P1b(self.id, m.epoch, m.ballot, st.ballot_num, accepted, st.collected_below),
            )
        )
        return effects

    def _on_p2a(self, m: P2a) -> list[Effect]:
        st = self.state(m.epoch)
        effects: list[Effect] = []
        slots: tuple[int, ...] = ()
        if m.ballot >= st.ballot_num:
            if m.ballot > st.ballot_num:
                effects.append(self._persist(AcceptorPromise(m.epoch, m.ballot)))
            # Never below the collected mark: those slots are decided, their pvalues gone.
            live = [(s, v) for s, v in m.entries if s >= st.collected_below]
            new = []
            for s, v in live:
                cur = st.accepted.get(s)
                if cur is None or cur.ballot != m.ballot:  # same ballot: same value (C1)
                    new.append(PValue(m.ballot, s, v))
            if new:
                effects.append(self._persist(AcceptorAccept(m.epoch, tuple(new))))
            slots = tuple(s for s, _ in live)
        effects.append(
            Send(
                m.src,
                P2b(self.id, m.epoch, m.ballot, st.ballot_num, slots, st.collected_below),
            )
        )
        return effects

    def _on_collect(self, m: Collect) -> list[Effect]:
        st = self.state(m.epoch)
        if m.below <= st.collected_below:
            return []  # stale or duplicate
        effects: list[Effect] = [self._persist(AcceptorCollected(m.epoch, m.below))]
        live = sum(len(e.accepted) for e in self.epochs.values())
        if self.dead > live + COMPACT_SLACK or self.records > 4 * live + 64:
            effects.append(self._persist(self.snapshot()))
        return effects
