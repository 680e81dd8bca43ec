"""The data plane: protocol messages over persistent TCP streams between actors.

Why. A Ray actor call costs its sender 0.3-0.9 ms and a hop takes 1.1-1.4 ms here; a
frame on an open asyncio stream between the same two actors takes tens of
microseconds. Ray still places, names, restarts and controls every actor; only the
protocol's messages take the streams.

How. Every actor listens on its node's address (never on all interfaces), on a port
the kernel picks, and tells it to whoever asks through a Ray call (``data_address``).
The first message to a peer starts a :class:`_Link`: it looks the peer's address up,
connects, and runs the handshake of :mod:`pmmc_ray.runtime.wire` (both ends prove they
hold the deployment's secret). Until the link is up, and whenever it is down, messages
go through Ray calls as before, so nothing waits for a connection. A link whose peer
goes away (EOF, reset, its process restarted on another port) is dropped and reopened
with exponential backoff and jitter.

Bounded. A link's send buffer holds at most ``max_buffer`` bytes. A message that would
exceed it is dropped, like a lost packet: the protocol retransmits what matters. A
buffer that stays full means a peer that does not read (a hung process, a dead node
whose connection was not reset): the link is closed and opened again.

The secret (32 random bytes) is created by the first actor of the deployment that needs
it and kept in Ray's internal key-value store (GCS), which only processes of the Ray
cluster reach (behind Ray's own authentication when that is on); it is never written to
disk by pmmc-ray, and is deleted with the deployment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import wire

log = logging.getLogger(__name__)

__all__ = ["DataPlane", "secret_key"]

_HANDSHAKE_TIMEOUT_S = 3.0
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_IDLE_S = 10.0  # a link nobody sent to for this long stops trying to connect
_MAX_HANDSHAKES = 64  # connections being authenticated at once; more are closed


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """Notice a peer whose node died without a reset within about 15 s, not the ~15 min
    TCP takes on its own: probe an idle connection, and give up on unacknowledged data."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    for level, opt, value in (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 5),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 2),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), 15000),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    ):
        if opt is not None:
            try:
                sock.setsockopt(level, opt, value)
            except OSError:
                pass


def secret_key(namespace: str, deployment_id: str | None) -> str:
    return f"wire/{namespace}/{deployment_id}"


class _Link:
    """An outgoing stream to one peer, reopened with backoff while the actor lives."""

    def __init__(self, plane: DataPlane, dst: str) -> None:
        self.plane, self.dst = plane, dst
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.failures = 0
        self.connects = 0
        self.last_error = ""
        self.full_since: float | None = None
        self.wanted_at = time.monotonic()
        self.key = b""  # this connection's frame MAC key
        self.seq = 0

    @property
    def ready(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.plane.loop.create_task(self._run())

    async def _run(self) -> None:
        """Connect (with backoff while it fails), then hold the stream until it ends. The
        task ends with the stream, or when nothing was sent to the peer for a while:
        the next send starts it again."""
        while not self.plane.closed:
            if time.monotonic() - self.wanted_at > _IDLE_S:
                return
            try:
                reader, writer = await self._open()
            except Exception as e:  # lookup, connect or handshake failed
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"[:200]
                await asyncio.sleep(self._backoff())
                continue
            self.connects += 1
            _keepalive(writer)
            self.writer = writer
            self.full_since = None
            opened = time.monotonic()
            try:
                await reader.read(1)  # the acceptor never sends after the handshake: EOF
            except Exception:
                pass
            finally:
                self.close()
            if time.monotonic() - opened < 1.0:
                self.failures += 1  # a peer that drops us at once: back off
                self.last_error = "the peer closed the stream"
                await asyncio.sleep(self._backoff())
            else:
                self.failures = 0
            return

    def _backoff(self) -> float:
        delay = min(_BACKOFF_MAX_S, _BACKOFF_MIN_S * 2 ** min(self.failures, 6))
        return delay * random.uniform(0.5, 1.0)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = await self.plane.resolve(self.dst)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), _HANDSHAKE_TIMEOUT_S
        )
        try:
            await asyncio.wait_for(self._handshake(reader, writer), _HANDSHAKE_TIMEOUT_S)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        p = self.plane
        h = {
            "deployment": p.deployment_id,
            "src": p.name,
            "dst": self.dst,
            "nonce": wire.new_nonce(),
        }
        writer.write(wire.hello(h["deployment"], h["src"], h["dst"], h["nonce"]))
        n = wire.frame_length(await reader.readexactly(4))
        if n > wire.MAX_HELLO:
            raise wire.WireError("handshake answer too long")
        server_nonce = (await reader.readexactly(n)).decode()
        writer.write(wire.proof(p.secret, "opener", h, server_nonce))
        theirs = await reader.readexactly(32)
        if not wire.same(theirs, wire.proof(p.secret, "acceptor", h, server_nonce)):
            raise wire.WireError(f"{self.dst} did not prove it holds the deployment's secret")
        self.key, self.seq = wire.session_key(p.secret, h, server_nonce), 0

    def send(self, payload: bytes) -> bool:
        """Queue one frame; False if it was dropped (the buffer is full)."""
        w = self.writer
        assert w is not None
        buffered = w.transport.get_write_buffer_size()
        if buffered and buffered + len(payload) > self.plane.max_buffer:
            now = time.monotonic()
            if self.full_since is None:
                self.full_since = now
            elif now - self.full_since > self.plane.stuck_after_s:
                log.warning(
                    "%s: the stream to %s stays full; reconnecting", self.plane.name, self.dst
                )
                self.close()
            return False
        self.full_since = None
        self.seq += 1
        mac = wire.frame_mac(self.key, self.seq, payload)
        w.writelines((wire.frame_header(len(payload)), payload, mac))
        return True

    def close(self) -> None:
        w, self.writer = self.writer, None
        if w is not None:
            w.transport.abort()


class DataPlane:
    """One actor's end of the data plane: its listener and its outgoing links."""

    def __init__(
        self,
        name: str,
        deployment_id: str,
        secret: bytes,
        deliver: Callable[[str, list], None],
        resolve: Callable[[str], Awaitable[tuple[str, int]]],
        *,
        host: str,
        max_buffer: int = 8 << 20,
        stuck_after_s: float = 5.0,
    ) -> None:
        self.name = name
        self.deployment_id = deployment_id
        self.secret = secret
        self.deliver = deliver
        self.resolve = resolve
        self.host = host
        self.max_buffer = max_buffer
        self.stuck_after_s = stuck_after_s
        self.loop = asyncio.get_running_loop()
        self.links: dict[str, _Link] = {}
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None
        self.started = asyncio.Event()
        self.closed = False
        self.frames_sent = 0
        self.frames_received = 0
        self.dropped_full = 0
        self.refused_connections = 0
        self.bad_frames = 0
        self._accepted: dict[asyncio.StreamWriter, str | None] = {}  # -> its peer, once known
        self.cuts = 0
        self._handshaking = 0
        self.failed: str | None = None

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._serve, self.host, 0)
            self.port = self.server.sockets[0].getsockname()[1]
        except Exception as e:  # peers then keep using Ray calls to reach this actor
            self.failed = f"{type(e).__name__}: {e}"
            log.error("%s: the data plane could not listen on %s: %s", self.name, self.host, e)
        finally:
            self.started.set()

    async def address(self) -> tuple[str, int] | None:
        """Where this plane listens; None if it could not listen."""
        await self.started.wait()
        if self.port is None:
            return None
        return self.host, self.port

    def send(self, dst: str, msgs: list, encoded: dict | None = None) -> int | None:
        """Send ``msgs`` to ``dst`` over its stream; the payload's size in bytes. None
        means: not sent, use a Ray call (no link yet, or the messages cannot be framed).
        A frame dropped because the buffer is full counts as sent: it is lost like a
        packet."""
        link = self.links.get(dst)
        if link is None:
            link = self.links[dst] = _Link(self, dst)
        if not link.ready:
            link.wanted_at = time.monotonic()
            link.start()
            return None
        # ``encoded``: payloads already made in this step, by the ids of their messages
        # (alive for the whole step), so the same messages to several peers are
        # pickled once.
        key = tuple(map(id, msgs)) if encoded is not None else None
        payload = encoded.get(key) if encoded is not None else None
        if payload is None:
            try:
                payload = wire.encode(msgs)
            except Exception:  # not wire-safe, too deep to pickle, ...: Ray pickles it
                return None
            if encoded is not None:
                encoded[key] = payload
        if len(payload) > min(wire.MAX_FRAME, self.max_buffer // 2):
            return None  # too big for the stream's buffer: a Ray call carries it
        if link.send(payload):
            self.frames_sent += 1
        else:
            self.dropped_full += 1
        return len(payload)

    def warm(self, dsts: Iterable[str]) -> None:
        """Open the streams to ``dsts`` now, before anything is sent: a path first used
        in a failover (a passive leader's scout and commander) then finds them up,
        instead of paying a lookup and a handshake while the service waits."""
        for dst in dsts:
            if dst == self.name:
                continue
            link = self.links.get(dst)
            if link is None:
                link = self.links[dst] = _Link(self, dst)
            link.wanted_at = time.monotonic()
            link.start()

    def forget(self, dst: str) -> None:
        """Drop the link to ``dst`` (its actor was replaced): the next send reopens it."""
        link = self.links.pop(dst, None)
        if link is not None:
            link.close()
            if link.task is not None:
                link.task.cancel()

    def cut(self, peers: Iterable[str] | None = None) -> list[str]:
        """Reset the streams to and from ``peers`` (all if None), as a network fault
        would: frames in their buffers are lost, and each link reconnects with backoff
        (meanwhile messages go by Ray call). The peers whose streams were cut."""
        wanted = None if peers is None else set(peers)
        cut: set[str] = set()
        for dst, link in self.links.items():
            if (wanted is None or dst in wanted) and link.ready:
                link.close()
                cut.add(dst)
        for w, src in list(self._accepted.items()):
            if src is not None and (wanted is None or src in wanted):
                w.transport.abort()
                cut.add(src)
        self.cuts += len(cut)
        return sorted(cut)

    def stats(self) -> dict[str, Any]:
        return {
            "address": f"{self.host}:{self.port}" if self.failed is None else None,
            "failed": self.failed,
            "links_up": sorted(d for d, lk in self.links.items() if lk.ready),
            "links_down": {d: lk.last_error for d, lk in self.links.items() if not lk.ready},
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "dropped_full_buffer": self.dropped_full,
            "refused_connections": self.refused_connections,
            "bad_frames": self.bad_frames,
            "cuts": self.cuts,
        }

    def close(self) -> None:
        self.closed = True
        for dst in list(self.links):
            self.forget(dst)
        if self.server is not None:
            self.server.close()
        for w in list(self._accepted):
            w.transport.abort()

    # --- the accepting side -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted[writer] = None
        try:
            await self._serve_one(reader, writer)
        finally:
            self._accepted.pop(writer, None)
            writer.transport.abort()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._handshaking >= _MAX_HANDSHAKES:
            self.refused_connections += 1  # a flood of unauthenticated connections
            return
        self._handshaking += 1
        try:
            src, key = await asyncio.wait_for(self._accept(reader, writer), _HANDSHAKE_TIMEOUT_S)
        except Exception as e:
            self.refused_connections += 1
            if self.refused_connections <= 10 or self.refused_connections % 1000 == 0:
                log.warning(
                    "%s: refused a data-plane connection (%d so far): %s",
                    self.name,
                    self.refused_connections,
                    e,
                )
            return
        finally:
            self._handshaking -= 1
        self._accepted[writer] = src
        _keepalive(writer)
        seq = 0
        try:
            while True:
                n = wire.frame_length(await reader.readexactly(4))
                payload = await reader.readexactly(n)
                mac = await reader.readexactly(wire.MAC_BYTES)
                seq += 1
                if not wire.same(mac, wire.frame_mac(key, seq, payload)):
                    raise wire.WireError(f"frame {seq} from {src} fails its MAC")
                msgs = wire.decode(payload)
                self.frames_received += 1
                self.deliver(src, msgs)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the opener went away; it reconnects if it lives
        except wire.WireError as e:
            self.bad_frames += 1
            log.warning("%s: closing the stream from %s: %s", self.name, src, e)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, bytes]:
        n = wire.frame_length(await reader.readexactly(4))
        if n > wire.MAX_HELLO:
            raise wire.WireError("hello too long")
        h = wire.parse_hello(await reader.readexactly(n))
        if h["deployment"] != self.deployment_id or h["dst"] != self.name:
            raise wire.WireError(f"hello for {h['dst']} of deployment {h['deployment']}")
        server_nonce = wire.new_nonce()
        writer.write(wire.frame_header(len(server_nonce)) + server_nonce.encode())
        theirs = await reader.readexactly(32)
        if not wire.same(theirs, wire.proof(self.secret, "opener", h, server_nonce)):
            raise wire.WireError(f"{h['src']} did not prove it holds the deployment's secret")
        writer.write(wire.proof(self.secret, "acceptor", h, server_nonce))
        return h["src"], wire.session_key(self.secret, h, server_nonce)


def new_secret() -> bytes:
    return os.urandom(32)
