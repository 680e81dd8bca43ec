"""Seeded generators of histories for testing and benchmarking the checker.

`hard_history` builds the hard kind: many concurrent clients on ONE key of the KV
store, heavy overlap, some unknown outcomes.  Each client runs operations back to
back; every operation takes effect at a random point of its interval (an unknown
outcome one possibly later, or never), and the results come from executing the
operations sequentially in that order, so the history is linearizable by
construction.  ``corrupt=True`` then changes one late read so that the history is
provably not linearizable (the reason is in ``GeneratedHistory.note``):

* "stale": the read returns the value written by put w, although w returned before
  some other write m was called and m returned before the read was called.  Every
  written value is unique, so no order lets the read see w's value.
* "duplicate": the read returns its value with one appended suffix repeated; each
  suffix is appended by a single operation, so no order produces it.

`chaos_history` builds a large multi-key history like a chaos run: mostly short
overlaps and a few unknown outcomes; it is linearizable by construction.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from pmmc_ray.check.history import Operation

__all__ = ["GeneratedHistory", "chaos_history", "hard_history"]

_MIX = (("get", 40), ("put", 15), ("append", 20), ("cas", 15), ("delete", 10))
# The mix of Porcupine's kv histories (the 6.824 lab's clients): get, put, append.
_LAB_MIX = (("get", 50), ("put", 5), ("append", 45))


@dataclass
class GeneratedHistory:
    """A generated history and its verdict by construction."""

    name: str
    ops: list[Operation]
    linearizable: bool
    note: str = ""
    params: dict = field(default_factory=dict)


def _schedule(rng: random.Random, clients: int, n: int, duration: float, think: float):
    """Closed-loop clients: (client, call, duration) for n ops in call order."""
    free = [(rng.uniform(0, duration), c) for c in range(clients)]
    heapq.heapify(free)
    for _ in range(n):
        call, client = heapq.heappop(free)
        length = duration * rng.uniform(0.2, 1.8)
        heapq.heappush(free, (call + length + rng.expovariate(1 / think), client))
        yield client, call, length


def _run(rng: random.Random, planned: list, key_of, unknown: float) -> list[Operation]:
    """Give each op a linearization point, execute in that order, record results."""
    staged = []
    for index, (client, call, length, kind) in enumerate(planned):
        lost = rng.random() < unknown
        point = call + rng.uniform(0, length)
        applied = True
        if lost:
            applied = rng.random() < 0.5
            point = call + rng.uniform(0, 3 * length)
        staged.append((point, index, client, call, None if lost else call + length, kind, applied))
    staged.sort()
    state: dict = {}
    recent: dict = {}
    out = []
    for _point, index, client, call, ret, kind, applied in staged:
        key = key_of(index)
        value = state.get(key)
        if kind == "get":
            op, result = ("get", key), value
        elif kind == "put":
            op, result = ("put", key, f"p{index}"), None
            if applied:
                state[key] = f"p{index}"
        elif kind == "append":
            op, result = ("append", key, f"a{index}."), None
            if applied:
                state[key] = (value or "") + f"a{index}."
        elif kind == "delete":
            op, result = ("delete", key), None
            if applied:
                state.pop(key, None)
        else:
            seen = recent.get(key, [None])
            expected = value if rng.random() < 0.6 else rng.choice(seen[-5:])
            op, result = ("cas", key, expected, f"c{index}"), expected == value
            if applied and result:
                state[key] = f"c{index}"
        recent.setdefault(key, [None]).append(state.get(key))
        out.append((call, index, Operation(f"c{client}", call, ret, op, result if ret else None)))
    out.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in out]


def _precedes(a: Operation, b: Operation) -> bool:
    return a.ret is not None and a.ret < b.call


def _corrupt(rng: random.Random, ops: list[Operation]) -> tuple[list[Operation], str] | None:
    """Change one late read so that the history is provably not linearizable."""
    reads = [i for i, o in enumerate(ops) if o.op[0] == "get" and o.ret is not None]
    late = [i for i in reads if i >= len(ops) // 2]
    rng.shuffle(late)
    writes = [o for o in ops if o.ret is not None and o.op[0] in ("put", "append", "delete")]
    writes += [o for o in ops if o.ret is not None and o.op[0] == "cas" and o.result]
    for i in late:
        read = ops[i]
        key = read.op[1]
        if rng.random() < 0.5 and isinstance(read.result, str):
            # "duplicate": repeat the last appended suffix of the value read.
            if read.result.endswith("."):
                cut = read.result[:-1].rfind(".") + 1 if "." in read.result[:-1] else 0
                suffix = read.result[cut:]
                if suffix.startswith("a"):
                    bad = read.result + suffix
                    note = f"read {i} returns {bad!r}: suffix {suffix!r} is appended only once"
                    return _replace(ops, i, bad), note
        for w in ops:
            if w.ret is None or w.op[0] != "put" or w.op[1] != key or w.op[2] == read.result:
                continue
            if any(
                _precedes(w, m) and _precedes(m, read)
                for m in writes
                if m is not w and m.op[1] == key
            ):
                note = f"read {i} returns {w.op[2]!r}, overwritten before the read was called"
                return _replace(ops, i, w.op[2]), note
    return None


def _replace(ops: list[Operation], i: int, result) -> list[Operation]:
    old = ops[i]
    return [*ops[:i], Operation(old.client, old.call, old.ret, old.op, result), *ops[i + 1 :]]


def hard_history(
    seed: int,
    clients: int = 50,
    ops: int = 300,
    unknown: float = 0.03,
    corrupt: bool = False,
    keys: int = 1,
    lab: bool = False,
) -> GeneratedHistory:
    """``clients`` concurrent clients on ``keys`` keys (one by default), heavy overlap
    (see the module docstring); ``lab``: only get/put/append, in the proportions of
    Porcupine's kv histories, instead of all five operations."""
    rng = random.Random(seed)
    kinds = [kind for kind, weight in (_LAB_MIX if lab else _MIX) for _ in range(weight)]
    planned = [
        (client, call, length, rng.choice(kinds))
        for client, call, length in _schedule(rng, clients, ops, 1.0, 0.05)
    ]
    key_names = [f"k{i}" for i in range(keys)] if keys > 1 else ["k"]
    chosen = [rng.choice(key_names) for _ in range(ops)]
    history = _run(rng, planned, chosen.__getitem__, unknown)
    params = {"seed": seed, "clients": clients, "ops": ops, "unknown": unknown, "keys": keys}
    name = f"{'lab' if lab else 'hard'}-c{clients}-n{ops}" + (f"-k{keys}" if keys > 1 else "")
    name += (f"-u{unknown:g}" if unknown else "") + f"-s{seed}"
    if not corrupt:
        return GeneratedHistory(name, history, True, "", params)
    corrupted = _corrupt(rng, history)
    if corrupted is None:
        raise ValueError(f"seed {seed}: no read to corrupt provably; pick another seed")
    return GeneratedHistory(name + "-bad", corrupted[0], False, corrupted[1], params)


def chaos_history(
    seed: int,
    ops: int = 1_000_000,
    clients: int = 32,
    keys: int = 1000,
    unknown: float = 0.001,
) -> GeneratedHistory:
    """A chaos run on a KV store: many keys, short overlaps, a few unknown outcomes."""
    rng = random.Random(seed)
    kinds = [kind for kind, weight in _MIX for _ in range(weight)]
    planned = [
        (client, call, length, rng.choice(kinds))
        for client, call, length in _schedule(rng, clients, ops, 1.0, 1.0)
    ]
    key_names = [f"k{i}" for i in range(keys)]
    chosen = [rng.choice(key_names) for _ in range(ops)]
    history = _run(rng, planned, chosen.__getitem__, unknown)
    params = {"seed": seed, "clients": clients, "ops": ops, "keys": keys, "unknown": unknown}
    return GeneratedHistory(f"chaos-n{ops}-k{keys}-s{seed}", history, True, "", params)
