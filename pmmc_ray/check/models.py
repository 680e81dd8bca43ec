"""Sequential models for the linearizability checker (`pmmc_ray.check.linearizability`).

A `Model` gives the initial state, the step function, how a history splits into
independent partitions, and optional hints the search uses to prune: which ops are
observers (`is_observer`), which only extend the state (`is_append`), whether a read's
result can still be reached (`may_reach`), and which ops of unknown outcome cannot
matter (`simplify`). Each hint must be sound: it may only cut branches that cannot
lead to a linearization.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from pmmc_ray.check.history import Operation

__all__ = [
    "CAS_REGISTER_MODEL",
    "KV_MODEL",
    "PORCUPINE_KV_MODEL",
    "CasRegisterModel",
    "KvStoreModel",
    "Model",
    "PorcupineKvModel",
]

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

    def is_observer(self, op: tuple, result: Any) -> bool:
        """True if ``op`` with the known ``result`` leaves every state it is legal in
        unchanged (a read; a compare-and-set that failed).  The search linearizes such
        an op as soon as it is legal, without trying other orders (see `_search`)."""
        return False

    def is_append(self, op: tuple) -> bool:
        """True if ``op`` can only extend the state (see `may_reach`)."""
        return False

    def may_reach(
        self,
        state: Hashable,
        op: tuple,
        result: Any,
        resets: Sequence[tuple],
        appends: Sequence[tuple],
    ) -> bool:
        """False only if no sequence of ops from ``resets`` and ``appends`` (each at
        most once; ``appends`` are `is_append` ops) can take ``state`` to one where
        the observer ``op`` returns ``result``; the search then abandons the
        configuration.  The default never abandons one."""
        return True

    def simplify(self, ops: list[Operation]) -> list[Operation]:
        """Drop operations of unknown outcome that cannot matter (default: none)."""
        return ops

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

    def is_observer(self, op: tuple, result: Any) -> bool:
        return op[0] == "get" or (op[0] == "cas" and result is False)

    def is_append(self, op: tuple) -> bool:
        return op[0] == "append"

    def register_simplify(self, ops: list[Operation]) -> list[Operation]:
        """`Model.simplify` for one register: drop unobserved unknown puts and appends.

        A put or append of unknown outcome whose value appears in no get's result and
        no cas's expected value can be left out: in a linearization that has it, the
        ops after it up to the next put, delete or successful cas are appends and ops
        of unknown outcome (a get or a successful cas there would see the value), so
        without it they stay legal, and from that reset on the states are the same.
        Failed cas ops and cas ops of unknown outcome could tell, so a register that
        has any keeps every op.
        """
        texts = []
        for op in ops:
            kind = op.op[0]
            if kind == "cas":
                if op.ret is None or not op.result:
                    return ops
                texts.append(op.op[2])
            elif kind == "get" and op.ret is not None:
                texts.append(op.result)
        if not all(isinstance(text, str | None) for text in texts):
            return ops
        seen = "\x00".join(text for text in texts if text)

        def unobserved(op: Operation) -> bool:
            value = op.op[2] if op.op[0] in ("put", "append") else None
            return (
                isinstance(value, str)
                and value != ""
                and "\x00" not in value
                and (value not in seen)
            )

        return [op for op in ops if op.ret is not None or not unobserved(op)]

    def register_may_reach(
        self,
        value: Any,
        op: tuple,
        result: Any,
        resets: Sequence[tuple],
        appends: Sequence[tuple],
    ) -> bool:
        """`Model.may_reach` for one register holding ``value``."""
        # Appends only add suffixes (an absent key counts as ""), so a get returns
        # `result` only if it is the value now, or the value the last of the resets
        # run sets (put: its value; delete: absent; cas: its new value), followed by
        # some of the appends' values.  (Checked allowing an append more than once:
        # weaker, still sound.)
        if op[0] != "get" or result == value:
            return True
        starts = [value]
        for reset in resets:
            kind = reset[0]
            starts.append(reset[2] if kind == "put" else reset[3] if kind == "cas" else None)
        pieces: set[str] | None = None
        for start in starts:
            if result == start or not isinstance(start, str | None):
                return True
            if isinstance(result, str) and result.startswith(start or ""):
                if pieces is None:
                    values = [a[2] for a in appends]
                    if not all(isinstance(piece, str) for piece in values):
                        return True
                    pieces = set(values) - {""}
                if _spelled(result, len(start or ""), pieces):
                    return True
        return False

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


def _spelled(text: str, start: int, pieces: set[str]) -> bool:
    """True if ``text[start:]`` is a concatenation of strings from ``pieces``."""
    reached = {start}
    frontier = [start]
    end = len(text)
    while frontier:
        position = frontier.pop()
        if position == end:
            return True
        for piece in pieces:
            if text.startswith(piece, position):
                following = position + len(piece)
                if following not in reached:
                    reached.add(following)
                    frontier.append(following)
    return False


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

    def is_observer(self, op: tuple, result: Any) -> bool:
        return self.parent.is_observer(op, result)

    def simplify(self, ops: list[Operation]) -> list[Operation]:
        return self.parent.register_simplify(ops)

    def is_append(self, op: tuple) -> bool:
        return self.parent.is_append(op)

    def may_reach(
        self,
        state: Hashable,
        op: tuple,
        result: Any,
        resets: Sequence[tuple],
        appends: Sequence[tuple],
    ) -> bool:
        return self.parent.register_may_reach(state, op, result, resets, appends)

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
            if not isinstance(value, str | None) or not isinstance(op[2], str):
                raise ValueError(
                    f"{self.name}: append needs string values, got {op!r} on {value!r}"
                )
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

    def is_observer(self, op: tuple, result: Any) -> bool:
        return op[0] == "read" or (op[0] == "cas" and result is False)

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
