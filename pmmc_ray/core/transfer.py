"""State transfer between replicas: chunks of a frozen snapshot, pulled by the receiver.

Theory of operation. A replica that needs the replicated state (it lost its disk, it just
joined, or it is so far behind that no peer keeps the decisions it lacks) pulls it from
one peer at a time:

- It sends ``StateRequest(offset=0)``. The peer freezes its current state for that
  requester (``slot_out``, the application snapshot as bytes, and a
  :class:`StateHeader` with the configurations, client table and digest) and answers
  with the first :class:`StateChunk`, which carries the header.
- Each chunk that extends what the receiver holds is answered with a request for the
  next offset, until it has ``total`` bytes; then it installs the state.
- A lost chunk or request is retransmitted by the receiver, with backoff; the peer serves
  any offset of the frozen snapshot again, so nothing is ever sent twice in full. A
  peer that restarted (and lost the frozen snapshot) starts a new transfer from offset 0.

Nothing here does I/O: both halves are plain objects that the replica drives, and the
messages they make are the replica's effects. Snapshots are never pickled: the
application's bytes travel in chunks, the header as typed records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .messages import StateChunk, StateHeader, StateRequest

__all__ = ["Incoming", "StateReceiver", "StateSender"]


@dataclass(slots=True)
class _Frozen:
    slot_out: int
    data: bytes
    header: StateHeader
    last_used: int
    done: bool = False  # its last chunk was served


class StateSender:
    """The serving side: one frozen snapshot per requester, forgotten when idle."""

    def __init__(self, chunk: int, keep_ms: int) -> None:
        self.chunk = chunk
        self.keep_ms = keep_ms
        self.frozen: dict[str, _Frozen] = {}

    def serving(self, requester: str, now: int) -> bool:
        """True while a transfer to ``requester`` is going on: not finished (its last
        chunk not yet served) and asked about recently. A finished one is not: the
        requester may be behind again, and must be offered newer state."""
        f = self.frozen.get(requester)
        return f is not None and not f.done and now - f.last_used < self.keep_ms

    def serve(
        self,
        me: str,
        m: StateRequest,
        now: int,
        freeze: Callable[[], tuple[int, bytes, StateHeader]],
    ) -> StateChunk:
        """The chunk that answers ``m``. ``freeze()`` gives the current state; it is called
        only when a new transfer starts (offset 0, or the frozen snapshot the requester
        asks about is gone: we restarted, or it expired)."""
        f = self.frozen.get(m.src)
        offset = m.offset
        if offset == 0 or f is None or f.slot_out != m.slot_out:
            slot_out, data, header = freeze()
            f = self.frozen[m.src] = _Frozen(slot_out, data, header, now)
            offset = 0
        f.last_used = now
        data = f.data[offset : offset + self.chunk]
        f.done = offset + len(data) >= len(f.data)
        header = f.header if offset == 0 else None
        return StateChunk(me, f.slot_out, offset, len(f.data), data, header)

    def expire(self, now: int) -> None:
        for r in [r for r, f in self.frozen.items() if now - f.last_used >= self.keep_ms]:
            del self.frozen[r]


@dataclass(slots=True)
class Incoming:
    """A transfer being received."""

    peer: str
    slot_out: int
    total: int
    header: StateHeader
    buf: bytearray = field(default_factory=bytearray)
    quiet_ticks: int = 0  # ticks since the last chunk arrived


class StateReceiver:
    """The pulling side: at most one transfer at a time."""

    def __init__(self) -> None:
        self.transfer: Incoming | None = None

    def on_chunk(self, me: str, m: StateChunk) -> StateRequest | Incoming | None:
        """Take ``m``: the next request to send, the completed transfer, or None (the
        chunk was a duplicate, stale, or from a transfer we are not doing)."""
        t = self.transfer
        if m.offset == 0:
            if m.header is None:
                return None
            if t is not None and t.buf and (t.peer, t.slot_out) == (m.src, m.slot_out):
                return None  # a duplicate start of the transfer we are doing
            if t is not None and t.peer != m.src and t.slot_out >= m.slot_out:
                return None  # already fetching a state as new from another peer
            t = self.transfer = Incoming(m.src, m.slot_out, m.total, m.header)
        elif t is None or (t.peer, t.slot_out) != (m.src, m.slot_out) or m.offset != len(t.buf):
            return None
        t.buf += m.data
        t.quiet_ticks = 0
        if len(t.buf) < t.total:
            return StateRequest(me, t.slot_out, len(t.buf))
        self.transfer = None
        return t

    def retry(self, me: str) -> StateRequest | None:
        """The request to send again for the transfer in progress (None if there is none)."""
        t = self.transfer
        return None if t is None else StateRequest(me, t.slot_out, len(t.buf))

    def abandon(self) -> None:
        self.transfer = None
