"""Replica unit tests (paper 2.1 plus batching, exactly-once, reconfiguration, state transfer)."""

from __future__ import annotations

import pytest
from helpers import ballot, batch, sends

from pmmc_ray.app import KVStore
from pmmc_ray.core import (
    SESSION_EXPIRED,
    Batch,
    ClientReply,
    Command,
    Config,
    OpenSession,
    Persist,
    ProtocolViolation,
    Reconfigure,
    Replica,
    Request,
    Requests,
    Response,
    Send,
    SetTimer,
    Timer,
    Timing,
)
from pmmc_ray.core.messages import (
    CatchUp,
    Decisions,
    EpochQuery,
    Leading,
    Propose,
    ReplicaDecided,
    ReplicaRecovering,
    ReplicaSnapshot,
    Retire,
    StateChunk,
    StateRequest,
)

SESSIONS = ("a", "b", "c", "d", "e", "z", "admin")


def make(config, timing, **kw) -> Replica:
    """A replica whose client table already holds open sessions for SESSIONS."""
    r = Replica("replica-0", (config,), KVStore(), timing, **kw)
    r.client_table = {c: (0, 0, None) for c in SESSIONS}  # session identity 0
    return r


def req(cid: str, n: int, op: tuple) -> Request:
    return Request(Command(cid, n, op))


def test_request_is_proposed_to_every_leader(config, timing):
    r = make(config, timing)
    effects = r.handle(req("a", 1, ("put", "k", "v")), 0)
    b = batch(("put", "k", "v"), client="a")
    msg = Propose("replica-0", config, 1, ((1, b),))
    assert effects == [Send("leader-0", msg), Send("leader-1", msg)]
    assert (r.slot_in, r.slot_out, r.proposals) == (2, 1, {1: b})


def test_new_proposals_go_to_the_leader_heard_to_lead_and_retransmissions_to_all(config, timing):
    r = make(config, timing)
    # a commander of leader-1's ballot 3 decided slot 1: leader-1 leads epoch 0
    r.handle(Decisions(((1, batch(("put", "k", "0"), client="z")),), ballot(3, "leader-1")), 0)
    effects = r.handle(req("a", 1, ("put", "k", "v")), 0)
    msg = Propose("replica-0", config, 2, ((2, r.proposals[2]),))
    assert effects == [Send("leader-1", msg)]
    # an older ballot's decision (a late copy) does not move the hint back
    r.handle(Decisions(((2, r.proposals[2]),), ballot(2, "leader-0")), 0)
    effects = r.handle(req("b", 1, ("put", "k", "w")), 0)
    assert [d for d, m in sends(effects) if isinstance(m, Propose)] == ["leader-1"]
    # stalled: the retransmission goes to every leader
    r.handle(Timer("tick"), 40)
    effects = r.handle(Timer("tick"), 80)
    assert [d for d, m in sends(effects) if isinstance(m, Propose)] == ["leader-0", "leader-1"]


def test_a_new_leader_gets_the_undecided_proposals_at_once(config, timing):
    r = make(config, timing)
    r.handle(Leading("leader-0", 0, ballot(1)), 0)
    r.handle(req("a", 1, ("put", "k", "v")), 0)
    r.handle(req("b", 1, ("put", "k", "w")), 0)
    pending = ((1, r.proposals[1]), (2, r.proposals[2]))
    # leader-0 died; leader-1 was adopted with a higher ballot
    effects = r.handle(Leading("leader-1", 0, ballot(2, "leader-1")), 0)
    assert effects == [Send("leader-1", Propose("replica-0", config, 1, pending))]
    # a stale notice changes nothing and re-sends nothing
    assert r.handle(Leading("leader-0", 0, ballot(1)), 0) == []
    effects = r.handle(req("c", 1, ("get", "k")), 0)
    assert [d for d, m in sends(effects) if isinstance(m, Propose)] == ["leader-1"]


def test_a_decision_at_a_higher_ballot_sends_the_undecided_proposals_to_its_leader(config, timing):
    r = make(config, timing)
    r.handle(Leading("leader-0", 0, ballot(1)), 0)
    r.handle(req("a", 1, ("put", "k", "v")), 0)
    r.handle(req("b", 1, ("put", "k", "w")), 0)
    # leader-1's Leading was lost, but its commander decides slot 1: slot 2 goes to it
    effects = r.handle(Decisions(((1, r.proposals[1]),), ballot(2, "leader-1")), 0)
    proposes = [(d, m) for d, m in sends(effects) if isinstance(m, Propose)]
    assert proposes == [("leader-1", Propose("replica-0", config, 2, ((2, r.proposals[2]),)))]
    # new proposals go to it; the same ballot again is no news: nothing is re-sent
    effects = r.handle(req("c", 1, ("get", "k")), 0)
    assert [d for d, m in sends(effects) if isinstance(m, Propose)] == ["leader-1"]
    effects = r.handle(Decisions(((2, r.proposals[2]),), ballot(2, "leader-1")), 0)
    assert [m for _, m in sends(effects) if isinstance(m, Propose)] == []


def test_a_new_proposal_after_idling_is_retransmitted_on_the_next_stalled_tick(config, timing):
    r = make(config, timing)
    now = 0
    for _ in range(20):  # idle ticks count as stalled
        now += timing.replica_tick
        r.handle(Timer("tick"), now)
    r.handle(req("a", 1, ("put", "k", "v")), now)
    now += timing.replica_tick
    effects = r.handle(Timer("tick"), now)
    assert any(isinstance(m, Propose) for _, m in sends(effects))


def test_requests_beyond_the_window_wait_then_travel_as_one_batch(config):
    r = make(config, Timing(window=1, max_batch=3))
    r.handle(req("a", 1, ("put", "k", "1")), 0)
    for c in "bcde":
        assert r.handle(req(c, 1, ("get", "k")), 0) == []  # window full (R5)
    first = r.proposals[1]
    effects = r.handle(Decisions(((1, first),)), 0)
    expected = Batch(tuple(Command(c, 1, ("get", "k")) for c in "bcd"))
    assert sends(effects)[-1] == ("leader-1", Propose("replica-0", config, 2, ((2, expected),)))
    assert list(r.requests) == [("e", 1)]


def test_requests_arriving_together_share_one_batch(config):
    r = make(config, Timing(window=4, max_batch=64, max_inflight=1))
    cmds = tuple(Command(c, 1, ("put", c, "v")) for c in ("a", "b", "c"))
    effects = r.handle(Requests(cmds), 0)
    proposes = [m for _, m in sends(effects) if isinstance(m, Propose)]
    assert len(proposes) == 2  # one per leader, one slot, all three commands
    assert proposes[0].entries == ((1, Batch(cmds)),)
    # One by one, the first would have gone alone (nothing in flight yet).
    r2 = make(config, Timing(window=4, max_batch=64, max_inflight=1))
    first = r2.handle(Request(cmds[0]), 0)
    assert [m.entries for _, m in sends(first)][0] == ((1, Batch(cmds[:1])),)


def test_requests_are_checked_one_by_one(config, timing):
    r = make(config, timing)
    bad = Command("a", 1, ("put", "k"))  # malformed: rejected, the others go on
    good = Command("b", 1, ("put", "k", "v"))
    effects = r.handle(Requests((bad, good)), 0)
    replies = [e.response for e in effects if isinstance(e, ClientReply)]
    assert [(x.client_id, x.error is not None) for x in replies] == [("a", True)]
    proposes = [m for _, m in sends(effects) if isinstance(m, Propose)]
    assert proposes[0].entries == ((1, Batch((good,))),)


def test_decisions_are_applied_in_slot_order_and_answered(config, timing):
    r = make(config, timing)
    b1 = batch(("put", "k", "1"), client="a")
    b2 = batch(("append", "k", "2"), client="b")
    assert r.handle(Decisions(((2, b2),)), 0) == []
    assert r.slot_out == 1
    effects = r.handle(Decisions(((1, b1),)), 0)
    # what is applied is persisted first, in one record, before any reply (DESIGN 4b)
    assert effects == [
        Persist(ReplicaDecided(((1, b1), (2, b2)))),
        ClientReply(Response("a", 1, None)),
        ClientReply(Response("b", 1, None)),
    ]
    assert r.slot_out == 3 and r.app.data == {"k": "12"}


def test_a_command_that_lost_its_slot_is_proposed_again(config, timing):
    r = make(config, timing)
    r.handle(req("a", 1, ("put", "k", "mine")), 0)
    theirs = batch(("put", "k", "theirs"), client="b")
    effects = r.handle(Decisions(((1, theirs),)), 0)
    mine = batch(("put", "k", "mine"), client="a")
    assert effects[1] == ClientReply(Response("b", 1, None))
    assert sends(effects)[0] == ("leader-0", Propose("replica-0", config, 2, ((2, mine),)))


def test_a_command_decided_twice_is_performed_once(config, timing):
    r = make(config, timing)
    b = batch(("append", "k", "x"), client="a")
    r.handle(Decisions(((1, b),)), 0)
    effects = r.handle(Decisions(((2, b),)), 0)
    assert effects == [
        Persist(ReplicaDecided(((2, b),)))
    ]  # the slot is applied, the command skipped
    assert r.app.data == {"k": "x"} and r.slot_out == 3


def test_a_retried_request_is_answered_from_the_client_table(config, timing):
    r = make(config, timing)
    r.handle(Decisions(((1, batch(("cas", "k", None, "v"), client="a")),)), 0)
    assert r.handle(req("a", 1, ("cas", "k", None, "v")), 0) == [
        ClientReply(Response("a", 1, True))
    ]
    assert r.handle(req("a", 0, ("get", "k")), 0) == []  # older than the last: stale
    assert r.proposals == {}


def test_invalid_operation_is_rejected_before_proposing(config, timing):
    r = make(config, timing)
    effects = r.handle(req("a", 1, ("put", "k", 5)), 0)
    assert effects == [ClientReply(Response("a", 1, None, "value must be a str, got int"))]
    assert r.proposals == {} and r.requests == {}
    effects = r.handle(req("a", 2, ("frobnicate", "k")), 0)
    assert "unknown operation" in effects[0].response.error


def test_conflicting_decisions_for_a_slot_raise_r1(config, timing):
    r = make(config, timing)
    r.handle(Decisions(((2, batch(("get", "k"), client="a")),)), 0)
    with pytest.raises(ProtocolViolation, match="R1"):
        r.handle(Decisions(((2, batch(("get", "k"), client="b")),)), 0)


def test_reconfiguration_takes_effect_window_slots_later(config, timing):
    r = make(config, timing)
    new = Reconfigure(config.replicas, ("leader-2", "leader-1"), config.acceptors)
    rc = Batch((Command("admin", 1, new),))
    effects = r.handle(Decisions(((1, rc),)), 0)
    cfg1 = Config(1, 1 + timing.window, config.replicas, ("leader-2", "leader-1"), config.acceptors)
    assert effects[0] == Persist(ReplicaDecided(((1, rc),)))
    assert effects[1] == ClientReply(Response("admin", 1, 1))
    assert r.config_for(timing.window) == config
    assert r.config_for(1 + timing.window) == cfg1
    # fill slots 2..window under the old configuration, then slot 1+window goes to the new leaders
    for i in range(timing.window):
        r.handle(req("c", i + 1, ("get", "k")), 0)
        r.handle(Decisions(((2 + i, r.proposals[2 + i]),)), 0) if 2 + i in r.proposals else None
    last = r.handle(req("z", 1, ("get", "k")), 0)
    dsts = {d for d, m in sends(last) if isinstance(m, Propose) and m.config.epoch == 1}
    assert dsts == {"leader-2", "leader-1"}


def test_epoch_query_answered_only_once_every_replica_has_passed_the_epoch(config):
    t = Timing(window=1)
    r = make(config, t)
    new = Reconfigure(config.replicas, ("leader-5",), config.acceptors)
    r.handle(Decisions(((1, Batch((Command("admin", 1, new),))),)), 0)
    assert r.slot_out == 2 and r.configs[-1].start_slot == 2
    # replica-1 may still need epoch 0's leaders: no answer yet
    assert r.handle(EpochQuery("leader-0", 0), 0) == []
    r.handle(CatchUp("replica-1", 2), 0)
    assert r.handle(EpochQuery("leader-0", 0), 0) == [Send("leader-0", Retire(0))]
    assert r.handle(EpochQuery("leader-0", 1), 0) == []


def test_stalled_tick_retransmits_proposals_and_asks_peers(config, timing):
    r = make(config, timing)
    r.handle(req("a", 1, ("get", "k")), 0)
    b = r.proposals[1]
    r.handle(Timer("tick"), 40)  # first tick: remembers slot_out
    effects = r.handle(Timer("tick"), 80)
    msg = Propose("replica-0", config, 1, ((1, b),))
    from pmmc_ray.core.messages import Progress

    effects = [e for e in effects if not (isinstance(e, Send) and isinstance(e.msg, Progress))]
    assert effects == [
        SetTimer("tick", timing.replica_tick),
        Send("leader-0", msg),
        Send("leader-1", msg),
        Send("replica-1", CatchUp("replica-0", 1)),
    ]


def test_catch_up_is_answered_with_missing_decisions(config, timing):
    r = make(config, timing)
    b1, b2 = batch(("get", "a")), batch(("get", "b"), first_id=2)
    r.handle(Decisions(((1, b1), (2, b2))), 0)
    assert r.handle(CatchUp("replica-1", 2), 0) == [Send("replica-1", Decisions(((2, b2),)))]
    assert r.handle(CatchUp("replica-1", 3), 0) == []


def test_recovering_replica_waits_for_a_snapshot_then_serves(config, timing):
    peer = make(config, timing)
    peer.handle(Decisions(((1, batch(("put", "k", "v"), client="a")),)), 0)
    r = Replica("replica-1", (config,), KVStore(), timing, recovering=True)
    assert r.start(0) == [
        Persist(ReplicaRecovering()),  # it has no state: its log must say so first
        SetTimer("tick", timing.replica_tick),
        Send("replica-0", StateRequest("replica-1")),
    ]
    assert r.handle(req("b", 1, ("get", "k")), 0) == []  # queued, not proposed
    assert (
        r.handle(
            Decisions(
                (
                    (
                        2,
                        batch(("get", "k")),
                    )
                ),
            ),
            0,
        )
        == []
    )  # ignored while recovering
    (snap_send,) = peer.handle(StateRequest("replica-1"), 0)
    assert isinstance(snap_send.msg, StateChunk)  # one chunk: the state is small
    effects = r.handle(snap_send.msg, 0)
    assert not r.recovering and r.slot_out == 2 and r.app.data == {"k": "v"}
    assert r.digest == peer.digest
    assert sends(effects)[0][1] == Propose(
        "replica-1", config, 2, ((2, batch(("get", "k"), client="b")),)
    )
    # the client table came along: a retry of a's command is answered, not re-run
    assert r.handle(req("a", 1, ("put", "k", "v")), 0) == [ClientReply(Response("a", 1, None))]


def _apply(r: Replica, n: int, first: int = 1) -> list:
    """Decide and apply n slots of appends from distinct clients; all Persist records."""
    records = []
    for i in range(first, first + n):
        cid = f"c{i}"  # a new client: it opens its session in the same batch
        # the session's identity is the slot that opens it
        b = Batch((Command(cid, 0, OpenSession()), Command(cid, 1, ("append", "k", str(i)), i)))
        records += [e.record for e in r.handle(Decisions(((i, b),)), 0) if isinstance(e, Persist)]
    return records


def test_restarted_replica_rebuilds_its_state_from_its_disk(config, timing):
    r = Replica("replica-0", (config,), KVStore(), timing)  # every session is in its log
    records = _apply(r, 5)
    back = Replica.recover("replica-0", (config,), KVStore(), timing, records)
    assert not back.recovering
    assert (back.slot_out, back.slot_in, back.digest) == (6, 6, r.digest)
    assert back.app.data == {"k": "12345"} and back.client_table == r.client_table
    # exactly-once survives the restart: a retry is answered from the table, not re-run
    retry = Request(Command("c3", 1, ("append", "k", "3"), 3))  # c3's session: slot 3's
    assert back.handle(retry, 0) == [ClientReply(Response("c3", 1, None))]
    assert back.start(0) == [SetTimer("tick", timing.replica_tick)]  # no state transfer


def test_checkpoint_every_snapshot_every_slots_supersedes_earlier_records(config):
    t = Timing(window=4, snapshot_every=3)
    r = make(config, t)
    records = _apply(r, 7)
    kinds = [type(x).__name__ for x in records]
    assert kinds == ["ReplicaDecided"] * 2 + ["ReplicaSnapshot"] + ["ReplicaDecided"] * 2 + [
        "ReplicaSnapshot",
        "ReplicaDecided",
    ]
    cp = records[-2]
    assert isinstance(cp, ReplicaSnapshot) and cp.slot_out == 7
    # the checkpoint alone, plus what came after, rebuilds the same state
    back = Replica.recover("replica-0", (config,), KVStore(), t, records[-2:])
    assert (back.slot_out, back.digest, back.app.data) == (8, r.digest, {"k": "1234567"})


def test_installed_snapshot_is_checkpointed_before_anything_else(config, timing):
    peer = make(config, timing)
    _apply(peer, 3)
    r = Replica("replica-1", (config,), KVStore(), timing, recovering=True)
    (snap,) = sends(peer.handle(StateRequest("replica-1"), 0))
    effects = r.handle(snap[1], 0)
    assert effects[0] == Persist(peer.checkpoint())
    back = Replica.recover("replica-1", (config,), KVStore(), timing, [effects[0].record])
    assert (back.slot_out, back.digest, back.recovering) == (4, peer.digest, False)


def test_member_that_joined_and_never_got_state_recovers_by_transfer(config, timing):
    cfg1 = Config(1, 5, ("replica-0", "replica-7"), config.leaders, config.acceptors)
    r = Replica.recover("replica-7", (config, cfg1), KVStore(), timing, [], joined=True)
    assert r.recovering and r.configs == [config, cfg1]
    # it asks one peer at a time (never everyone at once), and while the answer may be on
    # its way it asks nobody else; then the next peer
    assert sends(r.start(0)) == [("replica-1", StateRequest("replica-7"))]
    from pmmc_ray.core.replica import STATE_WAIT_TICKS

    tick = timing.replica_tick
    for i in range(1, STATE_WAIT_TICKS):
        assert sends(r.handle(Timer("tick"), i * tick)) == []
    later = sends(r.handle(Timer("tick"), STATE_WAIT_TICKS * tick))
    assert later == [("replica-0", StateRequest("replica-7"))]


def test_records_with_a_gap_are_refused(config, timing):
    b = batch(("get", "k"))
    with pytest.raises(ValueError, match="skip from slot 1 to 2"):
        Replica.recover("replica-0", (config,), KVStore(), timing, [ReplicaDecided(((2, b),))])


def test_a_stalled_replica_asks_a_peer_that_is_ahead(config, timing):
    """A replica that got its state from a lagging peer may not know the members of newer
    configurations; when one of them says it is ahead, the stalled replica asks it."""
    r = make(config, timing)
    _apply(r, 2)
    assert r.handle(CatchUp("replica-9", 10), 0) == []  # progressing: no need yet
    r.handle(Timer("tick"), 40)  # the tick notes slot_out 3
    assert r.handle(CatchUp("replica-9", 10), 0) == [Send("replica-9", CatchUp("replica-0", 3))]
    assert r.handle(CatchUp("replica-9", 3), 0) == []  # not ahead


def test_state_is_pulled_in_chunks_and_a_lost_chunk_is_asked_for_again(config):
    t = Timing(window=4, state_chunk=8)
    peer = make(config, t)
    _apply(peer, 6)  # {"k": "123456"}: more than one chunk
    r = Replica("replica-1", (config,), KVStore(), t, recovering=True)
    state = peer.app.snapshot()
    got, req = [], StateRequest("replica-1")
    while True:
        (chunk,) = [m for _, m in sends(peer.handle(req, 0))]
        assert isinstance(chunk, StateChunk) and chunk.total == len(state)
        assert len(chunk.data) <= 8 and (chunk.header is not None) == (chunk.offset == 0)
        got.append(chunk.offset)
        if chunk.offset == 8:
            # this chunk is lost; after three quiet ticks the receiver asks for it again
            assert sends(r.handle(Timer("tick"), 40)) == []  # it may be on its way
            assert sends(r.handle(Timer("tick"), 80)) == []
            assert sends(r.handle(Timer("tick"), 120)) == [
                ("replica-0", StateRequest("replica-1", 7, 8))
            ]
            again = [m for _, m in sends(peer.handle(StateRequest("replica-1", 7, 8), 0))]
            assert again == [chunk]  # only that chunk, from the same frozen snapshot
        effects = r.handle(chunk, 0)
        nxt = [m for _, m in sends(effects) if isinstance(m, StateRequest)]
        if not r.recovering:
            break
        (req,) = nxt
        assert req.offset == chunk.offset + len(chunk.data)
    assert got == list(range(0, len(state), 8))
    assert (r.slot_out, r.digest, r.app.data) == (7, peer.digest, peer.app.data)


def test_a_replica_behind_what_peers_keep_is_offered_their_state(config):
    t = Timing(window=4, keep_decisions=2, state_chunk=8)
    peer = make(config, t)
    _apply(peer, 6)
    effects = peer.handle(CatchUp("replica-1", 1), 0)
    (chunk,) = [m for _, m in sends(effects)]
    assert isinstance(chunk, StateChunk) and chunk.slot_out == 7 and chunk.offset == 0
    assert chunk.total > 8  # several chunks: the transfer is under way
    assert peer.handle(CatchUp("replica-1", 1), 0) == []  # so no second offer
    offset = 8
    while offset < chunk.total:  # the receiver pulls the rest
        (last,) = [m for _, m in sends(peer.handle(StateRequest("replica-1", 7, offset), 0))]
        offset += len(last.data)
    # finished: a replica that is behind again is offered newer state at once
    (again,) = [m for _, m in sends(peer.handle(CatchUp("replica-1", 1), 0))]
    assert isinstance(again, StateChunk) and again.offset == 0


def test_a_command_without_a_session_is_rejected_and_changes_nothing(config, timing):
    r = make(config, timing)
    b = batch(("put", "k", "v"), client="stranger")
    effects = r.handle(Decisions(((1, b),)), 0)
    assert ClientReply(Response("stranger", 1, None, SESSION_EXPIRED)) in effects
    assert r.app.data == {} and "stranger" not in r.client_table


def test_sessions_are_evicted_least_recently_used_first(config):
    t = Timing(window=4, max_sessions=2)
    r = Replica("replica-0", (config,), KVStore(), t)
    opens = Batch(tuple(Command(c, 0, OpenSession()) for c in ("x", "y")))
    r.handle(Decisions(((1, opens),)), 0)
    x1 = Batch((Command("x", 1, ("put", "k", "1"), 1),))
    r.handle(Decisions(((2, x1),)), 0)  # x is now the newest
    r.handle(Decisions(((3, Batch((Command("w", 0, OpenSession()),))),)), 0)  # evicts y
    assert list(r.client_table) == ["x", "w"]
    y1 = Batch((Command("y", 1, ("put", "k", "2"), 1),))
    effects = r.handle(Decisions(((4, y1),)), 0)
    assert ClientReply(Response("y", 1, None, SESSION_EXPIRED)) in effects
    assert r.app.data == {"k": "1"}


def test_a_late_copy_of_an_open_session_cannot_bring_back_an_evicted_one(config):
    """Found in review: a duplicate OpenSession decided after an eviction used to
    re-create the session at command 0, and a late copy of its command 1 ran again."""
    t = Timing(window=4, max_sessions=1)
    r = Replica("replica-0", (config,), KVStore(), t)
    open_x = Command("x", 0, OpenSession())
    x1 = Command("x", 1, ("append", "k", "[x1]"), 1)  # x's session is slot 1's
    r.handle(Decisions(((1, Batch((open_x, x1))),)), 0)
    r.handle(Decisions(((2, Batch((Command("w", 0, OpenSession()),))),)), 0)  # evicts x
    # late copies of x's OpenSession and of its command 1
    effects = r.handle(Decisions(((3, Batch((open_x,))), (4, Batch((x1,))))), 0)
    assert r.client_table["x"][0] == 3  # a new session nobody names
    assert ClientReply(Response("x", 1, None, SESSION_EXPIRED)) in effects
    assert r.app.data == {"k": "[x1]"}  # once


def test_a_read_result_is_not_kept_and_a_retried_read_reads_again(config, timing):
    r = make(config, timing)
    r.handle(Decisions(((1, batch(("put", "k", "v1"), client="a")),)), 0)
    read = batch(("get", "k"), client="b")
    effects = r.handle(Decisions(((2, read),)), 0)
    assert ClientReply(Response("b", 1, "v1")) in effects
    assert r.client_table["b"] == (0, 1, None)  # the value is not kept
    r.handle(Decisions(((3, batch(("put", "k", "v2"), client="a", first_id=2)),)), 0)
    # the retry is proposed again (not answered from the table) and reads again
    assert [m for _, m in sends(r.handle(req("b", 1, ("get", "k")), 0))]
    effects = r.handle(Decisions(((4, read),)), 0)
    assert ClientReply(Response("b", 1, "v2")) in effects


def test_a_replica_without_state_stays_without_state_across_restarts(config, timing):
    """Found by the simulator: a replica that lost its disk and restarted again before it
    got any state must not take its new, empty log for a founding member's state."""
    r = Replica("replica-1", (config,), KVStore(), timing, recovering=True)
    effects = r.start(0)
    assert effects[0] == Persist(ReplicaRecovering())
    back = Replica.recover("replica-1", (config,), KVStore(), timing, [ReplicaRecovering()])
    assert back.recovering
    assert not any(isinstance(e, Persist) for e in back.start(0))  # marked already


def test_a_recovering_replica_pulls_state_from_a_peer_that_makes_itself_known(config, timing):
    """Found by the simulator: a replica that lost its disk knows only the configurations
    it was created with; a member of a newer one that announces itself is asked."""
    r = Replica("replica-0", (config,), KVStore(), timing, recovering=True)
    r.start(0)
    assert sends(r.handle(CatchUp("replica-7", 40), 0)) == [
        ("replica-7", StateRequest("replica-0"))
    ]
    assert sends(r.handle(CatchUp("replica-7", 41), 0)) == []  # asked already: no second one


def test_an_op_that_makes_validate_raise_anything_is_refused_not_fatal(config, timing):
    r = make(config, timing)
    effects = r.handle(req("a", 1, (["put"], "k", "v")), 0)  # a list: unhashable
    (reply,) = [e.response for e in effects if isinstance(e, ClientReply)]
    assert reply.error is not None and "TypeError" in reply.error
    assert not r.requests and not r.proposals
