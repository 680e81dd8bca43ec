"""Each invariant check of the simulator fails when its invariant is broken.

The paper numbers its invariants in section 2 (R1-R5 replicas, A1-A5 acceptors,
C1-C2 commanders/leaders). Here each check is fed a fabricated step that breaks
exactly one of them, and must report it by name; a clean step must report nothing.
"""

from __future__ import annotations

from helpers import ballot, batch

from pmmc_ray.app import KVStore
from pmmc_ray.core import (
    Acceptor,
    Batch,
    Command,
    Config,
    OpenSession,
    Persist,
    PValue,
    Replica,
    Send,
    Timing,
)
from pmmc_ray.core.messages import (
    AcceptorAccept,
    AcceptorPromise,
    Decisions,
    P2a,
    Propose,
    StartScout,
)
from pmmc_ray.sim.invariants import InvariantChecker

CFG = Config(
    0, 1, ("replica-0", "replica-1"), ("leader-0",), ("acceptor-0", "acceptor-1", "acceptor-2")
)
X = batch(("put", "k", "x"))
Y = batch(("put", "k", "y"), client="d")


def checker() -> InvariantChecker:
    return InvariantChecker({0: CFG.quorum})


def names(c: InvariantChecker) -> list[str]:
    return [v.split(":")[0] for v in c.violations]


def accept(c: InvariantChecker, aid: str, b, slot: int, value) -> None:
    acc = Acceptor(aid)
    acc.state(0).ballot_num = b
    acc.state(0).accepted[slot] = PValue(b, slot, value)
    c.after_step(aid, acc, [Persist(AcceptorAccept(0, (PValue(b, slot, value),)))])


def replica(slot_out: int = 1, digest: str = "") -> Replica:
    r = Replica("replica-0", (CFG,), KVStore(), Timing(window=2))
    r.slot_out = r.slot_in = slot_out
    r.digest = digest
    return r


def saved(r: Replica) -> list:
    """The effects of a step that made ``r``'s state durable (so D1 holds)."""
    return [Persist(r.checkpoint())]


def test_r1_two_decisions_for_one_slot():
    c = checker()
    c.after_step("replica-1", None, [Send("replica-0", Decisions(((1, X),)))])
    assert names(c) == []
    c.after_step("replica-1", None, [Send("replica-0", Decisions(((1, Y),)))])
    assert names(c) == ["R1"]


def test_e1_a_commander_deciding_without_a_majority():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    c.after_step("commander-0", None, [Send("replica-0", Decisions(((1, X),)))])
    assert names(c) == ["E1"]


def test_e1_a_commander_deciding_what_a_majority_accepted_is_fine():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    accept(c, "acceptor-2", ballot(1), 1, X)
    c.after_step("commander-0", None, [Send("replica-0", Decisions(((1, X),)))])
    assert names(c) == []


def test_e1_two_configurations_choosing_one_slot():
    c = checker()
    c.quorum_of[1] = 2
    accept(c, "acceptor-0", ballot(1), 1, X)
    accept(c, "acceptor-1", ballot(1), 1, X)
    for aid in ("acceptor-5", "acceptor-6"):
        acc = Acceptor(aid)
        acc.state(1).ballot_num = ballot(1)
        c.after_step(aid, acc, [Persist(AcceptorAccept(1, (PValue(ballot(1), 1, X),)))])
    assert names(c) == ["E1"]


def test_r2_applying_an_undecided_slot():
    c = checker()
    c.after_step("replica-0", replica(1), [])
    two = replica(2)
    c.after_step("replica-0", two, saved(two))
    assert names(c) == ["R2"]


def test_r3_same_slot_out_different_history():
    c = checker()
    c.after_step("replica-0", replica(1, "aaa"), [])
    c.after_step("replica-1", replica(1, "bbb"), [])
    assert names(c) == ["R3"]


def opened(client: str, *ops: tuple) -> Batch:
    """A batch in which ``client`` opens its session, then runs ``ops`` (ids 1, 2, ...)."""
    cmds = [Command(client, 0, OpenSession())]
    cmds += [Command(client, i + 1, op, 1) for i, op in enumerate(ops)]  # decided in slot 1
    return Batch(tuple(cmds))


def test_r3_state_that_no_replay_gives():
    c = checker()
    c.decided[1] = opened("a", ("put", "k", "v"))
    c.after_step("replica-0", replica(1), [])
    good = replica(2)
    good.app.apply(("put", "k", "v"))
    good.client_table["a"] = (1, 1, None)  # session of slot 1, command 1
    c.after_step("replica-0", good, saved(good))
    assert names(c) == []
    forgot_client = replica(2)
    forgot_client.app.apply(("put", "k", "v"))
    c.after_step("replica-1", forgot_client, saved(forgot_client))
    assert names(c) == ["R3"]


def test_r3_a_command_performed_twice():
    c = checker()
    c.decided[1] = opened("a", ("append", "k", "x"))
    c.decided[2] = Batch((Command("a", 1, ("append", "k", "x"), 1),))  # decided again later
    twice = replica(3)
    twice.app.apply(("append", "k", "x"))
    twice.app.apply(("append", "k", "x"))
    twice.client_table["a"] = (1, 1, None)
    c.after_step("replica-0", twice, saved(twice))
    assert names(c) == ["R3"]


def test_r4_slot_out_going_back():
    c = checker()
    c.decided[1] = X
    c.decided[2] = X
    c.after_step("replica-0", replica(3), [])
    c.after_step("replica-0", replica(2), [])
    assert "R4" in names(c)


def test_r5_proposing_beyond_the_window():
    c = checker()
    r = replica(1)
    c.after_step("replica-0", r, [Send("leader-0", Propose("replica-0", CFG, 1, ((3, X),)))])
    assert names(c) == ["R5"]


def test_a1_ballot_going_back_across_a_restart():
    c = checker()
    acc = Acceptor("acceptor-0")
    acc.state(0).ballot_num = ballot(3)
    c.after_step("acceptor-0", acc, [Persist(AcceptorPromise(0, ballot(3)))])
    c.on_restart("acceptor-0", Acceptor("acceptor-0"))
    assert names(c) == ["A1"]


def test_a2_accepting_at_another_ballot():
    c = checker()
    acc = Acceptor("acceptor-0")
    acc.state(0).ballot_num = ballot(5)
    c.after_step("acceptor-0", acc, [Persist(AcceptorAccept(0, (PValue(ballot(4), 1, X),)))])
    assert names(c) == ["A2"]


def test_a3_forgetting_a_pvalue_on_restart():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    restarted = Acceptor("acceptor-0")
    restarted.state(0).ballot_num = ballot(1)
    c.on_restart("acceptor-0", restarted)
    assert names(c) == ["A3"]


def test_a4_two_values_at_one_ballot():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    accept(c, "acceptor-1", ballot(1), 1, Y)
    assert names(c) == ["A4"]


def test_a5_other_value_accepted_after_a_choice():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    accept(c, "acceptor-1", ballot(1), 1, X)  # chosen
    assert names(c) == []
    accept(c, "acceptor-2", ballot(2), 1, Y)
    assert names(c) == ["A5"]


def test_c1_two_values_proposed_at_one_ballot():
    c = checker()
    c.after_step(
        "commander-0", None, [Send("acceptor-0", P2a("commander-0", 0, ballot(1), ((1, X),)))]
    )
    c.after_step(
        "commander-0", None, [Send("acceptor-1", P2a("commander-0", 0, ballot(1), ((1, Y),)))]
    )
    assert names(c) == ["C1"]


def test_c2_proposing_against_a_chosen_value():
    c = checker()
    accept(c, "acceptor-0", ballot(1), 1, X)
    accept(c, "acceptor-1", ballot(1), 1, X)
    c.after_step(
        "commander-1", None, [Send("acceptor-0", P2a("commander-1", 0, ballot(2), ((1, Y),)))]
    )
    assert names(c) == ["C2"]


def test_b1_ballot_reused_by_a_new_incarnation():
    c = checker()
    c.after_step("leader-0", None, [Send("scout-0", StartScout(CFG, ballot(2)))])
    c.after_step(
        "leader-0", None, [Send("scout-0", StartScout(CFG, ballot(2)))]
    )  # same incarnation
    assert names(c) == []
    c.on_restart("leader-0", None)
    c.after_step("leader-0", None, [Send("scout-0", StartScout(CFG, ballot(2)))])
    assert names(c) == ["B1"]


def test_d1_applying_a_slot_that_is_not_on_disk():
    c = checker()
    c.decided[1] = X
    r = replica(1)
    effects = r.handle(Decisions(((1, X),)), 0)  # persists ReplicaDecided first
    c.after_step("replica-0", r, effects)
    assert names(c) == []
    c.decided[2] = Y
    r.handle(Decisions(((2, Y),)), 0)
    c.after_step("replica-0", r, [])  # the same step without its Persist
    assert names(c) == ["D1"]


def test_d1_persisting_slots_with_a_gap():
    from pmmc_ray.core.messages import ReplicaDecided

    c = checker()
    c.after_step("replica-0", replica(1), [Persist(ReplicaDecided(((2, X),)))])
    assert names(c) == ["D1"]


def test_d2_restarting_behind_what_was_durable():
    c = checker()
    c.decided[1] = X
    r = replica(1)
    c.after_step("replica-0", r, r.handle(Decisions(((1, X),)), 0))
    c.on_restart("replica-0", replica(2))  # what the records give: fine
    assert names(c) == []
    c.on_restart("replica-0", replica(1))  # recovery lost the slot
    assert names(c) == ["D2"]
    c.on_disk_lost("replica-1")
    c.on_restart("replica-1", replica(1))  # a fresh start after a lost disk: fine
    assert names(c) == ["D2"]


def test_g2_collecting_what_no_replica_of_that_configuration_or_a_later_one_holds():
    from pmmc_ray.core.messages import AcceptorCollected

    c = checker()
    configs = {0: ("replica-0", "replica-1"), 1: ("replica-2", "replica-3")}
    c.replicas_since = lambda e: {r for ep, rs in configs.items() if ep >= e for r in rs}
    c.durable_slot_out.update({"replica-0": 5, "replica-1": 3, "replica-2": 2})
    acc = Acceptor("acceptor-0")
    # replica-0 of epoch 0 holds slots below 5; epoch 1's replicas have less: fine
    c.after_step("acceptor-0", acc, [Persist(AcceptorCollected(0, 5))])
    assert names(c) == []
    # nobody of epoch 1 or later holds slots below 4
    c.after_step("acceptor-0", acc, [Persist(AcceptorCollected(1, 4))])
    assert names(c) == ["G2"]
