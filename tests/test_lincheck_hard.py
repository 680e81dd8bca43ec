"""The checker on generated hard histories, and against the old WGL search.

Verdicts only, never timings (the machine is shared); `python -m
pmmc_ray.check.bench` prints and records the timings.
"""

from __future__ import annotations

import random

import pytest

from pmmc_ray.check import CAS_REGISTER_MODEL, KV_MODEL, PORCUPINE_KV_MODEL, Operation, check
from pmmc_ray.check.generate import chaos_history, hard_history
from tests.wgl_reference import reference_verdict

LIN, NOT_LIN = "linearizable", "not_linearizable"


def _verdict_is_right(generated) -> None:
    result = check(generated.ops, KV_MODEL, timeout=120)
    assert result.verdict == (LIN if generated.linearizable else NOT_LIN), (
        generated.name,
        generated.note,
        result.explanation,
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("corrupt", [False, True])
def test_fifty_clients_like_porcupines_kv_histories(seed: int, corrupt: bool) -> None:
    """50 clients, 10 keys, 2000 get/put/append (about 200 ops and 5 clients at once
    per key), like Porcupine's c50 histories."""
    _verdict_is_right(
        hard_history(seed, clients=50, ops=2000, keys=10, unknown=0.0, lab=True, corrupt=corrupt)
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("corrupt", [False, True])
def test_fifty_clients_all_operations_and_unknown_outcomes(seed: int, corrupt: bool) -> None:
    _verdict_is_right(
        hard_history(seed, clients=50, ops=2000, keys=10, unknown=0.01, corrupt=corrupt)
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("corrupt", [False, True])
def test_one_key_many_clients(seed: int, corrupt: bool) -> None:
    _verdict_is_right(hard_history(seed, clients=6, ops=300, corrupt=corrupt))


def test_generated_histories_are_deterministic() -> None:
    assert hard_history(3, clients=8, ops=40).ops == hard_history(3, clients=8, ops=40).ops
    assert chaos_history(3, ops=200, keys=10).ops == chaos_history(3, ops=200, keys=10).ops


def test_chaos_history_is_linearizable() -> None:
    generated = chaos_history(0, ops=20_000, clients=32, keys=100, unknown=0.002)
    assert check(generated.ops, KV_MODEL, timeout=120).verdict == LIN


def _scramble(rng: random.Random, ops: list[Operation]) -> list[Operation]:
    """Change one known result to another plausible one (the verdict is then unknown)."""
    picks = [i for i, o in enumerate(ops) if o.ret is not None and o.op[0] in ("get", "cas")]
    if not picks:
        return ops
    i = rng.choice(picks)
    old = ops[i]
    if old.op[0] == "cas":
        result = not old.result
    else:
        values = [o.result for o in ops if o.op[0] == "get"] + [None]
        values += [o.op[2] for o in ops if o.op[0] == "put"]
        result = rng.choice(values)
    return [*ops[:i], Operation(old.client, old.call, old.ret, old.op, result), *ops[i + 1 :]]


@pytest.mark.parametrize("block", range(6))
def test_agrees_with_the_wgl_search_on_small_random_histories(block: int) -> None:
    # Unknown outcomes up to 30%, and one result changed in half the histories, so
    # both verdicts occur; the old search is exact on histories this small.
    counts = {True: 0, False: 0}
    for seed in range(block * 150, (block + 1) * 150):
        rng = random.Random(seed)
        ops = hard_history(
            seed,
            clients=rng.choice([2, 3, 4, 5]),
            ops=rng.choice([6, 10, 14, 18]),
            unknown=rng.choice([0.0, 0.1, 0.3]),
        ).ops
        if rng.random() < 0.5:
            ops = _scramble(rng, ops)
        expected = reference_verdict(ops, KV_MODEL)
        assert expected is not None
        assert (check(ops, KV_MODEL, timeout=30).verdict == LIN) == expected, (seed, ops)
        counts[expected] += 1
    assert counts[True] and counts[False]


def test_agrees_with_the_wgl_search_on_porcupine_kv_histories() -> None:
    # Only get/put/append, registers starting as "" (Porcupine's model).
    for seed in range(200):
        rng = random.Random(seed)
        ops = [
            Operation(o.client, o.call, o.ret, o.op, "" if o.result is None else o.result)
            for o in hard_history(seed, clients=4, ops=12, unknown=0.2).ops
            if o.op[0] in ("put", "append") or (o.op[0] == "get" and o.result is not None)
        ]
        if rng.random() < 0.5:
            ops = _scramble(rng, ops)
        expected = reference_verdict(ops, PORCUPINE_KV_MODEL)
        assert (check(ops, PORCUPINE_KV_MODEL, timeout=30).verdict == LIN) == expected, seed


def test_agrees_with_the_wgl_search_on_cas_register_histories() -> None:
    # Jepsen's register: read/write/cas on small integers, so values repeat.
    names = {"get": "read", "put": "write", "cas": "cas"}
    for seed in range(200):
        rng = random.Random(seed)
        ops = []
        for o in hard_history(seed, clients=4, ops=14, unknown=0.2).ops:
            if o.op[0] not in names:
                continue
            small = [rng.randrange(3) for _ in range(2)]
            inp = {"get": ("read",), "put": ("write", small[0]), "cas": ("cas", *small)}
            result = rng.randrange(3) if o.op[0] == "get" else o.result
            if o.op[0] == "cas":
                result = rng.random() < 0.5
            ops.append(Operation(o.client, o.call, o.ret, inp[o.op[0]], result))
        expected = reference_verdict(ops, CAS_REGISTER_MODEL)
        assert (check(ops, CAS_REGISTER_MODEL, timeout=30).verdict == LIN) == expected, seed


def test_unobserved_unknown_writes_are_dropped_and_observed_ones_kept() -> None:
    model = KV_MODEL.for_partition([Operation("a", 0, None, ("put", "k", "x"), None)])
    lost_put = Operation("a", 0, None, ("put", "k", "lost"), None)
    lost_append = Operation("b", 1, None, ("append", "k", "-tail"), None)
    seen_append = Operation("c", 2, None, ("append", "k", "-seen"), None)
    read = Operation("d", 5, 6, ("get", "k"), "v-seen")
    put = Operation("e", 3, 4, ("put", "k", "v"), None)
    ops = [lost_put, lost_append, seen_append, put, read]
    assert model.simplify(ops) == [seen_append, put, read]
    # a failed cas could tell a lost put happened: then nothing is dropped
    failed_cas = Operation("f", 7, 8, ("cas", "k", "v-seen", "w"), False)
    assert model.simplify([*ops, failed_cas]) == [*ops, failed_cas]
    # and the verdicts agree with the plain search either way
    for history in (ops, [*ops, failed_cas]):
        assert (check(history, KV_MODEL).verdict == LIN) == reference_verdict(history, KV_MODEL)


def test_a_read_no_pending_write_can_explain_is_a_dead_end_at_once() -> None:
    """The lookahead: 30 concurrent appends, then a read of a value they cannot spell."""
    appends = [Operation(f"c{i}", 0, 100, ("append", "k", f"<{i}>"), None) for i in range(30)]
    read = Operation("r", 200, 201, ("get", "k"), "<0><1><0>")
    result = check([*appends, read], KV_MODEL, timeout=60)
    assert result.verdict == NOT_LIN
    # with a value they can spell it is linearizable
    fine = Operation("r", 200, 201, ("get", "k"), "".join(f"<{i}>" for i in range(30)))
    assert check([*appends, fine], KV_MODEL, timeout=60).verdict == LIN


def test_bad_histories_get_a_clear_error() -> None:
    """Found by fuzzing: an infinite return time, and an append onto a number."""
    with pytest.raises(ValueError, match="finite return"):
        check([Operation("a", 0, float("inf"), ("get", "x"), "v")], KV_MODEL)
    history = [
        Operation("a", 0, 1, ("put", "x", 1), None),
        Operation("b", 2, 3, ("append", "x", "a"), None),
    ]
    with pytest.raises(ValueError, match="append needs string values"):
        check(history, KV_MODEL)
