"""The default application: a key-value store of strings.

Operations are tuples, so they compare with ``==``, pickle cheaply and map to JSON
lists one to one:

=========================  ============================================  ==========
op                         effect                                        result
=========================  ============================================  ==========
("get", k)                 none                                          value or None
("put", k, v)              k := v                                        None
("delete", k)              remove k                                      None
("append", k, v)           k := (k or "") + v                            None
("cas", k, expected, new)  if k's value == expected: k := new            True/False
=========================  ============================================  ==========

``expected`` None means "k is absent". Keys and values are ``str``; sizes are bounded.
"""

from __future__ import annotations

import json
from typing import Any

from .base import InvalidOperation, StateMachine

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024

_ARITY = {"get": 2, "put": 3, "delete": 2, "append": 3, "cas": 4}


def _check_str(what: str, v: Any, limit: int, strict: bool = True) -> None:
    if not isinstance(v, str):
        raise InvalidOperation(f"{what} must be a str, got {type(v).__name__}")
    try:
        n = len(v.encode("utf-8", "strict" if strict else "surrogatepass"))
    except UnicodeEncodeError as e:
        # A lone surrogate (JSON "\ud800") is not text and has no UTF-8 form: refuse it
        # before anything is sent, so it never reaches the log.
        raise InvalidOperation(
            f"{what} is not valid Unicode text: a lone surrogate {v[e.start]!r} at "
            f"character {e.start}"
        ) from None
    if n > limit:
        raise InvalidOperation(f"{what} is {n} bytes; the limit is {limit}")


def validate_kv_op(op: Any, *, strict_text: bool = True) -> None:
    """Raise :class:`InvalidOperation` unless ``op`` is a well-formed KV operation.

    ``strict_text=False`` lets lone surrogates through (only ``apply`` does that, see
    there).
    """
    if not isinstance(op, tuple) or not op:
        raise InvalidOperation(f"a KV operation is a non-empty tuple, got {op!r:.80}")
    name = op[0]
    if name not in _ARITY:
        raise InvalidOperation(f"unknown operation {name!r:.40}; expected one of {sorted(_ARITY)}")
    if len(op) != _ARITY[name]:
        raise InvalidOperation(f"{name} takes {_ARITY[name] - 1} arguments, got {len(op) - 1}")
    _check_str("key", op[1], MAX_KEY_BYTES, strict_text)
    if name in ("put", "append"):
        _check_str("value", op[2], MAX_VALUE_BYTES, strict_text)
    elif name == "cas":
        if op[2] is not None:
            _check_str("expected value", op[2], MAX_VALUE_BYTES, strict_text)
        _check_str("new value", op[3], MAX_VALUE_BYTES, strict_text)


class KVStore(StateMachine):
    """A linearizable string key-value store (all operations go through the log)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def validate(self, op: Any) -> None:
        validate_kv_op(op)

    def apply(self, op: Any) -> Any:
        # Lenient about lone surrogates: clients and replicas refuse them with validate()
        # before proposing, but a log written before that check may hold one, and its
        # replay must give the same state as before (every replica, every version).
        validate_kv_op(op, strict_text=False)
        name, key = op[0], op[1]
        if name == "get":
            return self.data.get(key)
        if name == "put":
            self.data[key] = op[2]
            return None
        if name == "delete":
            self.data.pop(key, None)
            return None
        if name == "append":
            new = self.data.get(key, "") + op[2]
            # surrogatepass: a stored value from such an old log must not make apply
            # raise (the replica would crash on every replay of this slot).
            if len(new.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
                raise InvalidOperation(
                    f"append would make the value exceed {MAX_VALUE_BYTES} bytes"
                )
            self.data[key] = new
            return None
        # cas
        if self.data.get(key) == op[2]:
            self.data[key] = op[3]
            return True
        return False

    def is_read_only(self, op: Any) -> bool:
        return isinstance(op, tuple) and bool(op) and op[0] == "get"

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        loaded = json.loads(data.decode())
        if not isinstance(loaded, dict):
            raise ValueError("KV snapshot must be a JSON object")
        self.data = loaded
