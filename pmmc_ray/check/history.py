"""Operation histories: the `Operation` record, parsers and a JSON-lines writer.

Three input formats are understood:

* Jepsen logs (``parse_jepsen``): a single compare-and-set register, as in the
  etcd logs shipped with the Porcupine test data.
* Porcupine key/value logs (``parse_porcupine_kv``): EDN-like maps with get, put
  and append on string registers.
* The project's own JSON-lines format (``parse_jsonl`` / ``write_jsonl`` /
  ``dump_jsonl_lines``): one object per operation, e.g.
  ``{"client": "client-0", "call": 12.5, "return": 15.0, "op": ["put", "k", "v"],
  "result": null}``; ``"return": null`` (or absent) means the outcome is unknown.

For the two log formats the line number is used as the time of an event.  An
operation whose outcome is unknown (timed out, crashed, still open at the end)
gets ``ret=None``: it may or may not have taken effect, at any time after ``call``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HistoryFormatError",
    "Operation",
    "dump_jsonl_lines",
    "parse_jepsen",
    "parse_jsonl",
    "parse_porcupine_kv",
    "write_jsonl",
]

PathLike = str | os.PathLike


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation of a concurrent history.

    ``ret is None`` means the outcome is unknown (timeout, crash, or still open
    at the end of the history); ``result`` is then ignored.
    """

    client: str  # who issued it (process id)
    call: float  # invoke time
    ret: float | None  # return time; None = outcome unknown
    op: tuple  # the input, e.g. ("put", "k", "v")
    result: Any = None  # the output; ignored when ret is None

    @property
    def known(self) -> bool:
        """True when the operation returned, i.e. its outcome is known."""
        return self.ret is not None


class HistoryFormatError(ValueError):
    """A history file could not be parsed; the message names the file and line."""

    def __init__(self, path: PathLike | None, line: int | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = self.path or "<history>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- #
# Shared bookkeeping for the two log formats (invoke / complete by process).
# --------------------------------------------------------------------------- #


@dataclass(slots=True)
class _Pending:
    client: str
    call: float
    op: tuple
    f: str


class _Builder:
    """Pairs invocations with completions per process; open ops end up unknown."""

    def __init__(self, path: PathLike) -> None:
        self.path = path
        self.pending: dict[str, _Pending] = {}
        self.done: list[Operation] = []

    def invoke(self, client: str, time: float, op: tuple, f: str) -> None:
        previous = self.pending.pop(client, None)
        if previous is not None:
            # A process re-invoked without completing: conservatively unknown.
            self.finish_unknown(previous)
        self.pending[client] = _Pending(client, time, op, f)

    def complete(self, client: str, lineno: int, f: str) -> _Pending:
        pending = self.pending.pop(client, None)
        if pending is None:
            raise HistoryFormatError(self.path, lineno, f"completion without invocation: {client}")
        if pending.f != f:
            raise HistoryFormatError(
                self.path, lineno, f"completion :{f} does not match invocation :{pending.f}"
            )
        return pending

    def finish(self, pending: _Pending, time: float, result: Any) -> None:
        self.done.append(Operation(pending.client, pending.call, time, pending.op, result))

    def finish_unknown(self, pending: _Pending) -> None:
        self.done.append(Operation(pending.client, pending.call, None, pending.op, None))

    def operations(self) -> list[Operation]:
        """All operations, open ones as unknown, ordered by invocation time."""
        for pending in self.pending.values():
            self.finish_unknown(pending)
        self.pending.clear()
        return sorted(self.done, key=lambda o: o.call)


def _read_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            yield lineno, line.rstrip("\r\n")


# --------------------------------------------------------------------------- #
# Jepsen compare-and-set register logs.
# --------------------------------------------------------------------------- #

_JEPSEN_LINE = re.compile(
    r"^INFO\s+jepsen\.util\s+-\s+(?P<proc>\S+)\s+:(?P<type>invoke|ok|fail|info)"
    r"\s+:(?P<f>read|write|cas)(?:\s+(?P<value>.*?))?\s*$"
)
_INT = re.compile(r"^-?\d+$")


def _jepsen_value(text: str | None) -> Any:
    """Parse a Jepsen value: nil, an integer, a keyword, a string or ``[a b]``."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return tuple(_jepsen_value(part) for part in text[1:-1].split())
    if text in ("", "nil"):
        return None
    if _INT.match(text):
        return int(text)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def _jepsen_op(f: str, value: Any, path: PathLike, lineno: int) -> tuple:
    if f == "read":
        return ("read",)
    if f == "write":
        return ("write", value)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise HistoryFormatError(path, lineno, f"cas value must be [from to], got {value!r}")
    return ("cas", value[0], value[1])


def parse_jepsen(path: PathLike) -> list[Operation]:
    """Parse a Jepsen compare-and-set register log into operations.

    Ops are ``("read",)``, ``("write", v)`` and ``("cas", from, to)``; ``nil`` is
    None. ``:ok`` completes an op (read: the value read; write: None; cas: True),
    ``:fail :cas`` ran and returned False, and ``:info``, ``:fail :read`` and any
    other ``:fail`` (conservatively) leave the outcome unknown, as does an op
    still open at the end of the file. Lines of other shapes are ignored. The
    line number is the time.
    """
    builder = _Builder(path)
    for lineno, line in _read_lines(path):
        match = _JEPSEN_LINE.match(line)
        if match is None:
            continue
        proc, kind, f = match["proc"], match["type"], match["f"]
        value = _jepsen_value(match["value"])
        time = float(lineno)
        if kind == "invoke":
            builder.invoke(proc, time, _jepsen_op(f, value, path, lineno), f)
            continue
        pending = builder.complete(proc, lineno, f)
        if kind == "ok":
            result = value if f == "read" else (True if f == "cas" else None)
            builder.finish(pending, time, result)
        elif kind == "fail" and f == "cas":
            builder.finish(pending, time, False)
        else:
            builder.finish_unknown(pending)
    return builder.operations()


# --------------------------------------------------------------------------- #
# Porcupine key/value logs.
# --------------------------------------------------------------------------- #

_EDN_STRING = r'"(?:[^"\\]|\\.)*"|nil'
_KV_LINE = re.compile(
    r"^\{\s*:process\s+(?P<proc>\d+)\s*,\s*:type\s+:(?P<type>invoke|ok|info)\s*,"
    r"\s*:f\s+:(?P<f>get|put|append)\s*,\s*:key\s+(?P<key>" + _EDN_STRING + r")\s*,"
    r"\s*:value\s+(?P<value>" + _EDN_STRING + r")\s*\}$"
)


def _edn_string(text: str) -> str | None:
    if text == "nil":
        return None
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_porcupine_kv(path: PathLike) -> list[Operation]:
    """Parse a Porcupine key/value log (``{:process N, :type :invoke, ...}`` lines).

    Ops are ``("get", key)``, ``("put", key, v)`` and ``("append", key, v)``; a
    get's result is the value of its ``:ok`` line, put/append return None. An
    ``:info`` line or an op still open at the end means the outcome is unknown.
    Blank lines are skipped; any other line raises `HistoryFormatError`.
    """
    builder = _Builder(path)
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        match = _KV_LINE.match(line.strip())
        if match is None:
            raise HistoryFormatError(path, lineno, f"unrecognised line: {line[:80]!r}")
        proc, kind, f = match["proc"], match["type"], match["f"]
        key, value = _edn_string(match["key"]), _edn_string(match["value"])
        if kind == "invoke":
            op = ("get", key) if f == "get" else (f, key, value)
            builder.invoke(proc, float(lineno), op, f)
            continue
        pending = builder.complete(proc, lineno, f)
        if kind == "ok":
            builder.finish(pending, float(lineno), value if f == "get" else None)
        else:
            builder.finish_unknown(pending)
    return builder.operations()


# --------------------------------------------------------------------------- #
# The project's own JSON-lines format.
# --------------------------------------------------------------------------- #


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(item) for item in value)
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def _json_time(record: dict, field: str, path: PathLike, lineno: int) -> float | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HistoryFormatError(path, lineno, f'"{field}" must be a finite number, got {value!r}')
    return float(value)


def _operation_from_json(record: Any, path: PathLike, lineno: int) -> Operation:
    if not isinstance(record, dict):
        raise HistoryFormatError(path, lineno, "expected a JSON object")
    client = record.get("client")
    if isinstance(client, bool) or not isinstance(client, str | int):
        raise HistoryFormatError(path, lineno, f'"client" must be a string, got {client!r}')
    call = _json_time(record, "call", path, lineno)
    if call is None:
        raise HistoryFormatError(path, lineno, 'missing "call" time')
    ret = _json_time(record, "return", path, lineno)
    if ret is not None and ret < call:
        raise HistoryFormatError(path, lineno, f'"return" ({ret}) is before "call" ({call})')
    op = record.get("op")
    if not isinstance(op, list) or not op or not isinstance(op[0], str):
        raise HistoryFormatError(path, lineno, f'"op" must be a non-empty list, got {op!r}')
    return Operation(str(client), call, ret, _to_tuple(op), _to_tuple(record.get("result")))


def parse_jsonl(path: PathLike) -> list[Operation]:
    """Parse the project's JSON-lines history format.

    Each non-blank line is an object with ``client``, ``call``, ``return``
    (null or absent = unknown outcome), ``op`` (a list, returned as a tuple) and
    ``result``. Malformed input raises `HistoryFormatError` naming the line.
    """
    ops: list[Operation] = []
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryFormatError(path, lineno, f"invalid JSON: {exc.msg}") from None
        ops.append(_operation_from_json(record, path, lineno))
    return ops


def _operation_to_json(op: Operation) -> str:
    record = {
        "client": op.client,
        "call": op.call,
        "return": op.ret,
        "op": _to_json(op.op),
        "result": _to_json(op.result),
    }
    return json.dumps(record, separators=(", ", ": "), allow_nan=False)


def dump_jsonl_lines(ops: Iterable[Operation]) -> str:
    """Serialise operations in the JSON-lines format (one line each, newline-terminated)."""
    return "".join(_operation_to_json(op) + "\n" for op in ops)


def write_jsonl(ops: Iterable[Operation], path: PathLike) -> None:
    """Write operations to ``path`` in the JSON-lines format readable by `parse_jsonl`."""
    Path(path).write_text(dump_jsonl_lines(ops), encoding="utf-8")
