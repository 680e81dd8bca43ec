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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .messages import (
    AcceptorAccept,
    AcceptorPromise,
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


class Acceptor:
    """A pure acceptor: ``handle(msg, now)`` returns effects; it never does I/O."""

    def __init__(self, acceptor_id: str) -> None:
        self.id = acceptor_id
        self.epochs: dict[int, AcceptorEpoch] = {}

    @classmethod
    def recover(cls, acceptor_id: str, records: Iterable[DurableRecord]) -> Acceptor:
        """Rebuild an acceptor from its durable records, in the order they were persisted."""
        acc = cls(acceptor_id)
        for rec in records:
            acc._apply(rec)
        return acc

    def start(self, now: int) -> list[Effect]:
        return []

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        match msg:
            case P1a():
                return self._on_p1a(msg)
            case P2a():
                return self._on_p2a(msg)
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
                    cur = st.accepted.get(pv.slot)
                    if cur is None or pv.ballot >= cur.ballot:
                        st.accepted[pv.slot] = pv
            case _:
                raise TypeError(f"not an acceptor record: {rec!r}")

    def _on_p1a(self, m: P1a) -> list[Effect]:
        st = self.state(m.epoch)
        effects: list[Effect] = []
        if m.ballot > st.ballot_num:
            rec = AcceptorPromise(m.epoch, m.ballot)
            self._apply(rec)
            effects.append(Persist(rec))
        accepted = tuple(st.accepted[s] for s in sorted(st.accepted))
        effects.append(Send(m.src, P1b(self.id, m.epoch, m.ballot, st.ballot_num, accepted)))
        return effects

    def _on_p2a(self, m: P2a) -> list[Effect]:
        st = self.state(m.epoch)
        effects: list[Effect] = []
        slots: tuple[int, ...] = ()
        if m.ballot >= st.ballot_num:
            if m.ballot > st.ballot_num:
                rec = AcceptorPromise(m.epoch, m.ballot)
                self._apply(rec)
                effects.append(Persist(rec))
            pvs = tuple(PValue(m.ballot, s, v) for s, v in m.entries)
            acc = AcceptorAccept(m.epoch, pvs)
            self._apply(acc)
            effects.append(Persist(acc))
            slots = tuple(s for s, _ in m.entries)
        effects.append(Send(m.src, P2b(self.id, m.epoch, m.ballot, st.ballot_num, slots)))
        return effects
