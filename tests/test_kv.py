"""The default application: KV semantics, validation, snapshots."""

from __future__ import annotations

import pytest

from pmmc_ray.app import InvalidOperation, KVStore
from pmmc_ray.app.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES


def test_operations():
    kv = KVStore()
    assert kv.apply(("get", "a")) is None
    assert kv.apply(("put", "a", "1")) is None
    assert kv.apply(("append", "a", "2")) is None
    assert kv.apply(("append", "b", "x")) is None
    assert kv.apply(("get", "a")) == "12"
    assert kv.apply(("cas", "a", "nope", "3")) is False
    assert kv.apply(("cas", "a", "12", "3")) is True
    assert kv.apply(("cas", "c", None, "new")) is True
    assert kv.apply(("cas", "c", None, "again")) is False
    assert kv.apply(("delete", "a")) is None
    assert kv.apply(("delete", "a")) is None
    assert kv.data == {"b": "x", "c": "new"}


@pytest.mark.parametrize(
    "op, message",
    [
        (["get", "a"], "non-empty tuple"),
        ((), "non-empty tuple"),
        (("scan", "a"), "unknown operation"),
        (("get",), "takes 1 arguments"),
        (("put", "a"), "takes 2 arguments"),
        (("get", 1), "key must be a str"),
        (("put", "a", b"x"), "value must be a str"),
        (("cas", "a", 1, "x"), "expected value must be a str"),
        (("put", "k" * (MAX_KEY_BYTES + 1), "v"), "key is"),
        (("put", "k", "v" * (MAX_VALUE_BYTES + 1)), "value is"),
    ],
)
def test_bad_operations_are_rejected_and_change_nothing(op, message):
    kv = KVStore()
    kv.apply(("put", "a", "1"))
    with pytest.raises(InvalidOperation, match=message):
        kv.validate(op)
    with pytest.raises(InvalidOperation):
        kv.apply(op)
    assert kv.data == {"a": "1"}


def test_append_past_the_size_limit_is_rejected_and_changes_nothing():
    kv = KVStore()
    kv.apply(("put", "a", "v" * MAX_VALUE_BYTES))
    with pytest.raises(InvalidOperation, match="exceed"):
        kv.apply(("append", "a", "w"))
    assert len(kv.data["a"]) == MAX_VALUE_BYTES


def test_snapshot_round_trip_is_deterministic():
    a, b = KVStore(), KVStore()
    for k in ("z", "a", "m"):
        a.apply(("put", k, k * 2))
    for k in ("m", "z", "a"):
        b.apply(("put", k, k * 2))
    assert a.snapshot() == b.snapshot()
    c = KVStore()
    c.restore(a.snapshot())
    assert c.data == a.data


@pytest.mark.parametrize(
    "op",
    [
        ("get", "a\ud800"),
        ("put", "a", "\udfff"),
        ("append", "a", "x\ud800y"),
        ("cas", "a", "\ud800", "v"),
        ("cas", "a", None, "v\udc00"),
    ],
)
def test_a_lone_surrogate_is_not_text_and_is_rejected(op):
    # JSON can carry one ("\ud800") but it has no UTF-8 form: validate(), which every
    # client path and the replica run before proposing, refuses it.
    with pytest.raises(InvalidOperation, match="lone surrogate"):
        KVStore().validate(op)


def test_a_lone_surrogate_already_in_an_old_log_replays_as_before():
    # Logs written before the check may hold one: apply() must not change its verdict.
    kv = KVStore()
    kv.apply(("put", "a", "x\ud800"))
    kv.apply(("append", "a", "y"))
    assert kv.data == {"a": "x\ud800y"}


def test_a_valid_surrogate_pair_is_text():
    kv = KVStore()
    kv.validate(("put", "a", "\U0001f600"))  # one character, four UTF-8 bytes
    kv.apply(("put", "a", "\U0001f600"))
    assert kv.apply(("get", "a")) == "\U0001f600"
