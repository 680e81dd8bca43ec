"""The JSON shape of the KV endpoints, shared by the server and its clients (pure).

``POST /v1/<op>`` takes the fields of :data:`KV_FIELDS` ``[op]`` as a JSON object; a
200 answer carries ``value`` (get), ``swapped`` (cas) or ``ok`` (the others).
"""

from __future__ import annotations

from typing import Any

__all__ = ["KV_FIELDS", "NULLABLE", "body_of", "result_of"]

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
