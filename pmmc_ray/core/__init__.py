"""The protocol of "Paxos Made Moderately Complex", sans I/O.

Theory of operation: every role (Replica, Leader, Acceptor, Scout, Commander) is a
plain class. An interpreter (the simulator in ``pmmc_ray.sim`` or the Ray runtime in
``pmmc_ray.runtime``) constructs it, calls ``start(now)`` once, then calls
``handle(input, now)`` for every message delivered to it and every timer that fires.
Each call returns a list of effects (:class:`Send`, :class:`SetTimer`,
:class:`Persist`, :class:`ClientReply`) that the interpreter executes in order,
persists first. Roles never read a clock, draw a random number, or touch a socket or
file: time comes in as ``now``, and everything else goes out as effects. That is
what lets the simulator replay a run byte for byte from its seed.

Roles tolerate lost, duplicated and reordered messages (they retransmit, and every
message names the epoch and ballot it belongs to). Acceptors and leaders keep their
durable state as :class:`Persist` records and are rebuilt from them with
``recover``; replicas rebuild by state transfer from a peer.
"""

from .acceptor import Acceptor
from .commander import Commander
from .leader import Leader
from .messages import (
    ClientReply,
    Effect,
    Message,
    Persist,
    Request,
    Requests,
    Response,
    Send,
    SetTimer,
    Timer,
)
from .replica import Replica
from .scout import Scout
from .timing import Timing
from .types import (
    BOTTOM,
    SESSION_EXPIRED,
    Ballot,
    Batch,
    Command,
    Config,
    OpenSession,
    ProtocolViolation,
    PValue,
    Reconfigure,
)

__all__ = [
    "BOTTOM",
    "Acceptor",
    "Ballot",
    "Batch",
    "ClientReply",
    "Command",
    "Commander",
    "Config",
    "Effect",
    "Leader",
    "Message",
    "OpenSession",
    "PValue",
    "Persist",
    "ProtocolViolation",
    "Reconfigure",
    "Replica",
    "Request",
    "Requests",
    "Response",
    "SESSION_EXPIRED",
    "Scout",
    "Send",
    "SetTimer",
    "Timer",
    "Timing",
]
