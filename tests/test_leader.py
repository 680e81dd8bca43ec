"""Leader unit tests (paper 2.4 and 3): exact effects for each input."""

from __future__ import annotations

from helpers import ballot, batch, sends

from pmmc_ray.core import Config, Leader, Persist, PValue, Send, SetTimer, Timer
from pmmc_ray.core.messages import (
    Adopted,
    EpochQuery,
    LeaderRetired,
    LeaderRound,
    Leading,
    Phase2,
    Ping,
    Pong,
    Preempted,
    Progress,
    Propose,
    Retire,
    StartScout,
)

X = batch(("put", "k", "x"))
Y = batch(("put", "k", "y"), client="d")


def make(config, timing, **kw) -> Leader:
    return Leader("leader-0", config, timing, scout_id="scout-0", commander_id="commander-0", **kw)


def active_leader(config, timing) -> Leader:
    ldr = make(config, timing)
    ldr.start(0)
    ldr.handle(Adopted(0, ballot(0), ()), 0)
    return ldr


def test_start_persists_the_round_before_scouting(config, timing):
    ldr = make(config, timing)
    assert ldr.start(0) == [
        Persist(LeaderRound(0)),
        Send("scout-0", StartScout(config, ballot(0))),
        SetTimer("tick", timing.ping_interval),
    ]


def test_recovered_leader_never_reuses_a_round(config, timing):
    ldr = Leader.recover(
        "leader-0",
        config,
        timing,
        [LeaderRound(0), LeaderRound(4)],
        scout_id="scout-0",
        commander_id="commander-0",
    )
    ldr.start(0)
    effects = ldr.handle(Timer("tick"), ldr.timeout + 1)  # nobody else answered
    assert effects[:2] == [Persist(LeaderRound(5)), Send("scout-0", StartScout(config, ballot(5)))]


def recovered(config, timing) -> Leader:
    return Leader.recover(
        "leader-0", config, timing, [LeaderRound(4)], scout_id="scout-0", commander_id="commander-0"
    )


def test_restarted_leader_looks_for_an_active_one_before_scouting(config, timing):
    ldr = recovered(config, timing)
    assert ldr.start(0) == [
        Send("leader-1", Ping("leader-0", 0)),
        SetTimer("tick", timing.ping_interval),
    ]
    # meanwhile it tells whoever watches it that it does not lead
    assert ldr.handle(Ping("leader-1", 0), 1) == [
        Send("leader-1", Pong("leader-0", 0, False, True))
    ]
    ldr.handle(Pong("leader-1", 0, True), 5)
    # leader-1 leads: watch it past the hold instead of preempting it
    effects = ldr.handle(Timer("tick"), ldr.timeout + 1)
    assert effects == [
        Send("leader-1", Ping("leader-0", 0)),
        SetTimer("tick", timing.ping_interval),
    ]
    assert ldr.epochs[0].watching == "leader-1"
    # and scout only once leader-1 goes silent
    effects = ldr.handle(Timer("tick"), 5 + ldr.timeout + 1)
    assert effects[:2] == [Persist(LeaderRound(5)), Send("scout-0", StartScout(config, ballot(5)))]


def test_restarted_sole_leader_scouts_at_once(timing):
    solo = Config(0, 1, ("replica-0",), ("leader-0",), ("acceptor-0",))
    ldr = recovered(solo, timing)
    assert ldr.start(0)[:2] == [
        Persist(LeaderRound(5)),
        Send("scout-0", StartScout(solo, ballot(5))),
    ]


def test_a_preemption_backoff_stays_while_the_winner_answers(config, timing):
    # Only an adoption shrinks the timeout (paper 3): were it to shrink back with time,
    # leadership would change hands on every pause longer than the initial timeout.
    ldr = active_leader(config, timing)
    ldr.handle(Preempted(0, ballot(0), ballot(3, "leader-1")), 10)
    grown = ldr.timeout
    now = 10
    for _ in range(1000):
        now += timing.ping_interval
        ldr.handle(Pong("leader-1", 0, True, False, ballot(3, "leader-1")), now)
    assert ldr.timeout == grown


def test_at_a_first_start_only_the_first_leader_scouts_at_once(config, timing):
    second = Leader("leader-1", config, timing, scout_id="scout-1", commander_id="commander-1")
    assert second.start(0) == [
        Send("leader-0", Ping("leader-1", 0)),
        SetTimer("tick", timing.ping_interval),
    ]
    second.handle(Pong("leader-0", 0, True, False, ballot(0)), 3)
    effects = second.handle(Timer("tick"), second.timeout + 1)
    assert sends(effects) == [("leader-0", Ping("leader-1", 0))]  # watches, no duel
    assert second.timeout == timing.timeout_initial
    # and scouts when the first leader is not there
    lonely = Leader("leader-1", config, timing, scout_id="scout-1", commander_id="commander-1")
    lonely.start(0)
    # it looks for twice the timeout (one plus its place among the leaders)
    assert not any(
        isinstance(m, StartScout)
        for _, m in sends(lonely.handle(Timer("tick"), lonely.timeout + 1))
    )
    effects = lonely.handle(Timer("tick"), 2 * lonely.timeout + 1)
    assert any(isinstance(m, StartScout) for _, m in sends(effects))


def test_a_watcher_scouts_above_the_ballot_of_the_leader_it_watched(config, timing):
    # It joined by looking, never preempted: the Pongs told it the leader's ballot.
    second = Leader("leader-1", config, timing, scout_id="scout-1", commander_id="commander-1")
    second.start(0)
    second.handle(Pong("leader-0", 0, True, False, ballot(7)), 3)
    # leader-0 goes silent; past the look-first hold (twice the timeout for leader-1)
    effects = second.handle(Timer("tick"), 2 * second.timeout + 5)
    assert effects[:2] == [
        Persist(LeaderRound(8)),
        Send("scout-1", StartScout(config, ballot(8, "leader-1"))),
    ]


def test_only_the_first_leader_scouts_at_once_in_a_new_epoch(config, timing):
    # A reconfiguration: both leaders get the first proposal of epoch 1; only its first
    # leader scouts, so the two do not duel (the loser's timeout would double).
    new = type(config)(1, 9, config.replicas, config.leaders, config.acceptors)
    first, second = (
        active_leader(config, timing),
        Leader("leader-1", config, timing, scout_id="scout-1", commander_id="commander-1"),
    )
    second.start(0)
    propose = Propose("replica-0", new, 9, ((9, X),))
    assert any(isinstance(m, StartScout) for _, m in sends(first.handle(propose, 5)))
    assert sends(second.handle(propose, 5)) == [("leader-0", Ping("leader-1", 1))]


def test_adopted_overrides_proposals_with_pmax_and_runs_phase2(config, timing):
    ldr = make(config, timing)
    ldr.start(0)
    ldr.handle(Propose("replica-0", config, 1, ((1, X), (2, X))), 0)  # passive: stored only
    pv = PValue(ballot(0, "leader-1"), 2, Y)
    effects = ldr.handle(Adopted(0, ballot(0), (pv,)), 0)
    assert effects == [
        Send("commander-0", Phase2(config, ballot(0), ((1, X), (2, Y)))),
        # and the replicas learn whom to propose to first
        Send("replica-0", Leading("leader-0", 0, ballot(0))),
        Send("replica-1", Leading("leader-0", 0, ballot(0))),
    ]
    assert ldr.epochs[0].active


def test_stale_adopted_is_ignored(config, timing):
    ldr = make(config, timing)
    ldr.start(0)
    assert ldr.handle(Adopted(0, ballot(7), ()), 0) == []
    assert not ldr.epochs[0].active


def test_active_leader_runs_phase2_for_new_proposals(config, timing):
    ldr = active_leader(config, timing)
    effects = ldr.handle(Propose("replica-1", config, 1, ((1, X),)), 0)
    assert effects == [Send("commander-0", Phase2(config, ballot(0), ((1, X),)))]


def test_a_slot_keeps_its_first_proposal_and_a_repeat_reruns_it(config, timing):
    ldr = active_leader(config, timing)
    ldr.handle(Propose("replica-0", config, 1, ((1, X),)), 0)
    effects = ldr.handle(Propose("replica-1", config, 1, ((1, Y),)), 0)
    assert effects == [Send("commander-0", Phase2(config, ballot(0), ((1, X),)))]


def test_adoption_skips_phase2_below_reported_slot_out(config, timing):
    ldr = make(config, timing)
    ldr.start(0)
    ldr.handle(Propose("replica-0", config, 3, ((3, X),)), 0)
    pv = PValue(ballot(0, "leader-1"), 1, Y)
    effects = ldr.handle(Adopted(0, ballot(0), (pv,)), 0)
    assert effects[0] == Send("commander-0", Phase2(config, ballot(0), ((3, X),)))
    assert not any(isinstance(e.msg, Phase2) for e in effects[1:])
    assert ldr.epochs[0].proposals == {1: Y, 3: X}


def test_preempted_goes_passive_watches_the_winner_and_backs_off(config, timing):
    ldr = active_leader(config, timing)
    t0 = ldr.timeout
    assert ldr.handle(Preempted(0, ballot(0), ballot(3, "leader-1")), 10) == []
    ep = ldr.epochs[0]
    assert (ep.active, ep.scouting, ep.watching) == (False, False, "leader-1")
    assert ldr.timeout == min(timing.timeout_max, int(t0 * timing.timeout_factor))
    # the winner answers: keep watching, do not scout
    assert ldr.handle(Timer("tick"), 20) == [
        Send("leader-1", Ping("leader-0", 0)),
        SetTimer("tick", timing.ping_interval),
    ]
    ldr.handle(Pong("leader-1", 0, True), 21)
    # the winner goes silent for longer than the timeout: scout with a higher round
    effects = ldr.handle(Timer("tick"), 21 + ldr.timeout + 1)
    assert effects[:2] == [Persist(LeaderRound(4)), Send("scout-0", StartScout(config, ballot(4)))]


def test_pong_saying_not_active_does_not_count_as_alive(config, timing):
    ldr = active_leader(config, timing)
    ldr.handle(Preempted(0, ballot(0), ballot(3, "leader-1")), 0)
    ldr.handle(Pong("leader-1", 0, False), ldr.timeout)
    effects = ldr.handle(Timer("tick"), ldr.timeout + 1)
    assert isinstance(effects[0], Persist)


def test_adoption_shrinks_the_timeout_additively(config, timing):
    ldr = make(config, timing)
    ldr.timeout = 500
    ldr.start(0)
    ldr.handle(Adopted(0, ballot(0), ()), 0)
    assert ldr.timeout == 500 - timing.timeout_decrease


def test_stale_preempted_is_ignored(config, timing):
    ldr = active_leader(config, timing)
    assert ldr.handle(Preempted(0, ballot(0), ballot(0)), 0) == []
    assert ldr.epochs[0].active


def test_ping_is_answered_with_the_active_flag(config, timing):
    ldr = active_leader(config, timing)
    assert ldr.handle(Ping("leader-1", 0), 0) == [
        Send("leader-1", Pong("leader-0", 0, True, False, ballot(0)))
    ]
    assert ldr.handle(Ping("leader-1", 9), 0) == [Send("leader-1", Pong("leader-0", 9, False))]


def test_active_leader_gives_way_to_a_higher_ballot_it_hears_of_in_a_pong(config, timing):
    # Replicas send proposals to the newest leader only, so an active leader that was
    # preempted may never hear of it from its commander: its pings tell it.
    ldr = active_leader(config, timing)
    assert sends(ldr.handle(Timer("tick"), 20)) == [("leader-1", Ping("leader-0", 0))]
    ldr.handle(Pong("leader-1", 0, True, False, ballot(0)), 21)  # not higher
    assert ldr.epochs[0].active
    ldr.handle(Pong("leader-1", 0, True, False, ballot(2, "leader-1")), 22)
    ep = ldr.epochs[0]
    assert (ep.active, ep.watching, ep.ballot_num) == (False, "leader-1", ballot(3))
    # it now watches leader-1 and scouts only when leader-1 goes silent
    assert sends(ldr.handle(Timer("tick"), 40)) == [("leader-1", Ping("leader-0", 0))]


def test_leader_joins_a_new_epoch_on_its_first_proposal(config, timing):
    ldr = active_leader(config, timing)
    new = type(config)(
        1, 9, config.replicas, config.leaders, ("acceptor-3", "acceptor-1", "acceptor-2")
    )
    effects = ldr.handle(Propose("replica-0", new, 5, ((9, X),)), 0)
    assert effects == [Persist(LeaderRound(1)), Send("scout-0", StartScout(new, ballot(1)))]
    assert ldr.epochs[1].proposals == {9: X}


def test_old_epoch_retires_once_every_replica_reports_it_passed(config, timing):
    ldr = active_leader(config, timing)
    new = type(config)(1, 9, config.replicas, config.leaders, config.acceptors)
    ldr.handle(Propose("replica-0", new, 9, ((9, X),)), 0)
    assert 0 in ldr.epochs  # replica-1 has not passed slot 9 yet
    effects = ldr.handle(Propose("replica-1", new, 9, ((10, Y),)), 0)
    assert effects[0] == Persist(LeaderRetired(0))
    assert ("scout-0", Retire(0)) in [(e.dst, e.msg) for e in effects if isinstance(e, Send)]
    assert list(ldr.epochs) == [1]
    # a late proposal for the retired epoch does not bring it back
    assert ldr.handle(Propose("replica-0", config, 8, ((8, X),)), 0) == []
    assert list(ldr.epochs) == [1]


def test_a_passive_leader_retires_old_epochs_from_progress_reports(config, timing):
    # Proposals go to the leader that leads; the others hear of the replicas through
    # their Progress reports, and retire finished epochs from those too.
    ldr = make(config, timing)
    ldr.start(0)
    new = type(config)(1, 9, config.replicas, config.leaders, config.acceptors)
    # it joins the new epoch (looking for its leader first), which it leads too
    assert sends(ldr.handle(Progress("replica-0", 9, new), 0)) == [
        ("leader-1", Ping("leader-0", 1))
    ]
    assert 1 in ldr.epochs and not ldr.epochs[1].scouting
    effects = ldr.handle(Progress("replica-1", 10, new), 0)
    assert effects[0] == Persist(LeaderRetired(0))
    assert list(ldr.epochs) == [1]


def test_an_active_leader_reminds_replicas_that_it_leads(config, timing):
    ldr = active_leader(config, timing)
    effects = ldr.handle(Progress("replica-1", 1, config), 0)
    assert effects == [Send("replica-1", Leading("leader-0", 0, ballot(0)))]
    passive = make(config, timing)
    passive.start(0)
    assert passive.handle(Progress("replica-1", 1, config), 0) == []


def test_a_restarted_leader_looks_first_in_the_first_epoch_it_joins(config, timing):
    # Its first configuration is retired: it joins a later one on a proposal, and looks
    # for the leader there before scouting, as at a start.
    ldr = Leader.recover(
        "leader-0",
        config,
        timing,
        [LeaderRound(4), LeaderRetired(0)],
        scout_id="scout-0",
        commander_id="commander-0",
    )
    assert ldr.start(0) == [SetTimer("tick", timing.ping_interval)]
    new = type(config)(1, 9, config.replicas, config.leaders, config.acceptors)
    effects = ldr.handle(Propose("replica-0", new, 9, ((9, X),)), 0)
    assert sends(effects) == [("leader-1", Ping("leader-0", 1))]
    # the next epoch it joins in this life, it scouts at once
    newer = type(config)(2, 20, config.replicas, config.leaders, config.acceptors)
    effects = ldr.handle(Propose("replica-0", newer, 20, ((20, X),)), 0)
    assert any(isinstance(m, StartScout) for _, m in sends(effects))


def test_retired_epochs_stay_retired_after_a_restart(config, timing):
    ldr = Leader.recover(
        "leader-0",
        config,
        timing,
        [LeaderRound(3), LeaderRetired(0)],
        scout_id="scout-0",
        commander_id="commander-0",
    )
    assert ldr.start(0) == [SetTimer("tick", timing.ping_interval)]
    assert ldr.epochs == {}


def test_idle_epoch_asks_replicas_whether_it_is_retired(config, timing):
    ldr = active_leader(config, timing)
    effects = ldr.handle(Timer("tick"), timing.retire_check)
    assert effects == [
        Send("replica-0", EpochQuery("leader-0", 0)),
        Send("replica-1", EpochQuery("leader-0", 0)),
        Send("leader-1", Ping("leader-0", 0)),  # is somebody else leading now?
        SetTimer("tick", timing.ping_interval),
    ]
    assert ldr.handle(Retire(0), 0)[0] == Persist(LeaderRetired(0))
    assert ldr.epochs == {}


def test_leader_not_in_a_config_ignores_its_proposals(config, timing):
    ldr = Leader("leader-9", config, timing, scout_id="scout-9", commander_id="commander-9")
    assert ldr.start(0) == [SetTimer("tick", timing.ping_interval)]
    assert ldr.handle(Propose("replica-0", config, 1, ((1, X),)), 0) == []


def test_collect_point_is_the_minimum_durable_slot_out_of_every_replica_known(config, timing):
    """Paper 4.2: acceptors forget a slot only once every replica that could need it,
    including the members of newer configurations, has it on disk."""
    from pmmc_ray.core.messages import Collect, Progress

    ldr = make(config, timing)
    ldr.start(0)
    ldr.handle(Adopted(0, ballot(0), ()), 0)
    ldr.handle(Progress("replica-0", 7, config), 0)
    tick = [m for d, m in sends(ldr.handle(Timer("tick"), 20)) if isinstance(m, Collect)]
    assert tick == []  # replica-1 has not reported
    newer = Config(1, 9, ("replica-0", "replica-9"), config.leaders, config.acceptors)
    ldr.handle(Progress("replica-1", 5, newer), 0)
    assert [m for _, m in sends(ldr.handle(Timer("tick"), 40)) if isinstance(m, Collect)] == []
    ldr.handle(Progress("replica-9", 6, newer), 0)
    effects = ldr.handle(Timer("tick"), 60)
    assert [(d, m) for d, m in sends(effects) if isinstance(m, Collect) and m.epoch == 0] == [
        (a, Collect("leader-0", 0, 5)) for a in config.acceptors
    ]
    # no phase 2 below the point, even for a late proposal
    late = ldr.handle(Propose("replica-0", config, 1, ((4, batch(("get", "k"))),)), 70)
    assert [m for _, m in sends(late) if isinstance(m, Phase2)] == []


def test_adoption_never_runs_phase_2_below_a_reported_collected_mark(config, timing):
    ldr = make(config, timing)
    ldr.start(0)
    ldr.handle(
        Propose("replica-0", config, 1, ((3, batch(("get", "a"))), (6, batch(("get", "b"))))), 0
    )
    effects = ldr.handle(Adopted(0, ballot(0), (), collected_below=5), 0)
    (p2,) = [m for _, m in sends(effects) if isinstance(m, Phase2)]
    assert [s for s, _ in p2.entries] == [6]


def test_the_log_is_compacted_into_one_state_record(config, timing):
    from pmmc_ray.core.leader import COMPACT_EVERY
    from pmmc_ray.core.messages import LeaderState

    ldr = make(config, timing)
    records = [e.record for e in ldr.start(0) if isinstance(e, Persist)]
    for r in range(1, 2 * COMPACT_EVERY):
        ldr.handle(Preempted(0, ldr.epochs[0].ballot_num, ballot(10 * r, "leader-1")), 0)
        records += [
            e.record for e in ldr.handle(Timer("tick"), 10_000 * r) if isinstance(e, Persist)
        ]
    assert any(isinstance(x, LeaderState) for x in records)
    last = max(i for i, x in enumerate(records) if isinstance(x, LeaderState))
    back = Leader.recover(
        "leader-0", config, timing, records[last:], scout_id="scout-0", commander_id="commander-0"
    )
    assert (back.identity, back.max_round) == (ldr.identity, ldr.max_round)
