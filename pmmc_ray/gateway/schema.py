"""The JSON shape of the KV endpoints, shared by the server and its clients (pure).

``POST /v1/<op>`` takes the fields of :data:`KV_FIELDS` ``[op]`` as a JSON object; a
200 answer carries ``value`` (get), ``swapped`` (cas) or ``ok`` (the others).
"""

from __future__ import annotations

from typing import Any

from ..app.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ESCAPED_MAX_BODY_BYTES",
    "KV_FIELDS",
    "NULLABLE",
    "body_of",
    "result_of",
]

#: the JSON fields of each KV operation, in the order of the operation tuple
KV_FIELDS: dict[str, tuple[str, ...]] = {
    "get": ("key",),
    "put": ("key", "value"),
    "delete": ("key",),
    "append": ("key", "value"),
    "cas": ("key", "expected", "new"),
}

#: (op, field) pairs that may be null: cas ``expected`` null means "the key is absent"
NULLABLE = frozenset({("cas", "expected")})

#: Room for a cas with a full-size expected and new value plus a full-size key, when
#: its strings are sent as UTF-8 and escapes and whitespace add less than 64 KiB. Escapes
#: can make a legal operation's body larger than that: ``\\u0001`` is 6 bytes for a
#: 1-byte character, and encoders that escape non-ASCII (Python's ``json.dumps`` by
#: default) write 6 bytes for 2- and 3-byte characters, 12 for 4-byte ones.
DEFAULT_MAX_BODY_BYTES = 2 * MAX_VALUE_BYTES + MAX_KEY_BYTES + 64 * 1024

#: Room for every legal operation however its strings are escaped: at most 6 bytes of
#: JSON per UTF-8 byte (a control character as ``\\u0001``), plus 64 KiB.
ESCAPED_MAX_BODY_BYTES = 6 * (2 * MAX_VALUE_BYTES + MAX_KEY_BYTES) + 64 * 1024


def body_of(op: tuple) -> dict[str, Any]:
    """The JSON body of a KV operation tuple, e.g. ("put", k, v) -> {"key": k, "value": v}."""
    return dict(zip(KV_FIELDS[op[0]], op[1:], strict=True))


def result_of(op: tuple, answer: dict[str, Any]) -> Any:
    """The operation's result from the JSON of a 200 answer."""
    if op[0] == "get":
        return answer["value"]
    if op[0] == "cas":
        return bool(answer["swapped"])
    return None
