"""Values of the protocol: ballots, commands, batches, configurations, pvalues.

Names follow "Paxos Made Moderately Complex" (van Renesse and Altinbuken, 2015),
section 2. Everything here is an immutable record; roles never mutate a value they
received or sent.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any

from . import codec


@dataclass(frozen=True, slots=True, order=True)
class Ballot:
    """A ballot number: (round, leader), ordered lexicographically (paper 2.2).

    ``leader`` is the leader's ballot identity. Two leaders never share one, so two
    ballots are equal only when the same leader made them in the same round.
    """

    round: int
    leader: str

    def __str__(self) -> str:
        return f"{self.round}.{self.leader}" if self.round >= 0 else "⊥"


BOTTOM = Ballot(-1, "")
"""The bottom ballot, lower than every ballot a leader can make."""


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """The operation of a reconfiguration command (paper 2.1, 3.x).

    Decided in slot s, it replaces replicas, leaders and acceptors from slot
    s + WINDOW on.
    """

    replicas: tuple[str, ...]
    leaders: tuple[str, ...]
    acceptors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OpenSession:
    """The operation that opens a client's session (its entry in the replicas' client
    table). A client sends it once, as its command 0, before any other command, and
    its result is the session's identity: the slot that decided it (if the client
    already has a live session, its identity). The client puts that identity in every
    later command (``Command.session``), and a command is performed only if it names
    the client's live session: a command of no session, or of an evicted one, is
    rejected with :data:`SESSION_EXPIRED`, deterministically. A late copy of an
    OpenSession decided after an eviction makes a new session nobody names, so no old
    command can ever run again (the log assigns identities, as in Raft's client
    sessions)."""


SESSION_EXPIRED = "session expired"
"""The error of a command whose client has no session: it never opened one, or the
replicas' client table evicted it (least recently used first, beyond ``max_sessions``).
The command was not performed by that decision; if it had been sent before, an earlier
decision may have performed it, so its outcome is unknown to the client."""


@dataclass(frozen=True, slots=True)
class Command:
    """A client command <client_id, command_id, op> (paper 2.1).

    ``op`` is either an application operation (any value the state machine accepts;
    it must be comparable with ``==``), a :class:`Reconfigure` or an :class:`OpenSession`.
    """

    client_id: str
    command_id: int
    op: Any
    session: int = 0
    """The session this command belongs to: the identity its client's OpenSession got
    (0 for the OpenSession itself)."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.client_id, self.command_id)

    @property
    def is_reconfig(self) -> bool:
        return isinstance(self.op, Reconfigure)


class Batch:
    """What a slot decides: a batch of client commands.

    The paper decides one command per slot; batching amortises one Paxos instance over
    many commands. A reconfiguration command always travels in a batch of its own, so
    "the configuration command decided in slot s" stays well defined.

    Immutable, compared and hashed by its commands. Pickled, it is one opaque blob (the
    commands pickled once, by :mod:`.codec`), and a batch unpickled from a blob decodes
    its commands only when something asks for them: leaders, commanders and acceptors
    relay and store a batch without ever decoding it; only replicas do. Pickling it
    again reuses the blob.
    """

    __slots__ = ("_commands", "_blob")

    def __init__(self, commands: tuple[Command, ...]) -> None:
        object.__setattr__(self, "_commands", tuple(commands))
        object.__setattr__(self, "_blob", None)

    @property
    def commands(self) -> tuple[Command, ...]:
        cmds = self._commands
        if cmds is None:
            decoded = codec.loads(self._blob)
            if type(decoded) is not tuple or any(type(c) is not Command for c in decoded):
                raise codec.CodecError("a batch blob must hold a tuple of commands")
            object.__setattr__(self, "_commands", decoded)
            cmds = decoded
        return cmds

    @property
    def reconfig(self) -> Reconfigure | None:
        cmds = self.commands
        if len(cmds) == 1 and cmds[0].is_reconfig:
            return cmds[0].op
        return None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Batch is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Batch is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        if self is other:
            return True
        if self._blob is not None and self._blob == other._blob:
            return True
        return self.commands == other.commands

    def __hash__(self) -> int:
        return hash(self.commands)

    def __repr__(self) -> str:
        return f"Batch(commands={self.commands!r})"

    def __reduce__(self) -> Any:
        blob = self._blob
        if blob is None:
            try:
                blob = codec.dumps(self._commands)
            except codec.NotWireSafe:
                # An application op of its own class: pickle it the plain way (it then
                # travels by Ray calls; the data plane refuses such messages).
                return (Batch, (self._commands,))
            object.__setattr__(self, "_blob", blob)
        return (_batch_from_blob, (blob,))

    def __setstate__(self, state: Any) -> None:
        # Records written while Batch was a slots dataclass: [commands].
        (commands,) = state if isinstance(state, list | tuple) else (state,)
        object.__setattr__(self, "_commands", tuple(commands))
        object.__setattr__(self, "_blob", None)


def _batch_from_blob(blob: bytes) -> Batch:
    """Unpickling a batch: keep the blob, decode the commands when they are asked for."""
    if type(blob) is not bytes:
        raise TypeError("a batch blob is bytes")
    b = Batch.__new__(Batch)
    object.__setattr__(b, "_commands", None)
    object.__setattr__(b, "_blob", blob)
    return b


@dataclass(frozen=True, slots=True)
class Config:
    """A configuration: who plays which role, from slot ``start_slot`` on.

    ``epoch`` numbers configurations 0, 1, 2, ... Acceptor and leader state is kept per
    epoch: each configuration runs its own instance of the synod protocol for its own
    slots, as if its acceptors were fresh processes (paper 2.1: each slot is decided
    by the configuration in effect for it).
    """

    epoch: int
    start_slot: int
    replicas: tuple[str, ...]
    leaders: tuple[str, ...]
    acceptors: tuple[str, ...]

    @property
    def quorum(self) -> int:
        """Size of a majority of the acceptors."""
        return len(self.acceptors) // 2 + 1


@dataclass(frozen=True, slots=True)
class PValue:
    """A pvalue <ballot, slot, command> (paper 2.2)."""

    ballot: Ballot
    slot: int
    value: Batch


def pmax(pvalues: list[PValue] | tuple[PValue, ...]) -> dict[int, PValue]:
    """For each slot, the pvalue with the highest ballot (paper 2.4, pmax)."""
    best: dict[int, PValue] = {}
    for pv in pvalues:
        cur = best.get(pv.slot)
        if cur is None or pv.ballot > cur.ballot:
            best[pv.slot] = pv
    return best


class ProtocolViolation(AssertionError):
    """An invariant of the protocol does not hold. Never caught, never ignored."""


def fast_pickle(namespace: dict) -> None:
    """Give every dataclass defined in ``namespace`` (a module's globals) a
    ``__reduce__`` that rebuilds it from its fields in order.

    The default pickling of a slots dataclass calls ``dataclasses.fields()`` for every
    object, both ways; profiles of the runtime showed it as the largest cost of
    actors that only relay batches (commanders, acceptors). Rebuilding through the
    constructor is also what the data plane's restricted decoder allows: it can call
    nothing but the protocol's own classes.
    """
    module = namespace["__name__"]
    for cls in list(namespace.values()):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            continue
        if cls.__module__ != module:
            continue  # imported from elsewhere: its own module sets it up
        names = tuple(f.name for f in dataclasses.fields(cls))
        cls.__reduce__ = _reducer(cls, names)


def _reducer(cls: type, names: tuple[str, ...]) -> Any:
    if not names:
        return lambda self: (cls, ())
    if len(names) == 1:
        name = names[0]
        return lambda self: (cls, (getattr(self, name),))
    get = operator.attrgetter(*names)
    return lambda self: (cls, get(self))


fast_pickle(globals())
