"""Replica (paper 2.1): orders client commands into slots and applies them in order.

State, as in the paper: the application ``app``, ``slot_in``, ``slot_out``,
``requests``, ``proposals`` (slot -> batch), ``decisions`` (slot -> batch), and the
configurations (``configs``, each with the slot it starts at). Extensions:

- Batching: a proposal is a :class:`Batch` of up to ``Timing.max_batch`` requests.
- Exactly once, with client sessions: the replicated state includes a client table,
  client_id -> (session identity, last command_id, its response, or None for a read),
  in least recently used order, at most ``Timing.max_sessions`` entries. A client opens
  its session with an :class:`OpenSession` command (its command 0); the log assigns
  the session's identity (the slot that decided it), and the client names it in every
  later command. A command is performed only if it names its client's live session
  and its command_id is newer than the table's; a decided duplicate
  (the same command in a later slot, or a retry) is skipped and answered from the table
  (a read is performed again instead: its result is not kept, and reading again inside
  the operation's interval is still linearizable). A command whose session is gone
  (never opened, or evicted) is rejected with :data:`SESSION_EXPIRED`, so the table
  stays bounded and nothing is ever performed twice. This is the paper's "perform a
  command only the first time it is decided", made to survive state transfer and
  bounded as the paper's section on client state suggests.
- Reconfiguration: a batch holding one :class:`Reconfigure` command decided in slot s
  adds a configuration that starts at slot s + WINDOW. Because a replica proposes
  only for ``slot_in < slot_out + WINDOW`` (R5), it always knows the configuration
  of the slot it proposes for.
- Proposals go to the leader that leads first: a new proposal is sent only to the
  leader of the highest ballot the replica has heard of in its epoch (from a
  commander's :class:`Decisions`, or a leader's :class:`Leading` when it is adopted,
  on which the replica re-sends its undecided proposals to it). Without such a hint,
  and on every retransmission, proposals go to every leader of the configuration, as
  in the paper. The hint is only about whom to tell first; a stale one costs a
  retransmission, never safety.
- Retransmission: when ``slot_out`` has not moved for ``Timing.replica_tick``, the
  replica re-sends its pending proposals and asks its peers for decisions it missed,
  on stalled ticks 1, 2, 4, 8 and then every 16th (backoff).
- Durability (DESIGN 4b): every step that applies decided slots persists them
  (:class:`ReplicaDecided`) before anything of that step leaves, so a command is on
  the replica's disk before its client hears about it. Every ``snapshot_every`` slots,
  and after installing a peer's snapshot, it persists a checkpoint instead
  (:class:`ReplicaSnapshot`), which supersedes all its earlier records. A replica
  restarted with its disk is rebuilt by :meth:`Replica.recover`: the last checkpoint
  (or the initial state) plus the decided slots after it, replayed in order. It then
  catches up from peers, or re-proposes into the slots it lacks, which leaders fill
  from what the acceptors accepted.
- State transfer (:mod:`pmmc_ray.core.transfer`): a replica that starts with
  ``recovering=True`` (its disk is gone, or it was just added by reconfiguration)
  proposes nothing until it has pulled a peer's state (application state, client
  table, configurations, slot_out) in chunks, from one peer at a time. It never
  guesses. A replica so far behind that its peer no longer keeps the decisions it
  lacks is sent the first chunk of the peer's state instead, and pulls the rest.

Invariants (paper 2.1), checked by the simulator: R1 no two different decisions for a
slot; R2 every slot below slot_out is decided; R3 replicas with the same slot_out
have the same state; R4 slot_out never decreases; R5 proposals only for
slot_in < slot_out + WINDOW.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from ..app.base import InvalidOperation, StateMachine
from .ids import leader_of_ballot
from .messages import (
    CatchUp,
    ClientReply,
    Decisions,
    DurableRecord,
    Effect,
    EpochQuery,
    Leading,
    Message,
    Persist,
    Progress,
    Propose,
    ReplicaDecided,
    ReplicaRecovering,
    ReplicaSnapshot,
    Request,
    Requests,
    Response,
    Retire,
    Send,
    SetTimer,
    StateChunk,
    StateHeader,
    StateRequest,
    Timer,
    persist_first,
)
from .timing import Timing, chunks
from .transfer import Incoming, StateReceiver, StateSender
from .types import (
    SESSION_EXPIRED,
    Ballot,
    Batch,
    Command,
    Config,
    OpenSession,
    ProtocolViolation,
    Reconfigure,
)

TICK = "tick"
STATE_WAIT_TICKS = 8
"""Ticks a replica waits for the first chunk of a transfer before asking another peer."""
CommandKey = tuple[str, int]


def validate_reconfigure(op: Reconfigure) -> None:
    """Raise :class:`InvalidOperation` unless ``op`` names a usable configuration."""
    for what, ids in (
        ("replicas", op.replicas),
        ("leaders", op.leaders),
        ("acceptors", op.acceptors),
    ):
        if not isinstance(ids, tuple) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise InvalidOperation(f"reconfigure: {what} must be a non-empty tuple of ids")
        if len(set(ids)) != len(ids):
            raise InvalidOperation(f"reconfigure: duplicate ids in {what}")


class Replica:
    """A pure replica: ``handle(msg, now)`` returns effects."""

    def __init__(
        self,
        replica_id: str,
        configs: tuple[Config, ...],
        app: StateMachine,
        timing: Timing,
        *,
        recovering: bool = False,
    ) -> None:
        if not configs:
            raise ValueError("a replica needs at least one configuration")
        self.id = replica_id
        self.app = app
        self.timing = timing
        self.window = timing.window
        self.configs: list[Config] = list(configs)
        self.slot_in = 1
        self.slot_out = 1
        self.requests: dict[CommandKey, Command] = {}
        self.proposals: dict[int, Batch] = {}
        self.decisions: dict[int, Batch] = {}
        # client -> (session identity, last command id, its response; None for a read),
        # in least recently used order
        self.client_table: dict[str, tuple[int, int, Response | None]] = {}
        self.recovering = recovering
        self.digest = ""  # hash chain of applied batches: equal slot_out => equal digest (R3)
        self._proposed: set[CommandKey] = set()
        self._leads: dict[int, Ballot] = {}  # epoch -> highest ballot heard to lead it
        self._tick_slot_out = 0
        self._rotate = 0
        self.peer_slot_out: dict[str, int] = {}  # from CatchUp: how far peers have applied
        # Durability: slots applied in this step but not yet persisted, the slot_out of
        # the last checkpoint, and whether the next step must write a checkpoint.
        self._unsaved: list[tuple[int, Batch]] = []
        self._checkpoint_slot = self.slot_out
        self._checkpoint_due = False
        self._progress_sent = 0  # slot_out last reported to the leaders
        self._peers_key: tuple[int, Config] | None = None  # see _peers()
        self._peers_list: list[str] = []
        self._progress_ticks = 0
        self._stalled_ticks = 0  # consecutive ticks without progress (for backoff)
        self._now = 0
        self._sender = StateSender(timing.state_chunk, keep_ms=50 * timing.replica_tick)
        self._receiver = StateReceiver()
        self._marked = False  # a ReplicaRecovering record is on disk
        self._sources: list[str] = []  # peers that told us they hold state (CatchUp)
        self._asked_at: int | None = None  # when we last asked a peer to start a transfer

    @classmethod
    def recover(
        cls,
        replica_id: str,
        configs: tuple[Config, ...],
        app: StateMachine,
        timing: Timing,
        records: Iterable[DurableRecord],
        *,
        joined: bool = False,
    ) -> Replica:
        """Rebuild a replica restarted with its disk from its durable records.

        State is the last :class:`ReplicaSnapshot` (or, for a founding member that never
        wrote one, the application's initial state at slot 1 with ``configs``), then the
        :class:`ReplicaDecided` slots after it, replayed in order exactly as they were
        first applied. A member that ``joined`` by reconfiguration, or that started
        without state (:class:`ReplicaRecovering`), and never got to install a snapshot
        has no state of its own: it recovers by state transfer, however often it
        restarts before it gets one.
        """
        checkpoint: ReplicaSnapshot | None = None
        decided: list[tuple[int, Batch]] = []
        stateless = joined
        for rec in records:
            if isinstance(rec, ReplicaSnapshot):
                checkpoint, decided = rec, []
            elif isinstance(rec, ReplicaDecided):
                decided.extend(rec.entries)
            elif isinstance(rec, ReplicaRecovering):
                stateless = True
            else:
                raise TypeError(f"not a replica record: {rec!r}")
        if checkpoint is None and stateless:
            r = cls(replica_id, configs, app, timing, recovering=True)
            r._marked = True  # its records already say so
            return r
        r = cls(replica_id, checkpoint.configs if checkpoint else configs, app, timing)
        if checkpoint is not None:
            r._install(
                checkpoint.slot_out,
                checkpoint.configs,
                checkpoint.app_state,
                checkpoint.client_table,
                checkpoint.digest,
            )
            r._checkpoint_slot = checkpoint.slot_out
        for slot, batch in decided:
            if slot < r.slot_out:
                continue
            if slot != r.slot_out:
                raise ValueError(
                    f"{replica_id}: durable records skip from slot {r.slot_out} to {slot}"
                )
            r.decisions[slot] = batch
            r._apply_next()  # replies go nowhere: their clients heard them before the crash
        r._unsaved = []
        r.slot_in = r.slot_out
        return r

    # --- public ----------------------------------------------------------------------

    def start(self, now: int) -> list[Effect]:
        self._now = now
        effects: list[Effect] = [SetTimer(TICK, self.timing.replica_tick)]
        if self.recovering:
            if not self._marked:
                # Before anything else: should we restart before the state arrives, our
                # (empty) records must not pass for a founding member's initial state.
                self._marked = True
                effects.insert(0, Persist(ReplicaRecovering()))
            effects += self._ask_for_state()
        return effects

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        self._now = now
        effects = self._handle(msg)
        return persist_first(effects + self._persist_applied())

    def _handle(self, msg: Message | Timer) -> list[Effect]:
        match msg:
            case Request():
                return self._on_request(msg.command)
            case Requests():
                effects: list[Effect] = []
                for c in msg.commands:
                    effects += self._on_request(c, propose=False)
                return effects if self.recovering else effects + self._propose()
            case Decisions():
                news: int | None = None  # the epoch whose leader we just learned
                if msg.ballot is not None and msg.entries and not self.recovering:
                    slot = msg.entries[0][0]
                    if slot < self.slot_out + self.window:  # its configuration is known
                        epoch = self.config_for(slot).epoch
                        news = epoch if self._heard_lead(epoch, msg.ballot) else None
                effects = self._on_decisions(msg.entries)
                return effects if news is None else effects + self._resend_to_leader(news)
            case Leading():
                return self._on_leading(msg)
            case CatchUp():
                return self._on_catch_up(msg)
            case EpochQuery():
                done = self._retired_epoch()
                return [Send(msg.src, Retire(done))] if done >= msg.epoch else []
            case StateRequest():
                return [] if self.recovering else [Send(msg.src, self._serve(msg))]
            case StateChunk():
                return self._on_chunk(msg)
            case Timer(name=name) if name == TICK:
                return self._on_tick()
            case _:
                return []

    def config_for(self, slot: int) -> Config:
        """The configuration in effect for ``slot`` (known for every slot < slot_out + WINDOW)."""
        for cfg in reversed(self.configs):
            if cfg.start_slot <= slot:
                return cfg
        raise ProtocolViolation(f"no configuration for slot {slot}")

    def checkpoint(self) -> ReplicaSnapshot:
        """The durable checkpoint record of the current state."""
        # In least recently used order: eviction depends on it.
        table = tuple((c, sid, cid, r) for c, (sid, cid, r) in self.client_table.items())
        return ReplicaSnapshot(
            self.slot_out, tuple(self.configs), self.app.snapshot(), table, self.digest
        )

    # --- durability ----------------------------------------------------------------------

    def request_checkpoint(self) -> None:
        """Write a checkpoint in the next step (an interpreter asks when the slots logged
        since the last one take more room than it: a checkpoint is always safe)."""
        self._checkpoint_due = True

    def _persist_applied(self) -> list[Effect]:
        """The Persist effect for what this step applied: the decided slots, or a whole
        checkpoint when one is due. ``handle`` puts it before every other effect."""
        if self._checkpoint_due or (
            self._unsaved and self.slot_out - self._checkpoint_slot >= self.timing.snapshot_every
        ):
            self._checkpoint_due = False
            self._unsaved = []
            self._checkpoint_slot = self.slot_out
            return [Persist(self.checkpoint())]
        if not self._unsaved:
            return []
        rec = ReplicaDecided(tuple(self._unsaved))
        self._unsaved = []
        return [Persist(rec)]

    # --- requests and proposals ------------------------------------------------------

    def _on_request(self, c: Command, propose: bool = True) -> list[Effect]:
        done = self.client_table.get(c.client_id)
        if done is not None and isinstance(c.op, OpenSession):
            return [ClientReply(Response(c.client_id, c.command_id, done[0]))]  # open already
        if done is not None and done[0] == c.session and c.command_id <= done[1]:
            # Already performed: answer from the table (only the latest is kept); a read
            # whose result was not kept goes through the log again.
            if c.command_id < done[1]:
                return []
            if done[2] is not None:
                return [ClientReply(done[2])]
        if c.key in self.requests or c.key in self._proposed:
            return []
        try:
            if isinstance(c.op, Reconfigure):
                validate_reconfigure(c.op)
            elif not isinstance(c.op, OpenSession):
                self.app.validate(c.op)
        except InvalidOperation as e:
            return [ClientReply(Response(c.client_id, c.command_id, None, str(e)))]
        except Exception as e:
            # validate() must not change state, so anything it raises means "invalid"
            # (a list where a str belongs makes the KV store raise TypeError): answer
            # the client; never let one request stop the replica.
            why = f"invalid operation: {type(e).__name__}: {e}"
            return [ClientReply(Response(c.client_id, c.command_id, None, why))]
        self.requests[c.key] = c
        return [] if self.recovering or not propose else self._propose()

    def _take_batch(self) -> Batch:
        first_key = next(iter(self.requests))
        first = self.requests.pop(first_key)
        if first.is_reconfig:
            return Batch((first,))
        cmds = [first]
        for key in list(self.requests):
            if len(cmds) >= self.timing.max_batch:
                break
            c = self.requests[key]
            if not c.is_reconfig:
                cmds.append(self.requests.pop(key))
        return Batch(tuple(cmds))

    def _propose(self) -> list[Effect]:
        """Paper's propose(): fill slots up to slot_out + WINDOW (R5) with batches,
        keeping at most ``max_inflight`` of our own proposals undecided."""
        new: list[tuple[int, Batch]] = []
        while self.slot_in < self.slot_out + self.window and self.requests:
            if self.slot_in not in self.decisions:
                if len(self.proposals) >= self.timing.max_inflight:
                    break  # let requests accumulate into the next batch
                batch = self._take_batch()
                self.proposals[self.slot_in] = batch
                self._proposed.update(c.key for c in batch.commands)
                new.append((self.slot_in, batch))
            self.slot_in += 1
        if new:
            # Retransmit on the next stalled ticks (1, 2, 4, 8, ...), not on a far-off
            # 16th: the count also ran while the replica was idle.
            self._stalled_ticks = 0
        return self._send_proposals(new, first=True)

    def _send_proposals(
        self, entries: list[tuple[int, Batch]], *, first: bool = False, to: str | None = None
    ) -> list[Effect]:
        """Propose ``entries``: to ``to``; else, if ``first`` (not a retransmission) and
        we know who leads the slot's epoch, to that leader only; else to every leader."""
        by_config: dict[Config, list[tuple[int, Batch]]] = {}
        for slot, batch in entries:
            by_config.setdefault(self.config_for(slot), []).append((slot, batch))
        effects: list[Effect] = []
        for cfg, group in by_config.items():
            leaders: tuple[str, ...] | list[str] = cfg.leaders
            lead = to or (self._leader_of(cfg) if first else None)
            if lead is not None and lead in cfg.leaders:
                leaders = [lead]
            for part in chunks(group, self.timing.max_entries_per_message):
                msg = Propose(self.id, cfg, self.slot_out, part)
                effects += [Send(ldr, msg) for ldr in leaders]
        return effects

    def _leader_of(self, cfg: Config) -> str | None:
        b = self._leads.get(cfg.epoch)
        return None if b is None else leader_of_ballot(b.leader)

    def _heard_lead(self, epoch: int, ballot: Ballot) -> bool:
        """Note that ``ballot`` leads ``epoch``, if it is the highest heard of there."""
        known = self._leads.get(epoch)
        if known is not None and not ballot > known:
            return False
        self._leads[epoch] = ballot
        current = self.config_for(self.slot_out).epoch
        for e in [e for e in self._leads if e < current]:
            del self._leads[e]  # epochs we propose no more slots in
        return True

    def _on_leading(self, m: Leading) -> list[Effect]:
        if self.recovering or not self._heard_lead(m.epoch, m.ballot):
            return []
        return self._resend_to_leader(m.epoch)

    def _resend_to_leader(self, epoch: int) -> list[Effect]:
        """We just learned who leads ``epoch`` (a Leading, or a commander's Decisions at
        a higher ballot). That leader may never have seen what we proposed to the one
        before: re-send it our undecided proposals of that epoch."""
        pending = [
            (s, b)
            for s, b in sorted(self.proposals.items())
            if s >= self.slot_out and self.config_for(s).epoch == epoch
        ]
        if not pending:
            return []
        return self._send_proposals(pending, to=leader_of_ballot(self._leads[epoch].leader))

    # --- decisions -------------------------------------------------------------------

    def _on_decisions(self, entries: tuple[tuple[int, Batch], ...]) -> list[Effect]:
        if self.recovering:
            return []
        for slot, batch in entries:
            if slot < self.slot_out:
                continue
            known = self.decisions.get(slot)
            if known is not None and known != batch:
                raise ProtocolViolation(f"R1: two decisions for slot {slot}")
            self.decisions[slot] = batch
        effects: list[Effect] = []
        while self.slot_out in self.decisions:
            effects += self._apply_next()
        return effects + self._propose()

    def _apply_next(self) -> list[Effect]:
        slot = self.slot_out
        batch = self.decisions[slot]
        mine = self.proposals.pop(slot, None)
        self._unsaved.append((slot, batch))
        effects = self._perform(slot, batch)
        for c in batch.commands:
            self.requests.pop(c.key, None)
        if mine is not None:
            self._proposed.difference_update(c.key for c in mine.commands)
            if mine != batch:
                self._requeue(mine.commands)
        return effects

    def _requeue(self, commands: tuple[Command, ...]) -> None:
        """Put back, first in line, our commands that lost their slot to another batch."""
        back: dict[CommandKey, Command] = {}
        for c in (*commands, *self.requests.values()):
            done = self.client_table.get(c.client_id)
            if done is not None and done[0] == c.session and c.command_id <= done[1]:
                continue
            if c.key in self._proposed:
                continue
            back.setdefault(c.key, c)
        self.requests = back

    def _perform(self, slot: int, batch: Batch) -> list[Effect]:
        """Apply ``batch`` decided in ``slot`` (== slot_out) and advance slot_out."""
        effects: list[Effect] = []
        table = self.client_table
        for c in batch.commands:
            done = table.get(c.client_id)
            if isinstance(c.op, OpenSession):
                # A live session keeps its identity; otherwise this slot is a new one's.
                entry = done if done is not None else (slot, 0, None)
                table.pop(c.client_id, None)
                table[c.client_id] = entry  # most recently used
                effects.append(ClientReply(Response(c.client_id, c.command_id, entry[0])))
                while len(table) > self.timing.max_sessions:
                    del table[next(iter(table))]  # the least recently used session
                continue
            if done is None or done[0] != c.session:
                # No live session of that identity: never opened, or evicted (a late copy
                # of an OpenSession cannot bring it back: it makes another identity).
                effects.append(
                    ClientReply(Response(c.client_id, c.command_id, None, SESSION_EXPIRED))
                )
                continue
            sid, last, kept = table.pop(c.client_id)
            table[c.client_id] = (sid, last, kept)  # most recently used
            if c.command_id < last:
                continue  # superseded by a newer command of its client: skip
            read = not isinstance(c.op, Reconfigure) and self.app.is_read_only(c.op)
            if c.command_id == last:
                if kept is None and read and last > 0:
                    effects.append(ClientReply(self._execute(slot, c)))  # a read, again
                continue  # decided before: performed once already
            resp = self._execute(slot, c)
            table[c.client_id] = (sid, c.command_id, None if read and resp.error is None else resp)
            effects.append(ClientReply(resp))
        self.digest = hashlib.blake2b(
            f"{self.digest}|{slot}|{batch!r}".encode(), digest_size=16
        ).hexdigest()
        self.slot_out += 1
        self.slot_in = max(self.slot_in, self.slot_out)
        self._forget_old_decisions()
        return effects

    def _execute(self, slot: int, c: Command) -> Response:
        op: Any = c.op
        try:
            if isinstance(op, Reconfigure):
                validate_reconfigure(op)
                last = self.configs[-1]
                self.configs.append(
                    Config(
                        last.epoch + 1, slot + self.window, op.replicas, op.leaders, op.acceptors
                    )
                )
                return Response(c.client_id, c.command_id, last.epoch + 1)
            return Response(c.client_id, c.command_id, self.app.apply(op))
        except InvalidOperation as e:
            return Response(c.client_id, c.command_id, None, str(e))

    def _forget_old_decisions(self) -> None:
        old = self.slot_out - 1 - self.timing.keep_decisions
        if old >= 1:
            self.decisions.pop(old, None)

    def _retired_epoch(self) -> int:
        """The highest epoch whose leaders are no longer needed (-1 if none).

        An epoch is finished when every replica of the latest configuration has
        applied all its slots: until then a replica that lost its memory may still
        need that epoch's leaders to re-run a slot whose decision it never got.
        """
        done = -1
        latest = self.configs[-1]
        for prev, nxt in zip(self.configs, self.configs[1:], strict=False):
            reached = [
                self.slot_out if r == self.id else self.peer_slot_out.get(r, 0)
                for r in latest.replicas
            ]
            if self.slot_out >= nxt.start_slot and min(reached) >= nxt.start_slot:
                done = prev.epoch
        return done

    # --- retransmission, catch-up and state transfer -----------------------------------

    def _peers(self) -> list[str]:
        """Every other replica of every configuration, newest first. Kept while the
        configurations stay the same: a tick asks for it, and a long-lived deployment
        has many configurations (the list only grows, or is replaced on a transfer)."""
        # Configurations are decided in the log: same count and same latest, same list.
        key = (len(self.configs), self.configs[-1])
        if self._peers_key != key:
            peers: list[str] = []
            for cfg in reversed(self.configs):
                for r in cfg.replicas:
                    if r != self.id and r not in peers:
                        peers.append(r)
            self._peers_key, self._peers_list = key, peers
        return list(self._peers_list)

    def _ask_for_state(self, tick: bool = False) -> list[Effect]:
        """Start a transfer from one peer (a different one each time), unless a request is
        in flight; on a tick during a transfer, ask again for the chunk we wait for only
        after 3, 6, 9 quiet ticks (it may be on its way), and after 12 give that peer up.
        Never two requests in flight: each would be answered with a whole chunk."""
        t = self._receiver.transfer
        if t is not None:
            if not tick:
                return []
            t.quiet_ticks += 1
            if t.quiet_ticks < 12:
                req = self._receiver.retry(self.id) if t.quiet_ticks % 3 == 0 else None
                return [Send(t.peer, req)] if req is not None else []
            self._receiver.abandon()
        elif self._asked_at is not None and self._now - self._asked_at < STATE_WAIT_TICKS * (
            self.timing.replica_tick
        ):
            return []  # the first chunk of a transfer we asked for may be on its way
        # Peers that told us they have state first: our own configurations may be old (a
        # replica that lost its disk knows only those it was created with).
        peers = [*self._sources, *(p for p in self._peers() if p not in self._sources)]
        if not peers:
            return []
        self._rotate = (self._rotate + 1) % len(peers)
        self._asked_at = self._now
        return [Send(peers[self._rotate], StateRequest(self.id))]

    def _serve(self, m: StateRequest) -> StateChunk:
        return self._sender.serve(self.id, m, self._now, self._current_state)

    def _current_state(self) -> tuple[int, bytes, StateHeader]:
        cp = self.checkpoint()
        return cp.slot_out, cp.app_state, StateHeader(cp.configs, cp.client_table, cp.digest)

    def _due(self) -> bool:
        """Backoff for retransmissions while stalled: on stalled ticks 1, 2, 4, 8, then
        every 16th."""
        k = self._stalled_ticks
        return k in (1, 2, 4, 8) or (k > 0 and k % 16 == 0)

    def _progress(self) -> list[Effect]:
        """Report slot_out to the leaders (for garbage collection, paper 4.2, and for
        their stall detection) on the tick it moved and the two after (a report can be
        lost, and a leader whose replicas seem stuck steps aside), then every 10 ticks.
        It is durable: everything applied was persisted in the step that applied it."""
        self._progress_ticks += 1
        if self.slot_out != self._progress_sent:
            self._progress_sent, self._progress_ticks = self.slot_out, 0
        elif self._progress_ticks not in (1, 2) and self._progress_ticks < 10:
            return []
        if self._progress_ticks >= 10:
            self._progress_ticks = 0
        leaders = dict.fromkeys(
            (*self.config_for(self.slot_out).leaders, *self.configs[-1].leaders)
        )
        msg = Progress(self.id, self.slot_out, self.configs[-1])
        return [Send(ldr, msg) for ldr in leaders]

    def _on_tick(self) -> list[Effect]:
        effects: list[Effect] = [SetTimer(TICK, self.timing.replica_tick)]
        self._sender.expire(self._now)
        if self.recovering or self._receiver.transfer is not None:
            effects += self._ask_for_state(tick=True)
            if self.recovering:
                return effects
        effects += self._progress()
        stalled = self.slot_out == self._tick_slot_out
        self._tick_slot_out = self.slot_out
        self._stalled_ticks = self._stalled_ticks + 1 if stalled else 0
        peers = self._peers()
        if not stalled:
            # Tell one peer (a different one each time) how far we are: peers use it to
            # decide when an old configuration may be retired.
            if peers:
                self._rotate = (self._rotate + 1) % len(peers)
                effects.append(Send(peers[self._rotate], CatchUp(self.id, self.slot_out)))
            return effects
        if not self._due():
            return effects
        pending = sorted(s for s in self.proposals if s >= self.slot_out)
        effects += self._send_proposals([(s, self.proposals[s]) for s in pending])
        gap = any(s > self.slot_out for s in self.decisions)
        if pending or gap or self.requests:
            effects += [Send(p, CatchUp(self.id, self.slot_out)) for p in peers]
        elif peers:
            # Idle: a decision we never received would go unnoticed, so ask one peer,
            # a different one each time (anti-entropy).
            self._rotate = (self._rotate + 1) % len(peers)
            effects.append(Send(peers[self._rotate], CatchUp(self.id, self.slot_out)))
        return effects

    def _on_catch_up(self, m: CatchUp) -> list[Effect]:
        self.peer_slot_out[m.src] = max(self.peer_slot_out.get(m.src, 0), m.slot_out)
        if self.recovering:
            # A peer with state made itself known (it may be a member of a configuration
            # we do not know): pull the state from it, now if nothing is under way.
            if m.src not in self._sources:
                self._sources.insert(0, m.src)
                self._rotate = -1  # ask it next
                self._asked_at = None
            return self._ask_for_state()
        if m.slot_out > self.slot_out and self.slot_out == self._tick_slot_out:
            # A peer is ahead while we are stalled: ask it for what we lack. It may be a
            # member of a configuration we have not learned yet (we got our state from a
            # lagging peer), and the only one that still has slots of retired epochs.
            return [Send(m.src, CatchUp(self.id, self.slot_out))]
        if m.slot_out >= self.slot_out:
            return []
        if m.slot_out not in self.decisions:
            # We no longer keep what it lacks: offer our state (the first chunk; it pulls
            # the rest), unless a transfer to it is going on already.
            if self._sender.serving(m.src, self._now):
                return []
            return [Send(m.src, self._serve(StateRequest(m.src)))]
        last = min(self.slot_out, m.slot_out + self.timing.max_entries_per_message)
        entries = tuple((s, self.decisions[s]) for s in range(m.slot_out, last))
        return [Send(m.src, Decisions(entries))]

    def _install(
        self,
        slot_out: int,
        configs: tuple[Config, ...],
        app_state: bytes,
        client_table: tuple[tuple[str, int, int, Response | None], ...],
        digest: str,
    ) -> None:
        """Replace the replicated state by a snapshot's (state transfer or checkpoint)."""
        self.app.restore(app_state)
        self.client_table = {c: (sid, cid, r) for c, sid, cid, r in client_table}
        self.configs = list(configs)
        self.slot_in = max(self.slot_in, slot_out) if not self.recovering else slot_out
        self.slot_out = slot_out
        self.digest = digest

    def _on_chunk(self, m: StateChunk) -> list[Effect]:
        if not self.recovering and m.slot_out <= self.slot_out:
            return []  # nothing to gain from it
        got = self._receiver.on_chunk(self.id, m)
        if got is not None:
            self._asked_at = None  # a transfer is under way (or done)
        if isinstance(got, StateRequest):
            return [Send(m.src, got)]
        if isinstance(got, Incoming):
            return self._install_transfer(got)
        return []

    def _install_transfer(self, t: Incoming) -> list[Effect]:
        if not self.recovering and t.slot_out <= self.slot_out:
            return []  # we got there by ourselves meanwhile
        h = t.header
        self._install(t.slot_out, h.configs, bytes(t.buf), h.client_table, h.digest)
        # The installed state is ours now: it must be on disk before we act on it.
        self._unsaved = []
        self._checkpoint_due = True
        effects: list[Effect] = []
        self.recovering = False
        self._tick_slot_out = 0
        self._stalled_ticks = 0
        self.decisions = {s: b for s, b in self.decisions.items() if s >= t.slot_out}
        lost = [c for s in sorted(self.proposals) for c in self.proposals[s].commands]
        self.proposals = {s: b for s, b in self.proposals.items() if s >= t.slot_out}
        self._proposed = {c.key for b in self.proposals.values() for c in b.commands}
        self._requeue(tuple(c for c in lost if c.key not in self._proposed))
        while self.slot_out in self.decisions:
            effects += self._apply_next()
        return effects + self._propose()
