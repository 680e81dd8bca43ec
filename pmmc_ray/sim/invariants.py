"""The paper's invariants, checked while a simulation runs.

The checker sees every step: which process handled what, the effects it returned,
and the role's state afterwards. It keeps its own global record of what was ever
proposed, accepted and decided, so it can check properties no single process can:

  R1  no two different batches are decided for one slot (decisions from any commander
      or replica, at any time).
  R2  every slot a replica applies was decided, and it applied the decided batch.
  R3  a replica at slot_out n holds exactly the state (application state and client
      table) of a reference state machine that applied the decided batches of slots
      1..n-1 in order, each command once: so state transfer and exactly-once are
      checked too, not only the order of batches.
  R4  a replica's slot_out never decreases (within one incarnation).
  R5  a replica proposes only for slots < slot_out + WINDOW.
  A1  an acceptor's ballot_num never decreases, across restarts too.
  A2  an acceptor accepts a pvalue only at its current ballot_num.
  A3  an acceptor never forgets an accepted pvalue (with 4.1: a slot's pvalue is only
      replaced by one with a higher ballot), across restarts too.
  A4  for a ballot and slot, at most one batch is accepted by any acceptor.
  A5  once a majority accepted (b, s, c), any pvalue (b', s, c') accepted with b' > b
      has c' = c.
  C1  for a ballot and slot, commanders propose at most one batch.
  C2  a commander's p2a for (b, s) carries the batch chosen at any lower ballot.
  E1  a slot is chosen in one configuration only, and every decision a commander
      sends was chosen (a majority of acceptors accepted it).
  B1  a ballot is used (StartScout) by one leader incarnation only: a restarted
      leader never reuses a ballot (DESIGN 4). C1 depends on it, but a reuse only
      breaks C1 when timing is unlucky, so it is checked directly.
  D1  after every step, a replica's durable records cover every slot it has applied:
      nothing it acknowledged, and nothing it told a peer, lives in memory only
      (DESIGN 4b). Tracked from the Persist effects themselves.
  D2  a replica restarted with its disk resumes exactly at the slot_out its records
      reached (recovery neither loses nor invents slots).
  G1  an acceptor never accepts a slot below a collected mark it persisted, across
      restarts too (paper 4.2: a collected slot is decided, not empty).
  G2  when an acceptor collects epoch e below s, some replica of e's configuration or of
      a later one holds every slot below s on its disk: collected slots can always be
      recovered. (Not "of the newest configuration": a reconfiguration decided while
      the collect was on its way may name replicas that have no state yet; they pull
      it from the earlier configuration's replicas, which the nemesis never leaves
      without a copy.)
  X1  exactly once, checked on the reference itself with memory the bounded client table
      does not have: no write is performed twice, none after a decision rejected it.

A violation is recorded with the step that caused it; the simulator stops the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from ..app import InvalidOperation, KVStore, StateMachine
from ..core import Acceptor, Ballot, Batch, Config, OpenSession, Reconfigure, Replica
from ..core.messages import (
    AcceptorAccept,
    AcceptorCollected,
    AcceptorSnapshot,
    Decisions,
    Effect,
    P2a,
    Persist,
    Propose,
    ReplicaDecided,
    ReplicaSnapshot,
    Send,
    StartScout,
)


@dataclass(slots=True)
class _SlotHistory:
    accepted: dict[Ballot, Batch] = field(default_factory=dict)  # A4: one batch per ballot
    voters: dict[Ballot, set[str]] = field(default_factory=dict)
    chosen: tuple[Ballot, Batch] | None = None  # lowest ballot at which a majority accepted


class InvariantChecker:
    """Global safety checker fed by the simulator after every step."""

    def __init__(
        self,
        quorum_of: dict[int, int],
        app_factory: Callable[[], StateMachine] = KVStore,
        *,
        max_sessions: int = 100_000,
    ) -> None:
        self.quorum_of = quorum_of  # epoch -> acceptor majority size (filled in by the sim)
        self.violations: list[str] = []
        self.decided: dict[int, Batch] = {}
        self.proposed: dict[tuple[int, Ballot, int], Batch] = {}  # C1
        self.slots: dict[tuple[int, int], _SlotHistory] = {}
        self.acceptor_ballots: dict[tuple[str, int], Ballot] = {}  # A1
        self.acceptor_shadow: dict[tuple[str, int], dict[int, Ballot]] = {}  # A3
        self.replica_slot_out: dict[str, int] = {}
        self._configs_seen: dict[str, tuple[int, Config | None]] = {}
        self.incarnation: dict[str, int] = {}
        self.ballot_user: dict[tuple[int, Ballot], tuple[str, int]] = {}  # B1
        self.digest_at: dict[int, str] = {}
        self.chosen_in: dict[int, int] = {}  # slot -> epoch that chose it (E1)
        self.ref_app = app_factory()
        self.ref_table: dict[str, tuple[int, int]] = {}  # client -> (session, last), LRU
        self.performed_keys: set[tuple[str, int]] = set()  # X1
        self.rejected_keys: set[tuple[str, int]] = set()
        self.max_sessions = max_sessions
        self.ref_slot = 1
        self.ref_at: dict[int, Hashable] = {1: self._state_hash(self.ref_app, {})}
        self.durable_slot_out: dict[str, int] = {}  # replica -> slots 1.. on its disk (D1)
        self.collected: dict[tuple[str, int], int] = {}  # (acceptor, epoch) -> mark (G1)
        # replicas of every configuration with epoch >= e, set by the sim (G2)
        self.replicas_since: Callable[[int], Iterable[str]] = lambda e: ()

    def fail(self, what: str) -> None:
        if what not in self.violations:
            self.violations.append(what)

    # --- after each step ---------------------------------------------------------------

    def after_step(self, pid: str, role: object, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Send):
                if isinstance(e.msg, P2a):
                    self._on_p2a(pid, e.msg)
                elif isinstance(e.msg, Decisions):
                    self._on_decisions(pid, e.msg)
                elif isinstance(e.msg, Propose) and isinstance(role, Replica):
                    self._on_propose(pid, role, e.msg)
                elif isinstance(e.msg, StartScout):
                    self._on_start_scout(pid, e.msg)
            elif isinstance(e, Persist) and isinstance(e.record, AcceptorAccept):
                self._on_accept(pid, role, e.record)
            elif isinstance(e, Persist) and isinstance(e.record, AcceptorCollected):
                self._on_collected(pid, e.record.epoch, e.record.below)
            elif isinstance(e, Persist) and isinstance(e.record, AcceptorSnapshot):
                for epoch, _, below, _ in e.record.epochs:
                    self._on_collected(pid, epoch, below)
            elif isinstance(e, Persist) and isinstance(e.record, ReplicaSnapshot | ReplicaDecided):
                self._on_replica_record(pid, e.record)
        if isinstance(role, Acceptor):
            self._check_acceptor(pid, role)
        elif isinstance(role, Replica):
            self._check_replica(pid, role)

    def on_disk_lost(self, pid: str) -> None:
        """``pid``'s durable records are gone (it will recover without them)."""
        self.durable_slot_out.pop(pid, None)

    def on_restart(self, pid: str, role: object) -> None:
        """A process came back: start its per-incarnation checks afresh; check A1/A3, D2."""
        self.replica_slot_out.pop(pid, None)
        self.incarnation[pid] = self.incarnation.get(pid, 0) + 1
        if isinstance(role, Replica) and not role.recovering:
            durable = self.durable_slot_out.get(pid, 1)
            if role.slot_out != durable:
                self.fail(
                    f"D2: {pid} restarted at slot_out {role.slot_out}, "
                    f"its records reach slot_out {durable}"
                )
        if isinstance(role, Acceptor):
            self._check_acceptor(pid, role)
            for (aid, epoch), shadow in self.acceptor_shadow.items():
                if aid != pid:
                    continue
                st = role.epochs.get(epoch)
                mark = self.collected.get((aid, epoch), 0)
                for slot, ballot in shadow.items():
                    if slot < mark:
                        continue  # collected (paper 4.2): forgetting it is the point
                    pv = st.accepted.get(slot) if st else None
                    if pv is None or pv.ballot < ballot:
                        self.fail(
                            f"A3: {pid} forgot its pvalue for slot {slot} at {ballot} on restart"
                        )
                        return

    # --- acceptors ---------------------------------------------------------------------

    def _check_acceptor(self, pid: str, acc: Acceptor) -> None:
        for (aid, epoch), seen in self.acceptor_ballots.items():
            if aid == pid:
                st = acc.epochs.get(epoch)
                if st is None or st.ballot_num < seen:
                    now = st.ballot_num if st else "nothing"
                    self.fail(f"A1: {pid} epoch {epoch} ballot_num went from {seen} to {now}")
                    return
        for epoch, st in acc.epochs.items():
            self.acceptor_ballots[(pid, epoch)] = st.ballot_num

    def _on_collected(self, pid: str, epoch: int, below: int) -> None:
        if below > self.collected.get((pid, epoch), 0):
            self.collected[(pid, epoch)] = below
            shadow = self.acceptor_shadow.get((pid, epoch), {})
            for slot in [x for x in shadow if x < below]:
                del shadow[slot]
            held = max(
                (self.durable_slot_out.get(r, 1) for r in self.replicas_since(epoch)), default=1
            )
            if held < below:
                self.fail(
                    f"G2: {pid} collected epoch {epoch} below {below}, but no replica of that "
                    f"configuration or a later one has more than slots below {held} on disk"
                )

    def _on_accept(self, pid: str, acc: object, rec: AcceptorAccept) -> None:
        assert isinstance(acc, Acceptor)
        st = acc.epochs[rec.epoch]
        shadow = self.acceptor_shadow.setdefault((pid, rec.epoch), {})
        mark = self.collected.get((pid, rec.epoch), 0)
        for pv in rec.pvalues:
            if pv.slot < mark:
                self.fail(f"G1: {pid} accepted slot {pv.slot} below its collected mark {mark}")
            if pv.ballot != st.ballot_num:
                self.fail(
                    f"A2: {pid} accepted {pv.ballot} slot {pv.slot} at ballot_num {st.ballot_num}"
                )
            old = shadow.get(pv.slot)
            if old is not None and old > pv.ballot:
                self.fail(f"A3: {pid} replaced slot {pv.slot} pvalue at {old} by lower {pv.ballot}")
            shadow[pv.slot] = pv.ballot
            h = self.slots.setdefault((rec.epoch, pv.slot), _SlotHistory())
            prev = h.accepted.get(pv.ballot)
            if prev is not None and prev != pv.value:
                self.fail(f"A4: two batches accepted at {pv.ballot} for slot {pv.slot}")
            h.accepted[pv.ballot] = pv.value
            if h.chosen is not None and pv.ballot > h.chosen[0] and pv.value != h.chosen[1]:
                self.fail(
                    f"A5: slot {pv.slot} chosen at {h.chosen[0]}, other batch accepted at {pv.ballot}"
                )
            voters = h.voters.setdefault(pv.ballot, set())
            voters.add(pid)
            quorum = self.quorum_of.get(rec.epoch)
            if quorum is not None and len(voters) >= quorum:
                epoch = self.chosen_in.setdefault(pv.slot, rec.epoch)
                if epoch != rec.epoch:
                    self.fail(
                        f"E1: slot {pv.slot} chosen in epoch {epoch} and in epoch {rec.epoch}"
                    )
                if h.chosen is None or pv.ballot < h.chosen[0]:
                    h.chosen = (pv.ballot, pv.value)
                    for b, v in h.accepted.items():
                        if b > pv.ballot and v != pv.value:
                            self.fail(
                                f"A5: slot {pv.slot} chosen at {pv.ballot}, other batch at {b}"
                            )

    # --- leaders ------------------------------------------------------------------------

    def _on_start_scout(self, pid: str, m: StartScout) -> None:
        key = (m.config.epoch, m.ballot)
        me = (pid, self.incarnation.get(pid, 0))
        user = self.ballot_user.setdefault(key, me)
        if user != me:
            self.fail(
                f"B1: {pid} (incarnation {me[1]}) reused ballot {m.ballot} of incarnation {user[1]}"
            )

    # --- commanders ----------------------------------------------------------------------

    def _on_p2a(self, pid: str, m: P2a) -> None:
        for slot, value in m.entries:
            key = (m.epoch, m.ballot, slot)
            prev = self.proposed.get(key)
            if prev is not None and prev != value:
                self.fail(f"C1: two batches proposed at {m.ballot} for slot {slot} ({pid})")
            self.proposed[key] = value
            h = self.slots.get((m.epoch, slot))
            if h is not None and h.chosen is not None:
                b, v = h.chosen
                if b < m.ballot and v != value:
                    self.fail(
                        f"C2: p2a at {m.ballot} slot {slot} differs from the batch chosen at {b}"
                    )

    def _on_decisions(self, pid: str, m: Decisions) -> None:
        for slot, value in m.entries:
            if pid.startswith("commander-"):
                epoch = self.chosen_in.get(slot)
                h = self.slots.get((epoch, slot)) if epoch is not None else None
                if h is None or h.chosen is None or h.chosen[1] != value:
                    self.fail(f"E1: {pid} decided slot {slot} without a majority accepting it")
            prev = self.decided.get(slot)
            if prev is not None and prev != value:
                self.fail(f"R1: two different batches decided for slot {slot} (sent by {pid})")
            self.decided.setdefault(slot, value)

    # --- replicas ------------------------------------------------------------------------

    def _on_propose(self, pid: str, r: Replica, m: Propose) -> None:
        for slot, _ in m.entries:
            if slot >= r.slot_out + r.window:
                self.fail(f"R5: {pid} proposed slot {slot} with slot_out {r.slot_out}")

    def _on_replica_record(self, pid: str, rec: ReplicaSnapshot | ReplicaDecided) -> None:
        if isinstance(rec, ReplicaSnapshot):
            self.durable_slot_out[pid] = rec.slot_out
            return
        durable = self.durable_slot_out.get(pid, 1)
        for slot, _ in rec.entries:
            if slot == durable:
                durable += 1
            elif slot > durable:
                self.fail(f"D1: {pid} persisted slot {slot} but not slot {durable}")
                return
        self.durable_slot_out[pid] = durable

    def _check_replica(self, pid: str, r: Replica) -> None:
        if r.recovering:
            return
        durable = self.durable_slot_out.get(pid, 1)
        if r.slot_out > durable:
            self.fail(
                f"D1: {pid} applied slots up to {r.slot_out - 1}, its disk has them up to "
                f"{durable - 1}"
            )
        # The configuration list only grows (it is the decided sequence); look again
        # only when it changed, since a long run keeps hundreds.
        last = r.configs[-1] if r.configs else None
        seen = self._configs_seen.get(pid)
        if seen is None or seen[0] != len(r.configs) or seen[1] is not last:
            self._configs_seen[pid] = (len(r.configs), last)
            for cfg in r.configs:
                if cfg.epoch not in self.quorum_of:
                    self.quorum_of[cfg.epoch] = cfg.quorum
        prev = self.replica_slot_out.get(pid)
        if prev is not None and r.slot_out < prev:
            self.fail(f"R4: {pid} slot_out went from {prev} to {r.slot_out}")
        if prev is not None:
            for s in range(prev, r.slot_out):
                got = r.decisions.get(s)
                want = self.decided.get(s)
                if want is None or (got is not None and got != want):
                    self.fail(f"R2: {pid} applied slot {s} which was not decided as applied")
                    break
        self.replica_slot_out[pid] = r.slot_out
        if r.slot_in > r.slot_out + r.window:
            self.fail(f"R5: {pid} slot_in {r.slot_in} > slot_out {r.slot_out} + WINDOW")
        seen = self.digest_at.setdefault(r.slot_out, r.digest)
        if seen != r.digest:
            self.fail(f"R3: {pid} at slot_out {r.slot_out} applied a different history")
        if prev != r.slot_out:
            self._check_state(pid, r)

    # --- reference state machine (R3) -------------------------------------------------------

    @staticmethod
    def _state_hash(app: StateMachine, table: dict[str, tuple[int, int]]) -> Hashable:
        """A fingerprint of the application state and the session table, compared
        within this process only. For the KV store it hashes the items (str hashes are
        cached), not a snapshot: a long run takes one per applied slot and replica, and
        serializing the store each time was a quarter of the simulation's time."""
        if type(app) is KVStore:
            data = app.data
            return (len(data), hash(frozenset(data.items())), hash(frozenset(table.items())))
        h = hashlib.blake2b(app.snapshot(), digest_size=16)
        h.update(repr(sorted(table.items())).encode())
        return h.hexdigest()

    def _advance_reference(self, upto: int) -> None:
        """The reference: the spec of exactly-once with sessions, written independently of
        the replica. OpenSession decided in slot s opens a session of identity s (a live
        one keeps its identity); a command is performed only if it names its client's
        live session and is newer than its last; every command of the live session makes
        it the most recently used; beyond ``max_sessions`` the least recently used goes.

        X1 checks the spec itself, with memory the table does not have: no write is ever
        performed twice, and none is performed after a decision rejected it (its client
        never uses that id again)."""
        table = self.ref_table
        while self.ref_slot < upto and self.ref_slot in self.decided:
            slot = self.ref_slot
            for c in self.decided[slot].commands:
                cur = table.get(c.client_id)
                if isinstance(c.op, OpenSession):
                    table.pop(c.client_id, None)
                    table[c.client_id] = cur if cur is not None else (slot, 0)
                    while len(table) > self.max_sessions:
                        del table[next(iter(table))]
                    continue
                if cur is None or cur[0] != c.session:
                    self.rejected_keys.add(c.key)
                    continue  # no live session of that identity: rejected
                table.pop(c.client_id)
                table[c.client_id] = cur
                if cur[1] >= c.command_id:
                    continue  # performed before: exactly once
                if not isinstance(c.op, Reconfigure):
                    try:
                        self.ref_app.apply(c.op)
                    except InvalidOperation:
                        pass
                read = not isinstance(c.op, Reconfigure) and self.ref_app.is_read_only(c.op)
                if not read:
                    if c.key in self.performed_keys:
                        self.fail(f"X1: {c.key} is performed a second time (slot {slot})")
                    if c.key in self.rejected_keys:
                        self.fail(f"X1: {c.key} is performed after it was rejected (slot {slot})")
                    self.performed_keys.add(c.key)
                table[c.client_id] = (cur[0], c.command_id)
            self.ref_slot += 1
            self.ref_at[self.ref_slot] = self._state_hash(self.ref_app, self.ref_table)

    def _check_state(self, pid: str, r: Replica) -> None:
        self._advance_reference(r.slot_out)
        want = self.ref_at.get(r.slot_out)
        if want is None:
            return  # some slot below is not known as decided: R2 reports it
        table = {c: (sid, cid) for c, (sid, cid, _) in r.client_table.items()}
        if self._state_hash(r.app, table) != want:
            self.fail(
                f"R3: {pid} at slot_out {r.slot_out} holds a state no in-order, exactly-once replay gives"
            )
