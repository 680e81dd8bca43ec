"""Pickle that builds protocol objects and nothing else (pure: no I/O).

:func:`dumps` pickles an object made of the protocol's own classes (``types`` and
``messages``) and built-in scalars and containers, and raises :class:`NotWireSafe` for
anything else; :func:`loads` is a restricted unpickler that can construct only those
classes and refuses every other global (``os.system``, say) before calling anything.
The data plane decodes frames with it (``pmmc_ray.runtime.wire``), and a
:class:`~pmmc_ray.core.types.Batch` that arrived as bytes decodes its commands with it.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

__all__ = ["CodecError", "NotWireSafe", "dumps", "loads"]


class CodecError(ValueError):
    """Bytes that are not a pickle of protocol objects."""


class NotWireSafe(TypeError):
    """The object holds something :func:`loads` would refuse."""


_SCALARS = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict, set, frozenset})
_tables: tuple[frozenset[type], dict[tuple[str, str], Any]] | None = None


def _allowed() -> tuple[frozenset[type], dict[tuple[str, str], Any]]:
    """The protocol's classes, and every global a pickle of them may name (built on
    first use: ``types`` imports this module)."""
    global _tables
    if _tables is None:
        from . import messages, types

        found: set[type] = {types.Batch}
        for mod in (types, messages):
            for v in vars(mod).values():
                if isinstance(v, type) and dataclasses.is_dataclass(v):
                    found.add(v)
        names: dict[tuple[str, str], Any] = {(t.__module__, t.__qualname__): t for t in found}
        names[(types.__name__, "_batch_from_blob")] = types._batch_from_blob
        _tables = frozenset(found), names
    return _tables


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t in _SCALARS:
            return NotImplemented
        allowed, names = _allowed()
        if t in allowed:
            return NotImplemented  # a protocol object
        # A global the unpickler may name: a protocol class, or the batch-blob function.
        name = (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))
        if names.get(name) is obj:
            return NotImplemented
        raise NotWireSafe(f"{t.__module__}.{t.__qualname__} is not a protocol type")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _allowed()[1].get((module, name))
        if found is None:
            raise CodecError(f"a pickle names {module}.{name}, which is not a protocol type")
        return found


class _Sink(list):
    """Where the pickler writes (its frames): in memory, no I/O module needed."""

    def write(self, b: bytes) -> None:
        self.append(bytes(b))


class _Source:
    """What the unpickler reads from: ``data`` in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        out = self.data[self.pos : end].tobytes()
        self.pos = end
        return out

    def readinto(self, b: Any) -> int:
        chunk = self.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> bytes:
        rest = self.data[self.pos :].tobytes()
        i = rest.find(b"\n")
        line = rest if i < 0 else rest[: i + 1]
        self.pos += len(line)
        return line


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` (raises :class:`NotWireSafe`)."""
    sink = _Sink()
    _Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return b"".join(sink)


def loads(data: bytes) -> Any:
    """Unpickle protocol objects only (raises :class:`CodecError` on anything else)."""
    try:
        return _Unpickler(_Source(data)).load()
    except CodecError:
        raise
    except Exception as e:  # truncated or malformed: never half-trusted
        raise CodecError(f"undecodable: {type(e).__name__}: {e}") from None
