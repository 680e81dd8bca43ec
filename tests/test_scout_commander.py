"""Scout and commander unit tests (paper 2.4): exact effects for each message."""

from __future__ import annotations

import pytest
from helpers import ballot, batch, sends

from pmmc_ray.core import Commander, ProtocolViolation, PValue, Scout, Send, SetTimer, Timer
from pmmc_ray.core.messages import (
    Adopted,
    Decisions,
    P1a,
    P1b,
    P2a,
    P2b,
    Phase2,
    Preempted,
    StartScout,
)

X = batch(("put", "k", "x"))
Y = batch(("put", "k", "y"), client="d")


# --- scout ---------------------------------------------------------------------------


def test_scout_sends_p1a_to_every_acceptor_and_arms_retry(config, timing):
    s = Scout("scout-0", "leader-0", timing)
    effects = s.handle(StartScout(config, ballot(1)), 0)
    assert effects == [
        Send("acceptor-0", P1a("scout-0", 0, ballot(1))),
        Send("acceptor-1", P1a("scout-0", 0, ballot(1))),
        Send("acceptor-2", P1a("scout-0", 0, ballot(1))),
        SetTimer("retry", timing.retry, 0.2),
    ]


def test_scout_adopted_by_majority_reports_pmax(config, timing):
    s = Scout("scout-0", "leader-0", timing)
    s.handle(StartScout(config, ballot(3)), 0)
    low = PValue(ballot(1, "leader-1"), 7, X)
    high = PValue(ballot(2, "leader-1"), 7, Y)
    assert s.handle(P1b("acceptor-0", 0, ballot(3), ballot(3), (low,)), 0) == []
    # a duplicate p1b does not count twice
    assert s.handle(P1b("acceptor-0", 0, ballot(3), ballot(3), (low,)), 0) == []
    effects = s.handle(P1b("acceptor-2", 0, ballot(3), ballot(3), (high,)), 0)
    assert effects == [Send("leader-0", Adopted(0, ballot(3), (high,)))]
    # the run is over: later answers are stale
    assert s.handle(P1b("acceptor-1", 0, ballot(3), ballot(3), ()), 0) == []


def test_scout_preempted_by_a_higher_ballot(config, timing):
    s = Scout("scout-0", "leader-0", timing)
    s.handle(StartScout(config, ballot(3)), 0)
    effects = s.handle(P1b("acceptor-1", 0, ballot(3), ballot(4, "leader-1"), ()), 0)
    assert effects == [Send("leader-0", Preempted(0, ballot(3), ballot(4, "leader-1")))]


def test_scout_retry_resends_only_to_silent_acceptors(config, timing):
    s = Scout("scout-0", "leader-0", timing)
    s.handle(StartScout(config, ballot(3)), 0)
    s.handle(P1b("acceptor-1", 0, ballot(3), ballot(3), ()), 0)
    assert s.handle(Timer("retry"), 25) == [
        Send("acceptor-0", P1a("scout-0", 0, ballot(3))),
        Send("acceptor-2", P1a("scout-0", 0, ballot(3))),
        SetTimer("retry", 2 * timing.retry, 0.2),  # nobody answered since: back off
    ]
    # still silent: the wait keeps doubling, up to 16x
    waits = [
        e.delay for _ in range(6) for e in s.handle(Timer("retry"), 0) if isinstance(e, SetTimer)
    ]
    assert waits == [4 * timing.retry, 8 * timing.retry] + [16 * timing.retry] * 4
    # an answer resets it
    s.handle(P1b("acceptor-0", 0, ballot(3), ballot(9, "leader-1"), ()), 0)


def test_scout_abandons_a_lower_ballot_for_a_higher_one(config, timing):
    s = Scout("scout-0", "leader-0", timing)
    s.handle(StartScout(config, ballot(3)), 0)
    s.handle(StartScout(config, ballot(5)), 0)
    assert s.handle(P1b("acceptor-1", 0, ballot(3), ballot(3), ()), 0) == []
    assert s.handle(StartScout(config, ballot(3)), 0) == []


# --- commander -----------------------------------------------------------------------


def test_commander_batches_p2a_per_acceptor(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    effects = c.handle(Phase2(config, ballot(1), ((1, X), (2, Y))), 0)
    msg = P2a("commander-0", 0, ballot(1), ((1, X), (2, Y)))
    assert effects == [
        Send("acceptor-0", msg),
        Send("acceptor-1", msg),
        Send("acceptor-2", msg),
        SetTimer("retry", timing.retry, 0.2),
    ]


def test_commander_decides_on_majority_and_tells_every_replica(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    c.handle(Phase2(config, ballot(1), ((1, X), (2, Y))), 0)
    assert c.handle(P2b("acceptor-0", 0, ballot(1), ballot(1), (1, 2)), 0) == []
    assert c.handle(P2b("acceptor-0", 0, ballot(1), ballot(1), (1, 2)), 0) == []  # duplicate
    effects = c.handle(P2b("acceptor-2", 0, ballot(1), ballot(1), (2,)), 0)
    assert effects == [
        Send("replica-0", Decisions(((2, Y),), ballot(1))),
        Send("replica-1", Decisions(((2, Y),), ballot(1))),
    ]


def test_commander_preempted(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    c.handle(Phase2(config, ballot(1), ((1, X),)), 0)
    effects = c.handle(P2b("acceptor-1", 0, ballot(1), ballot(2, "leader-1"), ()), 0)
    assert effects == [Send("leader-0", Preempted(0, ballot(1), ballot(2, "leader-1")))]
    assert c.handle(P2b("acceptor-2", 0, ballot(1), ballot(1), (1,)), 0) == []


def test_commander_retry_resends_pending_to_silent_acceptors(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    c.handle(Phase2(config, ballot(1), ((1, X), (2, Y))), 0)
    c.handle(P2b("acceptor-0", 0, ballot(1), ballot(1), (1, 2)), 0)
    c.handle(P2b("acceptor-1", 0, ballot(1), ballot(1), (1,)), 0)  # slot 1 decided
    assert c.handle(Timer("retry"), 25) == [
        Send("acceptor-1", P2a("commander-0", 0, ballot(1), ((2, Y),))),
        Send("acceptor-2", P2a("commander-0", 0, ballot(1), ((2, Y),))),
        SetTimer("retry", 2 * timing.retry, 0.2),  # nobody answered since: back off
    ]


def test_commander_rejects_two_values_for_one_ballot_and_slot_c1(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    c.handle(Phase2(config, ballot(1), ((1, X),)), 0)
    with pytest.raises(ProtocolViolation, match="C1"):
        c.handle(Phase2(config, ballot(1), ((1, Y),)), 0)


def test_commander_rerun_of_decided_slot_resends_decision(config, timing):
    c = Commander("commander-0", "leader-0", timing)
    c.handle(Phase2(config, ballot(1), ((1, X),)), 0)
    c.handle(P2b("acceptor-0", 0, ballot(1), ballot(1), (1,)), 0)
    c.handle(P2b("acceptor-1", 0, ballot(1), ballot(1), (1,)), 0)
    effects = c.handle(Phase2(config, ballot(1), ((1, X),)), 0)
    assert [d for d, _ in sends(effects)] == ["acceptor-0", "acceptor-1", "acceptor-2"]
    c.handle(P2b("acceptor-0", 0, ballot(1), ballot(1), (1,)), 0)
    assert sends(c.handle(P2b("acceptor-2", 0, ballot(1), ballot(1), (1,)), 0)) == [
        ("replica-0", Decisions(((1, X),), ballot(1))),
        ("replica-1", Decisions(((1, X),), ballot(1))),
    ]
