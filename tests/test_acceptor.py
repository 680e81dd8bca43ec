"""Acceptor unit tests: one message in, the exact effects out (paper 2.3, 4.1)."""

from __future__ import annotations

from helpers import ballot, batch

from pmmc_ray.core import BOTTOM, Acceptor, Persist, PValue, Send
from pmmc_ray.core.messages import AcceptorAccept, AcceptorPromise, P1a, P1b, P2a, P2b

X = batch(("put", "k", "x"))
Y = batch(("put", "k", "y"))


def test_p1a_with_higher_ballot_is_adopted_persisted_then_answered():
    a = Acceptor("acceptor-0")
    effects = a.handle(P1a("scout-0", 0, ballot(1)), now=0)
    assert effects == [
        Persist(AcceptorPromise(0, ballot(1))),
        Send("scout-0", P1b("acceptor-0", 0, ballot(1), ballot(1), ())),
    ]


def test_p1a_with_lower_ballot_changes_nothing_and_reports_the_current_ballot():
    a = Acceptor("acceptor-0")
    a.handle(P1a("scout-1", 0, ballot(5, "leader-1")), 0)
    effects = a.handle(P1a("scout-0", 0, ballot(3)), 0)
    assert effects == [Send("scout-0", P1b("acceptor-0", 0, ballot(3), ballot(5, "leader-1"), ()))]


def test_p2a_at_current_ballot_is_accepted_persisted_then_acknowledged():
    a = Acceptor("acceptor-0")
    a.handle(P1a("scout-0", 0, ballot(1)), 0)
    effects = a.handle(P2a("commander-0", 0, ballot(1), ((1, X), (2, Y))), 0)
    pvs = (PValue(ballot(1), 1, X), PValue(ballot(1), 2, Y))
    assert effects == [
        Persist(AcceptorAccept(0, pvs)),
        Send("commander-0", P2b("acceptor-0", 0, ballot(1), ballot(1), (1, 2))),
    ]


def test_p2a_at_lower_ballot_is_rejected_with_the_current_ballot():
    a = Acceptor("acceptor-0")
    a.handle(P1a("scout-1", 0, ballot(2, "leader-1")), 0)
    effects = a.handle(P2a("commander-0", 0, ballot(1), ((1, X),)), 0)
    assert effects == [
        Send("commander-0", P2b("acceptor-0", 0, ballot(1), ballot(2, "leader-1"), ()))
    ]
    assert a.state(0).accepted == {}


def test_p2a_at_higher_ballot_adopts_it_first():
    a = Acceptor("acceptor-0")
    effects = a.handle(P2a("commander-0", 0, ballot(4), ((1, X),)), 0)
    assert effects == [
        Persist(AcceptorPromise(0, ballot(4))),
        Persist(AcceptorAccept(0, (PValue(ballot(4), 1, X),))),
        Send("commander-0", P2b("acceptor-0", 0, ballot(4), ballot(4), (1,))),
    ]


def test_one_pvalue_per_slot_the_highest_ballot_wins_section_4_1():
    a = Acceptor("acceptor-0")
    a.handle(P2a("commander-0", 0, ballot(1), ((1, X),)), 0)
    a.handle(P2a("commander-1", 0, ballot(2, "leader-1"), ((1, Y),)), 0)
    assert a.state(0).accepted == {1: PValue(ballot(2, "leader-1"), 1, Y)}
    effects = a.handle(P1a("scout-0", 0, ballot(3)), 0)
    assert effects[-1] == Send(
        "scout-0",
        P1b("acceptor-0", 0, ballot(3), ballot(3), (PValue(ballot(2, "leader-1"), 1, Y),)),
    )


def test_epochs_are_independent():
    a = Acceptor("acceptor-0")
    a.handle(P1a("scout-0", 0, ballot(9)), 0)
    effects = a.handle(P1a("scout-0", 1, ballot(0)), 0)
    assert effects[-1] == Send("scout-0", P1b("acceptor-0", 1, ballot(0), ballot(0), ()))
    assert a.state(0).ballot_num == ballot(9)


def test_recover_rebuilds_exactly_the_persisted_state():
    a = Acceptor("acceptor-0")
    records = []
    for msg in (
        P1a("scout-0", 0, ballot(1)),
        P2a("commander-0", 0, ballot(1), ((1, X),)),
        P1a("scout-1", 0, ballot(2, "leader-1")),
        P2a("commander-1", 0, ballot(2, "leader-1"), ((1, Y), (2, X))),
    ):
        records += [e.record for e in a.handle(msg, 0) if isinstance(e, Persist)]
    b = Acceptor.recover("acceptor-0", records)
    assert b.epochs == a.epochs
    assert Acceptor.recover("acceptor-0", []).state(0).ballot_num == BOTTOM


def test_messages_for_other_roles_are_ignored():
    a = Acceptor("acceptor-0")
    assert a.handle(P1b("acceptor-1", 0, ballot(1), ballot(1), ()), 0) == []


def test_collect_forgets_pvalues_below_the_mark_and_refuses_them_after():
    """Paper 4.2: a collected slot is decided; the mark travels in every p1b and p2b."""
    from pmmc_ray.core.messages import AcceptorCollected, Collect

    a = Acceptor("acceptor-0")
    a.handle(P2a("commander-0", 0, ballot(1), ((1, X), (2, Y), (3, X))), 0)
    assert a.handle(Collect("leader-0", 0, 3), 0) == [Persist(AcceptorCollected(0, 3))]
    assert set(a.state(0).accepted) == {3}
    assert a.handle(Collect("leader-0", 0, 2), 0) == []  # stale: the mark never goes back
    effects = a.handle(P2a("commander-0", 0, ballot(1), ((2, Y), (4, Y))), 0)
    assert effects == [
        Persist(AcceptorAccept(0, (PValue(ballot(1), 4, Y),))),
        Send("commander-0", P2b("acceptor-0", 0, ballot(1), ballot(1), (4,), 3)),
    ]
    (p1b,) = [
        e.msg for e in a.handle(P1a("scout-1", 0, ballot(2), floor=4), 0) if isinstance(e, Send)
    ]
    assert p1b.collected_below == 3
    assert [pv.slot for pv in p1b.accepted] == [4]  # 3 is below the p1a's floor
    back = Acceptor.recover(
        "acceptor-0", [AcceptorAccept(0, (PValue(ballot(1), 1, X),)), AcceptorCollected(0, 3)]
    )
    assert back.state(0).collected_below == 3 and back.state(0).accepted == {}


def test_a_pvalue_already_held_is_acknowledged_without_persisting_it_again():
    a = Acceptor("acceptor-0")
    a.handle(P2a("commander-0", 0, ballot(1), ((1, X),)), 0)
    effects = a.handle(P2a("commander-0", 0, ballot(1), ((1, X), (2, Y))), 0)
    assert effects[0] == Persist(AcceptorAccept(0, (PValue(ballot(1), 2, Y),)))
    assert effects[1].msg.slots == (1, 2)
    assert a.handle(P2a("commander-0", 0, ballot(1), ((1, X),)), 0) == [
        Send("commander-0", P2b("acceptor-0", 0, ballot(1), ballot(1), (1,)))
    ]


def test_the_log_is_compacted_into_one_snapshot_record():
    from pmmc_ray.core.acceptor import COMPACT_SLACK
    from pmmc_ray.core.messages import AcceptorSnapshot, Collect

    a = Acceptor("acceptor-0")
    records = []
    for s in range(1, 2 * COMPACT_SLACK + 40):
        records += [
            e.record
            for e in a.handle(P2a("c", 0, ballot(1), ((s, X),)), 0)
            if isinstance(e, Persist)
        ]
    effects = a.handle(Collect("leader-0", 0, 2 * COMPACT_SLACK + 38), 0)
    snap = effects[-1].record
    assert isinstance(snap, AcceptorSnapshot)
    back = Acceptor.recover("acceptor-0", [snap])
    assert back.epochs == a.epochs and back.records == a.records == 1
