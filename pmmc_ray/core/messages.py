"""Messages between roles, named as in the paper (section 2), and the effects roles return.

Every message is a frozen record. Messages carry the configuration epoch and the
ballot they are about, so a role can always tell a stale or duplicated message from a
current one: the network may lose, duplicate and reorder anything.

Effects are what a role asks its interpreter (the simulator or the Ray runtime) to do.
The interpreter executes them in list order, and the order matters in one place:

    Persist effects always come before the Send effects of the same step, and the
    interpreter must finish persisting before it sends. An acceptor that answers a
    p1b or p2b for state that is not yet durable can, after a crash, vote against its
    own promise, and then two different commands can be decided in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .types import Ballot, Batch, Command, Config, PValue, fast_pickle

Entries = tuple[tuple[int, Batch], ...]
"""(slot, batch) pairs, sorted by slot."""


# --- client <-> replica ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """<request, c>: a client asks a replica to perform command c."""

    command: Command


@dataclass(frozen=True, slots=True)
class Requests:
    """Several client requests that reached a replica together (a client process
    multiplexes its clients' commands into one call). Handled like one Request each,
    then one propose: they share a batch instead of the first going alone."""

    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """<response, cid, result>: the outcome of a performed command.

    ``error`` is set (and ``result`` is None) when the state machine rejected the
    operation; the rejection is itself part of the replicated history.
    """

    client_id: str
    command_id: int
    result: Any = None
    error: str | None = None


# --- replica -> leader -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propose:
    """<propose, s, c>, batched: a replica proposes batches for slots of ``config``.

    ``slot_out`` is the sender's slot_out: every slot below it is decided, so a newly
    adopted leader need not run phase 2 again for those slots.
    """

    src: str
    config: Config
    slot_out: int
    entries: Entries


@dataclass(frozen=True, slots=True)
class Progress:
    """A replica's ``slot_out``, made durable before this was sent: every slot below it
    is applied and on the replica's disk. Leaders take the minimum over a
    configuration's replicas as the point below which acceptors may forget (paper 4.2).

    ``config`` is the newest configuration the replica knows. A replica past slot s has
    applied every reconfiguration decided before s, so a leader that takes the minimum
    only over reports like this one knows every configuration decided below that
    minimum, and counts its replicas too (a member that just joined holds nothing yet).
    """

    src: str
    slot_out: int
    config: Config


@dataclass(frozen=True, slots=True)
class Collect:
    """Leader to acceptor: every slot of ``epoch`` below ``below`` is applied and durable at
    every replica that could need it; forget those pvalues (paper 4.2)."""

    src: str
    epoch: int
    below: int


@dataclass(frozen=True, slots=True)
class Retire:
    """Every slot of ``epoch`` and of all earlier epochs is decided: leaders (and their
    scouts and commanders) may drop those epochs' state for good."""

    epoch: int


@dataclass(frozen=True, slots=True)
class EpochQuery:
    """A leader whose epoch has been idle asks a replica whether it is retired."""

    src: str
    epoch: int


# --- leader <-> scout / commander --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartScout:
    """Leader asks its scout to run phase 1 for ``ballot`` in ``config``.

    ``floor``: every slot below it is applied at every replica (the leader's collect
    point); acceptors leave those slots out of their p1b.
    """

    config: Config
    ballot: Ballot
    floor: int = 0


@dataclass(frozen=True, slots=True)
class Phase2:
    """Leader asks its commander to run phase 2 for these (slot, batch) at ``ballot``."""

    config: Config
    ballot: Ballot
    entries: Entries


@dataclass(frozen=True, slots=True)
class Adopted:
    """<adopted, b, pvals>: a majority of acceptors adopted ``ballot``.

    ``pvalues`` is already reduced with pmax: at most one pvalue per slot.
    ``collected_below``: the highest collected mark among the answering acceptors (and
    the p1a's floor): every slot below it is decided and known to every replica, so
    the leader must never run phase 2 for it (its pvalues may be gone).
    """

    epoch: int
    ballot: Ballot
    pvalues: tuple[PValue, ...]
    collected_below: int = 0


@dataclass(frozen=True, slots=True)
class Preempted:
    """<preempted, b'>: an acceptor has adopted ``ballot``, higher than ``for_ballot``."""

    epoch: int
    for_ballot: Ballot
    ballot: Ballot


# --- scout / commander <-> acceptor ------------------------------------------------


@dataclass(frozen=True, slots=True)
class P1a:
    """<p1a, λ, b>: phase-1 request from scout ``src``; pvalues below ``floor`` are not
    wanted (see :class:`StartScout`)."""

    src: str
    epoch: int
    ballot: Ballot
    floor: int = 0


@dataclass(frozen=True, slots=True)
class P1b:
    """<p1b, α, b, accepted>: the acceptor's current ballot and accepted pvalues.

    ``for_ballot`` is the ballot of the p1a being answered. ``accepted`` holds only
    slots at or above both the p1a's floor and ``collected_below``, the acceptor's
    collected mark (paper 4.2): a slot below the mark was decided and is no empty slot.
    """

    src: str
    epoch: int
    for_ballot: Ballot
    ballot: Ballot
    accepted: tuple[PValue, ...]
    collected_below: int = 0


@dataclass(frozen=True, slots=True)
class P2a:
    """<p2a, λ, <b, s, c>>, batched: commander ``src`` asks to accept these entries."""

    src: str
    epoch: int
    ballot: Ballot
    entries: Entries


@dataclass(frozen=True, slots=True)
class P2b:
    """<p2b, α, b>: the acceptor's current ballot and the slots it accepted at ``for_ballot``.

    ``collected_below``: the acceptor's collected mark; it accepts nothing below it.
    """

    src: str
    epoch: int
    for_ballot: Ballot
    ballot: Ballot
    slots: tuple[int, ...]
    collected_below: int = 0


# --- commander -> replica, replica <-> replica -------------------------------------


@dataclass(frozen=True, slots=True)
class Decisions:
    """<decision, s, c>, batched. Sent by commanders, and by replicas when catching up.

    ``ballot``: the commander's ballot (None from a replica). Replicas use it as a hint
    of who leads: they send new proposals to that ballot's leader first."""

    entries: Entries
    ballot: Ballot | None = None


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A replica that stopped making progress asks a peer for decisions from ``slot_out``."""

    src: str
    slot_out: int


@dataclass(frozen=True, slots=True)
class StateRequest:
    """A replica asks a peer for state: the chunk at byte ``offset`` of the peer's frozen
    state at ``slot_out`` (offset 0: start a transfer of the peer's current state). See
    :mod:`pmmc_ray.core.transfer`."""

    src: str
    slot_out: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class StateHeader:
    """What a replica needs besides the application bytes to continue from a slot_out."""

    configs: tuple[Config, ...]
    client_table: tuple[tuple[str, int, int, Response | None], ...]
    digest: str


@dataclass(frozen=True, slots=True)
class StateChunk:
    """Bytes [offset, offset + len(data)) of a peer's application snapshot at ``slot_out``
    (``total`` bytes in all); the chunk at offset 0 carries the header too."""

    src: str
    slot_out: int
    offset: int
    total: int
    data: bytes
    header: StateHeader | None = None


# --- leader <-> leader (failure detection, paper section 3) ------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    src: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Pong:
    """``active``: the sender leads the epoch, with ``ballot``. ``abdicated``: it stepped
    aside because it could not make progress; whoever watches it should take over now."""

    src: str
    epoch: int
    active: bool
    abdicated: bool = False
    ballot: Ballot | None = None


@dataclass(frozen=True, slots=True)
class Leading:
    """Leader ``src`` was adopted with ``ballot`` in ``epoch``: replicas send it their new
    proposals first, and their undecided ones now (a hint only; any leader can still
    be proposed to)."""

    src: str
    epoch: int
    ballot: Ballot


# --- timers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer set with :class:`SetTimer` has fired."""

    name: str


Message = (
    Request
    | Requests
    | Response
    | Propose
    | Progress
    | Collect
    | Retire
    | EpochQuery
    | StartScout
    | Phase2
    | Adopted
    | Preempted
    | P1a
    | P1b
    | P2a
    | P2b
    | Decisions
    | CatchUp
    | StateRequest
    | StateChunk
    | Ping
    | Pong
    | Leading
)


# --- durable records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcceptorPromise:
    """Acceptor adopted ``ballot`` in ``epoch``."""

    epoch: int
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptorAccept:
    """Acceptor accepted these pvalues in ``epoch`` (each replaces its slot's older one)."""

    epoch: int
    pvalues: tuple[PValue, ...]


@dataclass(frozen=True, slots=True)
class AcceptorCollected:
    """Acceptor forgot every pvalue of ``epoch`` below ``below`` and accepts none there."""

    epoch: int
    below: int


@dataclass(frozen=True, slots=True)
class AcceptorSnapshot:
    """All of an acceptor's state: per epoch (epoch, ballot_num, collected_below, the
    accepted pvalues). Supersedes every earlier record: it compacts the log."""

    epochs: tuple[tuple[int, Ballot, int, tuple[PValue, ...]], ...]

    supersedes_earlier: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class LeaderIdentity:
    """The identity this leader puts in its ballots (``Ballot.leader``).

    Persisted once, before the leader's first ballot. A leader that comes back
    without its records cannot know which rounds it used, so it takes a fresh identity
    (chosen by its interpreter) instead: ballots of different identities never collide,
    so it can never reuse a ballot (DESIGN 4).
    """

    identity: str


@dataclass(frozen=True, slots=True)
class LeaderRound:
    """Leader is about to use ballot round ``round``; it must never use it again."""

    round: int


@dataclass(frozen=True, slots=True)
class LeaderRetired:
    """Leader dropped every epoch up to ``epoch``; it must never join them again."""

    epoch: int


@dataclass(frozen=True, slots=True)
class LeaderState:
    """All of a leader's durable state in one record (identity, highest round used,
    highest epoch retired). Supersedes every earlier record: it compacts the log."""

    identity: str
    max_round: int
    retired_upto: int

    supersedes_earlier: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ReplicaDecided:
    """Replica applied these decided (slot, batch) entries, consecutive slots in order.

    Persisted in the step that applies them, so before any reply or message that
    depends on them leaves: an acknowledged command is on the replica's disk.
    """

    entries: Entries


@dataclass(frozen=True, slots=True)
class ReplicaRecovering:
    """This replica holds no state of its own (its disk was lost, or it just joined): it
    must recover by state transfer before it serves, even if it restarts first. The
    checkpoint written when it gets the state supersedes this record."""


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """A checkpoint of a replica: everything it needs to continue from ``slot_out``.

    It supersedes every earlier record of the replica (``supersedes_earlier``): an
    interpreter may delete them once this record is durable, which bounds the disk.
    """

    slot_out: int
    configs: tuple[Config, ...]
    app_state: bytes
    client_table: tuple[tuple[str, int, int, Response | None], ...]
    digest: str

    supersedes_earlier: ClassVar[bool] = True


DurableRecord = (
    AcceptorPromise
    | AcceptorAccept
    | AcceptorCollected
    | AcceptorSnapshot
    | LeaderIdentity
    | LeaderRound
    | LeaderRetired
    | LeaderState
    | ReplicaDecided
    | ReplicaRecovering
    | ReplicaSnapshot
)


def supersedes_earlier(record: DurableRecord) -> bool:
    """True if ``record`` makes every earlier record of its process obsolete."""
    return getattr(record, "supersedes_earlier", False)


# --- effects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    dst: str
    msg: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire :class:`Timer` ``name`` after ``delay`` ms, replacing any pending one of that name.

    ``jitter``: the interpreter stretches or shrinks the delay by a random factor in
    [1 - jitter, 1 + jitter], so that retransmissions of many processes do not line up.
    (The randomness is the interpreter's, seeded in the simulator: the core stays pure.)
    """

    name: str
    delay: int
    jitter: float = 0.0


@dataclass(frozen=True, slots=True)
class Persist:
    """Make ``record`` durable before executing any later effect of the same step."""

    record: DurableRecord


@dataclass(frozen=True, slots=True)
class ClientReply:
    """Deliver ``response`` to the client that sent the command (if it is waiting here)."""

    response: Response


Effect = Send | SetTimer | Persist | ClientReply


def persist_first(effects: list[Effect]) -> list[Effect]:
    """Move the Persist effects of one step before all its other effects.

    Making a record durable earlier than needed is always safe; making it durable
    after a message that depends on it is not (see the module docstring).
    """
    if not any(isinstance(e, Persist) for e in effects):
        return effects
    return [e for e in effects if isinstance(e, Persist)] + [
        e for e in effects if not isinstance(e, Persist)
    ]


fast_pickle(globals())
