"""The data plane's wire format: frames, the connection handshake, and a codec that
decodes protocol messages and nothing else.

A connection carries protocol messages one way, from the actor that opened it (``src``)
to the actor that accepted it (``dst``). It starts with a handshake that proves both
ends hold the deployment's secret (HMAC-SHA256 over both nonces, the deployment id and
the two names, one proof each way) and derives a key for this connection alone. Then
come frames: a 4-byte big-endian length, that many bytes of payload (at most
:data:`MAX_FRAME`; a longer length closes the connection), and a 16-byte MAC of the
frame's sequence number and payload under the connection's key. A frame whose MAC does
not check (forged, replayed, reordered or injected by a relay that passed the
handshake through) closes the connection before it is decoded. So a process without
the secret can neither send a message nor pose as a peer. Frames are not encrypted:
like Ray's own traffic, they are readable on the network path.

The payload is a list of messages, pickled. Pickle is how Ray itself moves these
objects between actors; here it is fenced twice:

- nothing is decoded before the handshake proved the sender holds the secret and the
  frame's MAC checked;
- decoding uses a restricted unpickler that can build only the protocol's own
  dataclasses (``pmmc_ray.core.types`` and ``pmmc_ray.core.messages``) and the
  built-in containers and scalars, and refuses any other global: a frame naming
  ``os.system`` raises :class:`WireError` before anything is called.

The encoder enforces the same list: a message holding an object of any other type (an
application op of a custom class, say) raises :class:`NotWireSafe`, and the sender
sends that message through a Ray call instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import typing

from ..core import codec
from ..core import messages as _messages

__all__ = [
    "MAC_BYTES",
    "MAX_FRAME",
    "NotWireSafe",
    "WireError",
    "decode",
    "encode",
    "frame_header",
    "frame_mac",
    "proof",
    "session_key",
]

MAX_FRAME = 64 << 20
"""Largest frame payload in bytes (a state chunk is 1 MiB by default)."""

MAX_HELLO = 4096
"""Largest handshake header in bytes."""

VERSION = 2
"""The frames' protocol version, checked in the handshake: a peer that speaks another
(an actor of an older release still running) is refused at connect time, not when a
message it cannot build arrives. 2: ``Leading``, ``Decisions.ballot``, ``Pong.ballot``."""
_HEADER = struct.Struct(">I")


class WireError(ValueError):
    """A frame or handshake that does not follow this format: the connection is closed."""


NotWireSafe = codec.NotWireSafe
"""The message holds an object the decoder would refuse: send it another way."""

# What a frame may hold at its top level: messages, not effects or stored records.
_MESSAGES = frozenset(typing.get_args(_messages.Message))


def encode(msgs: list) -> bytes:
    """The frame payload for ``msgs`` (raises :class:`NotWireSafe`)."""
    for m in msgs:
        if type(m) not in _MESSAGES:
            raise NotWireSafe(f"{type(m).__name__} is not a protocol message")
    return codec.dumps(msgs)


def decode(payload: bytes) -> list:
    """The messages of a frame payload (raises :class:`WireError` on anything else)."""
    try:
        msgs = codec.loads(payload)
    except codec.CodecError as e:
        raise WireError(str(e)) from None
    if not isinstance(msgs, list) or any(type(m) not in _MESSAGES for m in msgs):
        raise WireError("a frame must hold a list of protocol messages")
    return msgs


def frame_header(n: int) -> bytes:
    return _HEADER.pack(n)


def frame_length(header: bytes) -> int:
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise WireError(f"frame of {n} bytes; the limit is {MAX_FRAME}")
    return n


# --- handshake -------------------------------------------------------------------------------


def new_nonce() -> str:
    return os.urandom(16).hex()


def hello(deployment_id: str, src: str, dst: str, nonce: str) -> bytes:
    """The opener's first message: who it is, whom it wants, and its nonce."""
    body = json.dumps(
        {"v": VERSION, "deployment": deployment_id, "src": src, "dst": dst, "nonce": nonce}
    ).encode()
    return frame_header(len(body)) + body


def parse_hello(body: bytes) -> dict[str, str]:
    try:
        h = json.loads(body)
        if h.get("v") != VERSION:
            raise WireError(f"wire version {h.get('v')!r}; this side speaks {VERSION}")
        fields = {k: h[k] for k in ("deployment", "src", "dst", "nonce")}
    except WireError:
        raise
    except Exception as e:
        raise WireError(f"bad hello: {type(e).__name__}") from None
    if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in fields.values()):
        raise WireError("bad hello: every field must be a short string")
    return fields


def _transcript(who: str, h: dict[str, str], server_nonce: str) -> bytes:
    # A JSON list: unambiguous, whatever the fields hold.
    fields = ["pmmc-wire", VERSION, who, h["deployment"], h["src"], h["dst"], h["nonce"]]
    return json.dumps([*fields, server_nonce]).encode()


def proof(secret: bytes, who: str, h: dict[str, str], server_nonce: str) -> bytes:
    """HMAC-SHA256 of everything both sides said, by ``who`` ("opener" or "acceptor"):
    the two proofs differ, so one cannot be replayed as the other."""
    return hmac.new(secret, _transcript(who, h, server_nonce), hashlib.sha256).digest()


def session_key(secret: bytes, h: dict[str, str], server_nonce: str) -> bytes:
    """The key of this connection's frame MACs (fresh per connection: both nonces)."""
    return hmac.new(secret, _transcript("session", h, server_nonce), hashlib.sha256).digest()


MAC_BYTES = 16
_SEQ = struct.Struct(">Q")


def frame_mac(key: bytes, seq: int, payload: bytes) -> bytes:
    """MAC of frame number ``seq`` of a connection (keyed BLAKE2b, 16 bytes)."""
    h = hashlib.blake2b(key=key, digest_size=MAC_BYTES)
    h.update(_SEQ.pack(seq))
    h.update(payload)
    return h.digest()


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
