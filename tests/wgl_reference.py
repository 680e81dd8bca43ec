"""The original WGL search (Wing & Gong with Lowe's memoisation), kept as a test oracle.

This is the checker's search as it was before reads-first, the lookahead and the
two candidate orders (it shares the entry list and the twin links with it). It is
simple and was validated against the public Porcupine histories, so tests compare
the two on many small random histories.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

from pmmc_ray.check.history import Operation
from pmmc_ray.check.linearizability import (
    Model,
    _entry_links,
    _Outcome,
    _prepare,
    _twin_links,
)

_DEADLINE_CHECK_EVERY = 2048


def _search(ops: Sequence[Operation], model: Model, deadline: float) -> _Outcome:
    """WGL search over one partition (see the module docstring).

    Two sound refinements of the plain cache, both about unknown-outcome ops,
    which never have to be linearized: a configuration is skipped when one with
    the same known ops, the same state and a *subset* of its unknown ops was
    already entered (that one can do everything this one can), and identical
    unknown ops are applied in call order only.
    """
    n = len(ops)
    nxt, prv = _entry_links(ops)
    head = 2 * n
    inputs = [op.op for op in ops]
    results = [op.result for op in ops]
    known = [op.ret is not None for op in ops]
    twin = _twin_links(ops)
    known_left = sum(known)
    step = model.step
    monotonic = time.monotonic

    state: Hashable = model.init()
    known_bits = 0  # bitset of linearized ops with a known outcome
    unknown_bits = 0  # bitset of linearized ops with an unknown outcome
    # (known_bits, state) -> unknown_bits of every configuration entered with them
    cache: dict[tuple[int, Hashable], list[int]] = {}
    stack: list[tuple[int, Hashable]] = []  # (op, state before it)
    path: list[int] = []
    best: list[int] = []
    budget = _DEADLINE_CHECK_EVERY

    entry = nxt[head]
    while known_left:
        budget -= 1
        if not budget:
            if monotonic() > deadline:
                return _Outcome(None, best)
            budget = _DEADLINE_CHECK_EVERY
        if entry >= n:  # a return entry: that op had to be linearized already
            if not stack:
                return _Outcome(False, best)
            entry, state = stack.pop()  # backtrack
            path.pop()
            bit = 1 << entry
            if known[entry]:
                known_bits ^= bit
                known_left += 1
            else:
                unknown_bits ^= bit
            ret = entry + n
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            entry = nxt[entry]
            continue
        # A call entry: try to linearize this op now.
        is_known = known[entry]
        if not is_known and twin[entry] >= 0 and not (unknown_bits >> twin[entry]) & 1:
            entry = nxt[entry]
            continue
        legal, new_state = step(state, inputs[entry], results[entry], is_known)
        if not legal:
            entry = nxt[entry]
            continue
        bit = 1 << entry
        new_known, new_unknown = (
            (known_bits | bit, unknown_bits) if is_known else (known_bits, unknown_bits | bit)
        )
        key = (new_known, new_state)
        seen = cache.get(key)
        if seen is None:
            cache[key] = [new_unknown]
        elif not seen[0] or (new_unknown and any(not (o & ~new_unknown) for o in seen)):
            # Dominated by a configuration already entered (`seen` only holds
            # minimal sets, so when it holds 0 that is its only element).
            entry = nxt[entry]
            continue
        elif new_unknown:  # keep only minimal sets: drop those the new one dominates
            seen[:] = [o for o in seen if new_unknown & ~o]
            seen.append(new_unknown)
        else:
            seen[:] = [0]
        stack.append((entry, state))
        path.append(entry)
        if len(path) > len(best):
            best = path.copy()
        state, known_bits, unknown_bits = new_state, new_known, new_unknown
        known_left -= is_known
        ret = entry + n
        nxt[prv[entry]] = nxt[entry]
        prv[nxt[entry]] = prv[entry]
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]
        entry = nxt[head]
    return _Outcome(True, path)


def reference_verdict(ops: Sequence[Operation], model: Model, timeout: float = 30.0) -> bool | None:
    """True/False if the history is (not) linearizable, None if out of time; per partition."""
    deadline = time.monotonic() + timeout
    for part in model.partition(_prepare(ops, model)):
        status = _search(part, model.for_partition(part), deadline).status
        if status is not True:
            return status
    return True
