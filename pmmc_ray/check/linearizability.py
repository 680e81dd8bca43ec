"""Linearizability checking of concurrent histories against sequential models.

Algorithm (Wing & Gong, with Lowe's memoisation; "WGL"), run per partition:

1. Each operation contributes a *call* entry (at its invoke time) and a *return*
   entry (at its return time, or +infinity when the outcome is unknown).  The
   entries are sorted by time into a doubly-linked list.  Ties: at equal times
   all call entries come before all return entries, so an operation returning
   at ``t`` and one invoked at ``t`` are treated as concurrent.  That admits
   more orders than any other tie-break, so a tie can never be the reason for a
   "not linearizable" verdict (conservative by construction).
2. Walk the list from the front.  At a call entry, try to linearize that
   operation now: apply the model's step to the current state; if it is legal
   and the pair (set of linearized ops as a bitset int, new state) was never
   seen before, remember it in the cache, push (op, old state) on a stack, unlink
   the op's call and return entries and restart from the front.  Otherwise move
   on to the next entry.
3. Reaching a return entry means that operation was not linearized before it
   returned: backtrack (pop the stack, relink the op, continue after its call
   entry).  An empty stack at that point proves the history not linearizable.
4. Done when every operation with a known outcome is linearized; operations of
   unknown outcome still left are taken not to have happened (or, equivalently,
   to have happened after everything else).  Unknown-outcome operations that are
   read-only are dropped up front: they constrain nothing.

Two sound refinements of the cache concern unknown-outcome ops (which never
*have* to be linearized): the cache is keyed by (known ops, state) and a new
configuration is skipped when one with a *subset* of its unknown ops was already
entered, since that one can do everything this one can; and identical unknown
ops are only ever applied in call order (the earlier one is available whenever
the later one is).  With no unknown-outcome ops this is exactly the plain cache.

The search is iterative (explicit stack), and the wall-clock budget turns into an
"unknown" verdict rather than a guess.  Models may split a history into
independent partitions (e.g. one per key, checked with the key's value alone as
the state), which are checked separately: linearizability is compositional.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pmmc_ray.check.history import Operation

__all__ = [
    "CAS_REGISTER_MODEL",
    "KV_MODEL",
    "LINEARIZABLE",
    "NOT_LINEARIZABLE",
    "PORCUPINE_KV_MODEL",
    "UNKNOWN",
    "CasRegisterModel",
    "KvStoreModel",
    "LinResult",
    "Model",
    "PorcupineKvModel",
    "check",
]

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not_linearizable"
UNKNOWN = "unknown"

_DEADLINE_CHECK_EVERY = 2048  # search steps between wall-clock checks


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


class Model:
    """A sequential specification: initial state, step function, partitioning.

    States must be hashable (they are cached).  ``step`` returns whether the
    operation is legal in ``state`` (with ``result`` when ``result_known``, or
    with some result otherwise) and the state after it.
    """

    name = "model"

    def init(self) -> Hashable:
        """Return the initial state."""
        raise NotImplementedError

    def step(
        self, state: Hashable, op: tuple, result: Any, result_known: bool
    ) -> tuple[bool, Hashable]:
        """Apply ``op`` to ``state``; return (legal, new state)."""
        raise NotImplementedError

    def validate(self, op: Operation) -> None:
        """Raise ValueError if ``op.op`` is not an operation of this model."""

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Split a history into independently checkable parts (default: one)."""
        return [list(ops)] if ops else []

    def is_read_only(self, op: tuple) -> bool:
        """True if ``op`` never changes the state (such ops are dropped when unknown)."""
        return False

    def for_partition(self, ops: Sequence[Operation]) -> Model:
        """The model to check one partition with (default: this one).

        A model may return a cheaper equivalent specialised to the partition,
        e.g. one whose state is a single register instead of a whole store.
        """
        return self

    def describe(self) -> str:
        """One-line description of the model, for messages."""
        return self.name

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        """Name a partition produced by `partition`, for messages."""
        return "the history"

    def describe_state(self, state: Hashable) -> str:
        """Render a state, for messages."""
        return repr(state)

    def describe_op(self, op: Operation) -> str:
        """Render an operation (client, input, output, times), for messages."""
        args = ", ".join(repr(arg) for arg in op.op[1:])
        result = "?" if op.ret is None else repr(op.result)
        ret = "never" if op.ret is None else f"{op.ret:g}"
        return f"{op.client}: {op.op[0]}({args}) -> {result} [called {op.call:g}, returned {ret}]"


def _require(condition: bool, model: Model, op: Operation) -> None:
    if not condition:
        raise ValueError(f"{model.name}: unsupported operation {op.op!r} (client {op.client})")


class _KeyedRegistersModel(Model):
    """Registers per key; the state is a frozenset of (key, value) pairs.

    Keys holding the default value are left out, so equal stores have equal
    states.  Subclasses define the per-register semantics in `apply`; a
    single-key partition is checked with the register value itself as the state
    (see `for_partition`), which is much cheaper.
    """

    default: str | None = None
    arity: dict[str, int] = {}

    def apply(self, value: Any, op: tuple, result: Any, result_known: bool) -> tuple[bool, Any]:
        """Apply ``op`` to one register holding ``value``; return (legal, new value)."""
        raise NotImplementedError

    def init(self) -> Hashable:
        return frozenset()

    def step(
        self, state: Hashable, op: tuple, result: Any, result_known: bool
    ) -> tuple[bool, Hashable]:
        assert isinstance(state, frozenset)
        key = op[1]
        current = self._get(state, key)
        legal, value = self.apply(current, op, result, result_known)
        if not legal or value is current:
            return legal, state
        return True, self._set(state, key, value)

    def validate(self, op: Operation) -> None:
        _require(bool(op.op) and self.arity.get(op.op[0]) == len(op.op), self, op)

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(op.op[1], []).append(op)
        return list(by_key.values())

    def for_partition(self, ops: Sequence[Operation]) -> Model:
        keys = {op.op[1] for op in ops}
        return _SingleRegister(self, keys.pop()) if len(keys) == 1 else self

    def is_read_only(self, op: tuple) -> bool:
        return op[0] == "get"

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        keys = {op.op[1] for op in ops}
        if len(keys) == 1:
            return f"key {next(iter(keys))!r}"
        return f"keys {sorted(map(repr, keys))}"

    def describe_value(self, key: Any, value: Any) -> str:
        """Render one register, for messages."""
        return f"{key!r} absent" if value is None else f"{key!r}={value!r}"

    def describe_state(self, state: Hashable) -> str:
        assert isinstance(state, frozenset)
        if not state:
            return "all keys " + ("absent" if self.default is None else repr(self.default))
        return ", ".join(self.describe_value(k, v) for k, v in sorted(state, key=repr))

    def _get(self, state: frozenset, key: Any) -> Any:
        for k, v in state:
            if k == key:
                return v
        return self.default

    def _set(self, state: frozenset, key: Any, value: Any) -> frozenset:
        rest = [pair for pair in state if pair[0] != key]
        if value != self.default:
            rest.append((key, value))
        return frozenset(rest)


class _SingleRegister(Model):
    """One key of a `_KeyedRegistersModel`; the state is that key's value."""

    def __init__(self, parent: _KeyedRegistersModel, key: Any) -> None:
        self.parent = parent
        self.key = key
        self.name = parent.name
        # Same signature as `step`; bound directly to save a call per search step.
        self.step = parent.apply  # type: ignore[method-assign]

    def init(self) -> Hashable:
        return self.parent.default

    def describe(self) -> str:
        return self.parent.describe()

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        return self.parent.describe_partition(ops)

    def describe_state(self, state: Hashable) -> str:
        return self.parent.describe_value(self.key, state)

    def describe_op(self, op: Operation) -> str:
        return self.parent.describe_op(op)


class KvStoreModel(_KeyedRegistersModel):
    """The project's KV store: get/put/delete/append/cas; absent keys are None.

    get returns the value (None if absent); put sets; delete removes; append
    treats absent as "" and concatenates; ``("cas", key, expected, new)`` sets
    ``new`` and returns True iff the current value equals ``expected`` (None
    meaning absent), else returns False.  The results of put, delete and append
    carry no information and are not checked.  Keys are independent partitions.
    """

    name = "kv"
    default = None
    arity = {"get": 2, "put": 3, "delete": 2, "append": 3, "cas": 4}

    def describe(self) -> str:
        return "KV store (get/put/delete/append/cas; absent keys are None)"

    def apply(self, value: Any, op: tuple, result: Any, result_known: bool) -> tuple[bool, Any]:
        kind = op[0]
        if kind == "get":
            return (not result_known or result == value), value
        if kind == "put":
            return True, op[2]
        if kind == "append":
            return True, (value or "") + op[2]
        if kind == "delete":
            return True, None
        if kind == "cas":
            swapped = value == op[2]
            if result_known and bool(result) != swapped:
                return False, value
            return True, (op[3] if swapped else value)
        raise ValueError(f"{self.name}: unsupported operation {op!r}")


class PorcupineKvModel(_KeyedRegistersModel):
    """Porcupine's kv model: per-key string registers starting as "".

    get returns the value, put sets it, append concatenates; keys are independent.
    """

    name = "porcupine-kv"
    default = ""
    arity = {"get": 2, "put": 3, "append": 3}

    def describe(self) -> str:
        return 'string registers per key, initially "" (get/put/append)'

    def apply(self, value: Any, op: tuple, result: Any, result_known: bool) -> tuple[bool, Any]:
        kind = op[0]
        if kind == "get":
            return (not result_known or result == value), value
        if kind == "put":
            return True, op[2]
        if kind == "append":
            return True, value + op[2]
        raise ValueError(f"{self.name}: unsupported operation {op!r}")


class CasRegisterModel(Model):
    """One compare-and-set register starting as None (Jepsen's etcd tests).

    ``("read",)`` returns the value, ``("write", v)`` sets it, and
    ``("cas", from, to)`` sets ``to`` and returns True iff the value was
    ``from``; a False result means it ran and found a different value.
    """

    name = "cas-register"
    arity = {"read": 1, "write": 2, "cas": 3}

    def init(self) -> Hashable:
        return None

    def validate(self, op: Operation) -> None:
        _require(bool(op.op) and self.arity.get(op.op[0]) == len(op.op), self, op)

    def is_read_only(self, op: tuple) -> bool:
        return op[0] == "read"

    def describe(self) -> str:
        return "compare-and-set register, initially nil (read/write/cas)"

    def describe_partition(self, ops: Sequence[Operation]) -> str:
        return "the register"

    def step(
        self, state: Hashable, op: tuple, result: Any, result_known: bool
    ) -> tuple[bool, Hashable]:
        kind = op[0]
        if kind == "read":
            return (not result_known or result == state), state
        if kind == "write":
            return True, op[1]
        if kind == "cas":
            swapped = state == op[1]
            if result_known and bool(result) != swapped:
                return False, state
            return True, (op[2] if swapped else state)
        raise ValueError(f"{self.name}: unsupported operation {op!r}")


KV_MODEL = KvStoreModel()
PORCUPINE_KV_MODEL = PorcupineKvModel()
CAS_REGISTER_MODEL = CasRegisterModel()


# --------------------------------------------------------------------------- #
# Result
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LinResult:
    """Outcome of `check`.

    ``verdict`` is "linearizable", "not_linearizable" or "unknown" (time budget
    exhausted).  For a failure, ``partition`` names the offending partition,
    ``prefix`` is the longest linearizable prefix the search found there (in
    linearization order) and ``blocking_op`` the pending operation with the
    earliest return after that prefix; ``explanation`` says it in words.
    """

    verdict: str
    model: str
    ops: int
    partitions: int
    elapsed: float
    partitions_checked: int = 0
    partition: str | None = None
    partition_ops: int | None = None
    prefix: tuple[Operation, ...] = field(default=(), repr=False)
    blocking_op: Operation | None = None
    explanation: str = ""

    @property
    def linearizable(self) -> bool:
        """True iff the verdict is "linearizable"."""
        return self.verdict == LINEARIZABLE

    @property
    def detail(self) -> str:
        """Human-readable detail: the explanation, or counts and timing if none."""
        return self.explanation or (
            f"{self.ops} ops in {self.partitions} partition(s) checked in {self.elapsed:.3f}s"
        )

    def summary(self) -> str:
        """One line of text describing the verdict."""
        return f"{self.verdict.replace('_', ' ')}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the prefix is reported by length only)."""
        return {
            "verdict": self.verdict,
            "model": self.model,
            "ops": self.ops,
            "partitions": self.partitions,
            "partitions_checked": self.partitions_checked,
            "elapsed": round(self.elapsed, 6),
            "partition": self.partition,
            "partition_ops": self.partition_ops,
            "prefix_length": len(self.prefix) if self.verdict == NOT_LINEARIZABLE else None,
            "blocking_op": None if self.blocking_op is None else _op_to_dict(self.blocking_op),
            "explanation": self.explanation,
        }


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _op_to_dict(op: Operation) -> dict[str, Any]:
    return {
        "client": op.client,
        "call": op.call,
        "return": op.ret,
        "op": _json_safe(op.op),
        "result": _json_safe(op.result),
    }


# --------------------------------------------------------------------------- #
# The search
# --------------------------------------------------------------------------- #


@dataclass
class _Outcome:
    status: bool | None  # True: linearizable, False: not, None: out of time
    best_prefix: list[int]  # op indices of the longest linearizable prefix found


def _entry_links(ops: Sequence[Operation]) -> tuple[list[int], list[int]]:
    """Build the sorted doubly-linked entry list.

    Entry ``i`` is the call of op ``i``, entry ``n + i`` its return; ``2n`` is the
    head sentinel and ``2n + 1`` the tail sentinel.  Calls sort before returns at
    equal times (see the module docstring).
    """
    n = len(ops)
    inf = float("inf")
    keys = [(op.call, 0) for op in ops] + [(inf if op.ret is None else op.ret, 1) for op in ops]
    order = sorted(range(2 * n), key=keys.__getitem__)
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    previous = 2 * n
    for entry in order:
        nxt[previous] = entry
        prv[entry] = previous
        previous = entry
    nxt[previous] = 2 * n + 1
    prv[2 * n + 1] = previous
    return nxt, prv


def _twin_links(ops: Sequence[Operation]) -> list[int]:
    """For each unknown-outcome op, the previous unknown op with the same input, else -1.

    Identical unknown ops are interchangeable except that the earlier-called one
    is available sooner, so the search only ever applies them in call order.
    """
    last: dict[Any, int] = {}
    twin = [-1] * len(ops)
    for index in sorted(range(len(ops)), key=lambda i: ops[i].call):
        op = ops[index]
        if op.ret is None:
            try:
                twin[index] = last.get(op.op, -1)
                last[op.op] = index
            except TypeError:  # unhashable input: no symmetry reduction
                pass
    return twin


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


# --------------------------------------------------------------------------- #
# Public entry point
# --------------------------------------------------------------------------- #


def _prepare(ops: Sequence[Operation], model: Model) -> list[Operation]:
    """Validate ops and drop unknown-outcome read-only ops (they constrain nothing)."""
    kept = []
    for op in ops:
        if not math.isfinite(op.call):
            raise ValueError(f"operation has no finite call time: {op!r}")
        if op.ret is not None and not op.ret >= op.call:
            raise ValueError(f"operation returns before it is called: {op!r}")
        model.validate(op)
        if op.ret is None and model.is_read_only(op.op):
            continue
        kept.append(op)
    return kept


def _failure_details(
    part: list[Operation], model: Model, prefix_ids: list[int]
) -> tuple[tuple[Operation, ...], Operation | None, str]:
    """Describe a failed partition: its longest prefix, blocking op and a sentence."""
    prefix = tuple(part[i] for i in prefix_ids)
    state = model.init()
    for op in prefix:
        state = model.step(state, op.op, op.result, op.ret is not None)[1]
    done = set(prefix_ids)
    pending = [op for i, op in enumerate(part) if i not in done and op.ret is not None]
    blocking = min(pending, key=lambda op: op.ret) if pending else None
    label = model.describe_partition(part)
    text = (
        f"{label} ({len(part)} ops) has no valid linearization; the longest linearizable "
        f"prefix found has {len(prefix)} ops"
    )
    if prefix:
        text += f", ending with [{model.describe_op(prefix[-1])}]"
    text += f" in state {model.describe_state(state)}"
    if blocking is not None:
        text += (
            "; from there no order of the pending operations lets "
            f"[{model.describe_op(blocking)}] take effect before it returned"
        )
    return prefix, blocking, text


UNDECIDED_GRACE_S = 0.5
"""Search time each partition still gets after the budget ran out on an earlier one."""


def check(ops: Sequence[Operation], model: Model, timeout: float | None = None) -> LinResult:
    """Check whether the history ``ops`` is linearizable with respect to ``model``.

    ``timeout`` is a wall-clock budget in seconds for the whole check (None: no
    limit); when it runs out the verdict is "unknown", never a guess.  Partitions
    are checked in order and the first failing one is reported.  A partition the
    budget cannot decide does not end the check: the partitions after it are still
    searched (each for at least ``UNDECIDED_GRACE_S``, all of them within a second
    budget), so a violation elsewhere is reported as "not_linearizable", not hidden
    behind "unknown".  Raises ValueError for operations the model does not support.
    """
    start = time.monotonic()
    deadline = float("inf") if timeout is None else start + timeout
    hard_deadline = float("inf") if timeout is None else start + 2 * timeout
    parts = model.partition(_prepare(ops, model))
    common: dict[str, Any] = {"model": model.name, "ops": len(ops), "partitions": len(parts)}
    undecided: LinResult | None = None

    for index, part in enumerate(parts):
        part_model = model.for_partition(part)
        now = time.monotonic()
        if undecided is not None:
            # The budget is spent: each remaining partition still gets a short search.
            until = min(max(deadline, now + UNDECIDED_GRACE_S), hard_deadline)
        else:
            until = deadline
        if now >= until:
            outcome = _Outcome(None, [])
        else:
            outcome = _search(part, part_model, until)
        if outcome.status is True:
            continue
        elapsed = time.monotonic() - start
        label = part_model.describe_partition(part)
        if outcome.status is None:
            if undecided is None:
                undecided = LinResult(
                    UNKNOWN,
                    **common,
                    elapsed=elapsed,
                    partitions_checked=index,
                    partition=label,
                    partition_ops=len(part),
                    explanation=(
                        f"time budget of {timeout:g}s exhausted while checking {label} "
                        f"({len(part)} ops; {index} of {len(parts)} partitions done)"
                    ),
                )
            continue
        prefix, blocking, text = _failure_details(part, part_model, outcome.best_prefix)
        return LinResult(
            NOT_LINEARIZABLE,
            **common,
            elapsed=elapsed,
            partitions_checked=index + 1,
            partition=label,
            partition_ops=len(part),
            prefix=prefix,
            blocking_op=blocking,
            explanation=text,
        )
    if undecided is not None:
        return undecided
    return LinResult(
        LINEARIZABLE,
        **common,
        elapsed=time.monotonic() - start,
        partitions_checked=len(parts),
    )
