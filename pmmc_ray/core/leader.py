"""Leader (paper 2.4 and 3): turns replicas' proposals into ballots and pvalues.

A leader process keeps one :class:`LeaderEpoch` per configuration it belongs to
(configurations change through the log; each runs its own synod instances). In each:

- ``ballot_num``, ``active``, ``proposals`` (slot -> batch, one per slot), as in the
  paper. ``_become_active`` and ``_become_passive`` are the only places that flip
  ``active``.
- Adopted: ``proposals := proposals ◁ pmax(pvals)``, then phase 2 for every
  proposal (paper 2.4). Slots below the highest ``slot_out`` a replica reported are
  already decided and applied somewhere, so phase 2 for them waits until a replica
  asks for them again.
- Preempted by a higher ballot: go passive and, instead of scouting again at once,
  watch the winner with pings; scout again only when it has not answered "active"
  for ``timeout``. ``timeout`` grows multiplicatively on preemption and shrinks
  additively on adoption (paper 3, "leader failure detection and duelling"); it never
  shrinks just because time passes, so leadership does not change hands on every
  pause longer than the initial timeout.
- Looking before scouting: when an epoch starts (a deployment's first start, a
  reconfiguration), only its first leader scouts at once. The others, a leader
  restarted (it has used a round before; the first epoch it joins in this life), and
  one that joins an epoch on a replica's report rather than a proposal, first ping the
  other leaders for ``timeout`` times one plus their place among the leaders
  (answering pings as ``abdicated`` meanwhile) and watch one that answers as active,
  taking its ballot from the Pong to scout above it should it die; they scout only if
  none answers. A leader that just came back does not preempt the one that took over
  while it was down, and leaders do not duel when an epoch starts (the loser of a
  duel keeps a doubled timeout, and the next failover waits that long).
- Active leaders ping the other leaders too. Replicas send proposals to the leader of
  the highest ballot they know of, so a leader that was preempted may run no phase 2
  that could tell it; a Pong from an active leader with a higher ballot does, and it
  goes passive and watches that leader (otherwise nobody would watch it).
- Active but useless: when replicas have asked for slots and none of them has moved
  its slot_out for ``timeout`` (our commander cannot reach the acceptors, or it is
  paused), the leader steps aside: it answers pings as ``abdicated``, so the leader
  watching it takes over at once, and for ``timeout`` (which grows as on a preemption)
  it does not scout but pings the other leaders; if one answers as active, it watches
  that one. Being alive is not the same as making progress.

Durable state: the identity it puts in its ballots, and the highest ballot round it
has used. A round is persisted before the p1a for it can leave, so a restarted leader
never reuses a ballot. Reusing one with different proposals could get two commands
accepted at the same (ballot, slot), and then pmax could pick either: two decisions
for one slot (C1). Every ``COMPACT_EVERY`` records the leader writes one
:class:`LeaderState` with all of it instead, which supersedes the rest: its log stays
a few records long however many elections it runs. A leader that comes back *without*
its records cannot know which
rounds it used; it takes a fresh identity instead (``fresh_identity``, drawn by its
interpreter), so its ballots can never equal one it made before, and it takes part
again at once.

A ballot identity is ``"<leader process id>"`` or ``"<leader process id>/<nonce>"``;
:func:`pmmc_ray.core.ids.leader_of_ballot` maps it back to the process to ping.

Garbage collection (paper 4.2): replicas report their durable ``slot_out`` and their
newest configuration in :class:`Progress` on their ticks. For each epoch, the minimum
over those reports of the replicas of that configuration and of every newer one the
leader knows is its collect point: every slot below it is applied, and on disk, at every replica that could ever
need it. The leader drops its proposals below that point, tells the epoch's acceptors
to forget them (:class:`Collect`, on its tick, re-sent now and then), asks for no
pvalue below it in phase 1 (the p1a's floor), and never runs phase 2 below it or below
a collected mark an acceptor reported: such a slot is decided, and its pvalues may be
gone, so it is not an empty slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .ids import leader_of_ballot
from .messages import (
    Adopted,
    Collect,
    DurableRecord,
    Effect,
    EpochQuery,
    LeaderIdentity,
    LeaderRetired,
    LeaderRound,
    LeaderState,
    Leading,
    Message,
    Persist,
    Phase2,
    Ping,
    Pong,
    Preempted,
    Progress,
    Propose,
    Retire,
    Send,
    SetTimer,
    StartScout,
    Timer,
    persist_first,
)
from .timing import Timing, chunks
from .types import Ballot, Batch, Config, pmax

TICK = "tick"
COMPACT_EVERY = 16


@dataclass(slots=True)
class LeaderEpoch:
    """A leader's state in one configuration epoch."""

    config: Config
    ballot_num: Ballot
    active: bool = False
    proposals: dict[int, Batch] = field(default_factory=dict)
    scouting: bool = False
    scout_since: int = 0
    watching: str | None = None
    last_alive: int = 0
    decided_below: int = 0
    requested: set[int] = field(default_factory=set)  # slots replicas proposed to us
    last_propose: int = 0
    collected_below: int = 0  # decided and known to every replica: never phase 2 below
    collect_sent: int = 0  # the point last sent to the acceptors in a Collect
    collect_at: int = 0  # when it was sent
    applied_seen: int = 0  # the highest slot_out replicas reported, as of the last tick
    progress_at: int = 0  # when that last moved, or work arrived after idleness
    was_outstanding: bool = False
    hold_until: int = 0  # stepped aside: no scouting before this


class Leader:
    """A pure leader: ``handle(msg, now)`` returns effects."""

    def __init__(
        self,
        leader_id: str,
        config: Config,
        timing: Timing,
        *,
        scout_id: str,
        commander_id: str,
        max_round: int = -1,
        retired_upto: int = -1,
        identity: str | None = None,
        persist_identity: bool = False,
    ) -> None:
        self.id = leader_id
        self.identity = identity or leader_id  # what goes into Ballot.leader
        self._persist_identity = persist_identity
        self._records = 0  # records in the durable log since its last LeaderState
        self.timing = timing
        self.scout = scout_id
        self.commander = commander_id
        self.max_round = max_round  # highest round ever persisted
        self.retired_upto = retired_upto  # every epoch <= this is retired for good
        self.reported: dict[str, int] = {}  # replica -> highest slot_out it proposed with
        self.progress: dict[str, int] = {}  # replica -> highest durable slot_out (Progress)
        self.known_configs: dict[int, Config] = {config.epoch: config}
        self.timeout = timing.timeout_initial
        self.epochs: dict[int, LeaderEpoch] = {}
        self._initial = config
        # Restarted (it has used a round before): the first epoch it joins in this life,
        # it looks for an active leader before scouting (see _join_and_start).
        self._look_first = max_round >= 0

    @classmethod
    def recover(
        cls,
        leader_id: str,
        config: Config,
        timing: Timing,
        records: Iterable[DurableRecord],
        *,
        scout_id: str,
        commander_id: str,
        fresh_identity: str | None = None,
    ) -> Leader:
        """Rebuild a leader from its durable records.

        ``fresh_identity`` is the ballot identity to take (and persist at ``start``) if
        the records hold none: a first start, or a restart after the records were lost.
        It must never have been used by any leader before. Without one, the identity
        is the leader's id (records written without an identity meant that).
        """
        max_round = retired = -1
        identity: str | None = None
        count = 0
        for rec in records:
            count += 1
            if isinstance(rec, LeaderState):
                identity, max_round, retired, count = (
                    rec.identity,
                    rec.max_round,
                    rec.retired_upto,
                    1,
                )
            elif isinstance(rec, LeaderIdentity):
                identity = rec.identity
            elif isinstance(rec, LeaderRound):
                max_round = max(max_round, rec.round)
            elif isinstance(rec, LeaderRetired):
                retired = max(retired, rec.epoch)
            else:
                raise TypeError(f"not a leader record: {rec!r}")
        ldr = cls(
            leader_id,
            config,
            timing,
            scout_id=scout_id,
            commander_id=commander_id,
            max_round=max_round,
            retired_upto=retired,
            identity=identity or fresh_identity,
            persist_identity=identity is None and fresh_identity is not None,
        )
        ldr._records = count
        return ldr

    def start(self, now: int) -> list[Effect]:
        effects: list[Effect] = []
        if self._persist_identity:
            effects.append(self._persist(LeaderIdentity(self.identity)))
            self._persist_identity = False
        if self.id in self._initial.leaders and self._initial.epoch > self.retired_upto:
            effects += self._join_and_start(self._initial, now)
        effects.append(SetTimer(TICK, self.timing.ping_interval))
        return persist_first(effects)

    def handle(self, msg: Message | Timer, now: int) -> list[Effect]:
        match msg:
            case Propose():
                effects = self._on_propose(msg, now)
            case Progress():
                effects = self._on_progress(msg, now)
            case Adopted():
                effects = self._on_adopted(msg, now)
            case Preempted():
                effects = self._on_preempted(msg, now)
            case Ping():
                ep = self.epochs.get(msg.epoch)
                active = ep is not None and ep.active
                aside = ep is not None and now < ep.hold_until
                ballot = ep.ballot_num if active else None
                effects = [Send(msg.src, Pong(self.id, msg.epoch, active, aside, ballot))]
            case Pong():
                self._on_pong(msg, now)
                effects = []
            case Retire():
                effects = self._retire(msg.epoch)
            case Timer(name=name) if name == TICK:
                effects = self._on_tick(now)
            case _:
                effects = []
        return persist_first(effects)

    # --- state changes -------------------------------------------------------------

    def _join_and_start(self, config: Config, now: int, look: bool = False) -> list[Effect]:
        """Join ``config``'s epoch. Its first leader scouts at once; the others, a
        leader restarted (the first epoch it joins in this life) and one that joins on
        a report rather than a proposal (``look``) first look for a leader that leads
        already: they ping the others (answering pings as abdicated) for ``timeout``
        times one plus their place in the list of leaders, watch one that answers as
        active, and scout only if none does. So leaders do not duel when an epoch
        starts (a deployment's first start, a reconfiguration, a restart of them all):
        a duel doubles the loser's timeout, and the next failover waits that long."""
        ep = self._join(config, now)
        others = [ldr for ldr in config.leaders if ldr != self.id]
        place = config.leaders.index(self.id)
        look = look or self._look_first or place > 0
        self._look_first = False
        if look and others:
            ep.hold_until = now + self.timeout * (1 + place)
            return [Send(ldr, Ping(self.id, config.epoch)) for ldr in others]
        return self._start_scouting(ep, now)

    def _join(self, config: Config, now: int) -> LeaderEpoch:
        ep = LeaderEpoch(config, Ballot(self.max_round + 1, self.identity), last_propose=now)
        self.epochs[config.epoch] = ep
        self.known_configs.setdefault(config.epoch, config)
        return ep

    def _collect_point(self, epoch: int) -> int:
        """Every slot below this is applied and durable at every replica of ``epoch``'s
        configuration and of every newer one known here (0 if one has not reported)."""
        replicas = {r for e, c in self.known_configs.items() if e >= epoch for r in c.replicas}
        return min((self.progress.get(r, 0) for r in replicas), default=0)

    def _collected(self, ep: LeaderEpoch, below: int) -> None:
        """Slots below ``below`` are decided and known to every replica: forget them."""
        if below <= ep.collected_below:
            return
        ep.collected_below = below
        ep.proposals = {s: b for s, b in ep.proposals.items() if s >= below}
        ep.requested = {s for s in ep.requested if s >= below}

    def _retire(self, upto: int) -> list[Effect]:
        """Drop every epoch <= ``upto`` for good: all their slots are decided."""
        if upto <= self.retired_upto:
            return []
        self.retired_upto = upto
        effects: list[Effect] = [
            self._persist(LeaderRetired(upto)),
            Send(self.scout, Retire(upto)),
            Send(self.commander, Retire(upto)),
        ]
        for epoch in [e for e in self.epochs if e <= upto]:
            ep = self.epochs.pop(epoch)
            point = self._collect_point(epoch)
            if point > 0:
                # Last word to the epoch's acceptors before its state goes (paper 4.2).
                msg = Collect(self.id, epoch, point)
                effects += [Send(a, msg) for a in ep.config.acceptors]
        return effects

    def _start_scouting(self, ep: LeaderEpoch, now: int) -> list[Effect]:
        # Every scouting attempt uses a round this leader has never used, in any epoch.
        rnd = max(ep.ballot_num.round, self.max_round + 1)
        self.max_round = rnd
        ep.ballot_num = Ballot(rnd, self.identity)
        ep.active = False
        ep.scouting = True
        ep.scout_since = now
        ep.watching = None
        return [
            self._persist(LeaderRound(rnd)),
            Send(self.scout, StartScout(ep.config, ep.ballot_num, ep.collected_below)),
        ]

    def _persist(self, rec: LeaderIdentity | LeaderRound | LeaderRetired) -> Persist:
        """``rec`` (already reflected in this leader's fields), or, every COMPACT_EVERY
        records, the whole state in one record that lets the earlier ones go."""
        self._records += 1
        if self._records < COMPACT_EVERY:
            return Persist(rec)
        self._records = 1
        return Persist(LeaderState(self.identity, self.max_round, self.retired_upto))

    def _become_active(self, ep: LeaderEpoch, now: int) -> list[Effect]:
        ep.active = True
        ep.scouting = False
        ep.progress_at = now
        self.timeout = max(self.timing.timeout_min, self.timeout - self.timing.timeout_decrease)
        # Slots below decided_below are decided already. If no replica has told us its
        # slot_out yet (we just started), run only what replicas asked us for: pmax can
        # hold the whole epoch, and replicas re-propose anything still undecided.
        if ep.decided_below > 0:
            slots = sorted(s for s in ep.proposals if s >= ep.decided_below)
        else:
            slots = sorted(ep.requested)
        # Replicas send new proposals to the leader they think leads; tell them it is
        # us now, so that they re-send what they proposed to the one before.
        leading = Leading(self.id, ep.config.epoch, ep.ballot_num)
        return self._phase2(ep, [(s, ep.proposals[s]) for s in slots]) + [
            Send(r, leading) for r in ep.config.replicas
        ]

    def _become_passive(self, ep: LeaderEpoch, winner: Ballot, now: int) -> None:
        ep.active = False
        ep.scouting = False
        ep.ballot_num = Ballot(winner.round + 1, self.identity)
        # Watch the winner's process; if the winner is a ballot of our own (an earlier
        # identity of this process), there is nobody to watch: scout again on timeout.
        winner_process = leader_of_ballot(winner.leader)
        ep.watching = winner_process if winner_process != self.id else None
        ep.last_alive = now
        self.timeout = min(self.timing.timeout_max, int(self.timeout * self.timing.timeout_factor))

    def _on_pong(self, m: Pong, now: int) -> None:
        ep = self.epochs.get(m.epoch)
        if ep is None or ep.scouting:
            return
        if ep.active:
            if m.active and m.ballot is not None and m.ballot > ep.ballot_num:
                # Preempted without noticing (proposals go to the newer leader, so our
                # commander runs nothing that acceptors could refuse): give way to it.
                self._become_passive(ep, m.ballot, now)
            return
        if m.active and (m.src == ep.watching or now < ep.hold_until):
            ep.watching = m.src  # while stepping aside: found who leads now
            ep.last_alive = now
            if m.ballot is not None and not m.ballot < ep.ballot_num:
                # Should it die, scout above its ballot at once: a scout below it would
                # only be preempted, and then wait a doubled timeout watching a corpse.
                ep.ballot_num = Ballot(m.ballot.round + 1, self.identity)
        elif m.abdicated and m.src == ep.watching:
            ep.last_alive = now - self.timeout - 1  # it gave up: take over on the next tick

    def _step_aside(self, ep: LeaderEpoch, now: int) -> None:
        """Active, but nothing we run gets decided: let another leader take over."""
        ep.active = False
        ep.watching = None
        ep.hold_until = now + self.timeout
        self.timeout = min(self.timing.timeout_max, int(self.timeout * self.timing.timeout_factor))

    def _stalled(self, ep: LeaderEpoch, now: int) -> bool:
        """True if replicas wait for slots and none has advanced for ``timeout``."""
        reports = [self.progress.get(r, 0) for r in ep.config.replicas]
        applied = max([ep.decided_below, *reports])
        outstanding = any(s >= applied for s in ep.requested)
        if applied > ep.applied_seen or not outstanding or not ep.was_outstanding:
            ep.progress_at = now
        ep.applied_seen = max(ep.applied_seen, applied)
        ep.was_outstanding = outstanding
        # Replicas report progress on their ticks: never call them stuck within three.
        patience = max(self.timeout, 3 * self.timing.replica_tick)
        return outstanding and now - ep.progress_at > patience

    # --- handlers --------------------------------------------------------------------

    def _phase2(self, ep: LeaderEpoch, entries: list[tuple[int, Batch]]) -> list[Effect]:
        # Never below the collected mark: those slots are decided, not empty (paper 4.2).
        entries = [(s, b) for s, b in entries if s >= ep.collected_below]
        return [
            Send(self.commander, Phase2(ep.config, ep.ballot_num, part))
            for part in chunks(entries, self.timing.max_entries_per_message)
        ]

    def _heard_from(self, replica: str, slot_out: int, config: Config) -> list[Effect]:
        """A replica has applied every slot below ``slot_out`` and knows ``config``
        (from a proposal, or a Progress report: a passive leader gets no proposals)."""
        self.reported[replica] = max(self.reported.get(replica, 0), slot_out)
        self.known_configs.setdefault(config.epoch, config)
        if config.epoch > 0 and all(
            self.reported.get(r, 0) >= config.start_slot for r in config.replicas
        ):
            # Every replica of this configuration has applied every slot before it:
            # older epochs are finished, and no replica can need their leaders again.
            return self._retire(config.epoch - 1)
        return []

    def _on_progress(self, m: Progress, now: int) -> list[Effect]:
        self.progress[m.src] = max(self.progress.get(m.src, 0), m.slot_out)
        effects = self._heard_from(m.src, m.slot_out, m.config)
        cfg = m.config
        if (
            self.id in cfg.leaders
            and cfg.epoch > self.retired_upto
            and cfg.epoch not in self.epochs
        ):
            # A configuration we lead in that we have not joined (proposals go to
            # the leader that leads, so we may get none): join it, and watch
            # whoever leads it, so that someone takes over when it dies.
            effects += self._join_and_start(cfg, now, look=True)
        # Remind it who leads (a Leading can be lost; it sends new proposals to
        # the leader it last heard of).
        for ep in self.epochs.values():
            if ep.active and m.src in ep.config.replicas:
                effects.append(Send(m.src, Leading(self.id, ep.config.epoch, ep.ballot_num)))
        return effects

    def _on_propose(self, m: Propose, now: int) -> list[Effect]:
        effects = self._heard_from(m.src, m.slot_out, m.config)
        if m.config.epoch <= self.retired_upto:
            return effects  # a late proposal for a finished epoch
        ep = self.epochs.get(m.config.epoch)
        if ep is None:
            if self.id not in m.config.leaders:
                return effects
            effects += self._join_and_start(m.config, now)
            ep = self.epochs[m.config.epoch]
        ep.last_propose = now
        if m.slot_out > ep.decided_below:
            ep.decided_below = m.slot_out
            ep.requested = {s for s in ep.requested if s >= m.slot_out}
        run: list[tuple[int, Batch]] = []
        for slot, batch in m.entries:
            if slot < ep.collected_below:
                continue  # a late copy of a proposal for a decided, collected slot
            ep.requested.add(slot)
            if slot not in ep.proposals:
                ep.proposals[slot] = batch
            # A repeated proposal means the replica has not seen the decision: run
            # phase 2 again (with whatever this leader must propose for the slot).
            run.append((slot, ep.proposals[slot]))
        if ep.active:
            effects += self._phase2(ep, run)
        return effects

    def _on_adopted(self, m: Adopted, now: int) -> list[Effect]:
        ep = self.epochs.get(m.epoch)
        if ep is None or not ep.scouting or m.ballot != ep.ballot_num:
            return []  # stale
        self._collected(ep, m.collected_below)
        for slot, pv in pmax(m.pvalues).items():
            if slot >= ep.collected_below:
                ep.proposals[slot] = pv.value
        return self._become_active(ep, now)

    def _on_preempted(self, m: Preempted, now: int) -> list[Effect]:
        ep = self.epochs.get(m.epoch)
        if ep is None or not m.ballot > ep.ballot_num:
            return []  # stale: we have moved past that ballot already
        self._become_passive(ep, m.ballot, now)
        return []

    def _on_tick(self, now: int) -> list[Effect]:
        effects: list[Effect] = []
        for epoch in sorted(self.epochs):
            ep = self.epochs[epoch]
            point = self._collect_point(epoch)
            self._collected(ep, point)
            if point > ep.collect_sent or (
                point > 0 and now - ep.collect_at >= self.timing.retire_check
            ):
                # Tell the acceptors; re-sent now and then, as a Collect can be lost.
                ep.collect_sent, ep.collect_at = point, now
                msg = Collect(self.id, epoch, point)
                effects += [Send(a, msg) for a in ep.config.acceptors]
            if now - ep.last_propose >= self.timing.retire_check:
                # Idle epoch: maybe a newer configuration took over and we missed Retire.
                ep.last_propose = now
                query = EpochQuery(self.id, epoch)
                effects += [Send(r, query) for r in ep.config.replicas]
            if ep.scouting:
                if now - ep.scout_since >= self.timing.scout_retry:
                    ep.scout_since = now
                    msg = StartScout(ep.config, ep.ballot_num, ep.collected_below)
                    effects.append(Send(self.scout, msg))
            elif ep.active:
                if self._stalled(ep, now):
                    self._step_aside(ep, now)
                else:
                    # Another leader may have been adopted with a higher ballot since.
                    others = [ldr for ldr in ep.config.leaders if ldr != self.id]
                    effects += [Send(ldr, Ping(self.id, epoch)) for ldr in others]
            elif now < ep.hold_until:
                # Stepped aside: give the others their chance, and look for who leads.
                others = [ldr for ldr in ep.config.leaders if ldr != self.id]
                effects += [Send(ldr, Ping(self.id, epoch)) for ldr in others]
            elif ep.watching is None or now - ep.last_alive > self.timeout:
                effects += self._start_scouting(ep, now)
            else:
                effects.append(Send(ep.watching, Ping(self.id, epoch)))
        effects.append(SetTimer(TICK, self.timing.ping_interval))
        return effects
