"""What the Locust users send, and how they record it (pure Python, safe under gevent).

- :data:`MIXES`: workload mixes (shares of get/put/append/cas/delete);
- :class:`KeyChooser`: uniform or Zipfian key popularity;
- :class:`OpGenerator`: one user's stream of KV operations, with unique values (so a
  linearizability check can tell every write apart) and cas operations that expect
  the value the user last saw;
- :class:`HistoryLog`: a process's record of its users' operations in the jsonl
  history format of ``pmmc-ray lincheck``;
- :func:`http_outcome`, :func:`sidecar_outcome`: what an answer means for the history
  (``returned``, ``unknown`` or ``discarded``), for the HTTP and the native users;
- :func:`check_histories`: merge history files and check them, optionally widening
  every interval by a clock-skew bound first;
- :func:`read_locust_stats`: the "Aggregated" row of Locust's ``*_stats.csv``.

Clocks: every record has ``time.time()`` call and return times (``call``, ``return``)
and ``time.monotonic()`` ones (``call_mono``, ``return_mono``) with the Linux boot id
of its machine (``boot``). On Linux the monotonic clock is one clock for every process
of a machine (since its boot) and never jumps, while wall clocks can be stepped (NTP)
between two readings; so when every record comes from one boot of one machine,
:func:`check_histories` checks the monotonic times. Otherwise it checks wall times,
and clocks of different machines differ by their skew: an operation recorded on
another node may appear to start or end up to that skew too early or late. Checking
such a history as is can report a violation that did not happen; with ``skew_s`` set
to a bound on the skew, every interval is widened by that much on both sides, which
keeps the check sound (it can then only miss violations shorter than the skew, never
invent one).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DISCARDED",
    "KEY_DISTRIBUTIONS",
    "MIXES",
    "RETURNED",
    "UNKNOWN",
    "HistoryLog",
    "KeyChooser",
    "OpGenerator",
    "boot_id",
    "check_histories",
    "http_outcome",
    "read_locust_stats",
    "sidecar_outcome",
]

#: name -> {operation: share}; "mixed" is the workload of ``pmmc-ray run`` and ``bench``
MIXES: dict[str, dict[str, float]] = {
    "read-heavy": {"get": 0.95, "put": 0.05},
    "mixed": {"get": 0.5, "put": 0.2, "append": 0.2, "cas": 0.1},
    "write-heavy": {"put": 0.8, "append": 0.1, "get": 0.1},
    "append": {"append": 0.8, "get": 0.2},
    "cas": {"cas": 0.6, "get": 0.4},
    "put": {"put": 1.0},
    "all": {"get": 0.4, "put": 0.2, "append": 0.15, "cas": 0.15, "delete": 0.1},
}

KEY_DISTRIBUTIONS = ("uniform", "zipf")


class KeyChooser:
    """Draws key indexes in ``[0, n)``: uniform, or Zipf with exponent ``s`` (index 0
    the most popular: its share is ``1 / H(n, s)``, about 13% for n=1000, s=0.99)."""

    def __init__(self, n: int, dist: str = "uniform", s: float = 0.99) -> None:
        if n < 1:
            raise ValueError("need at least one key")
        if dist not in KEY_DISTRIBUTIONS:
            raise ValueError(f"key distribution must be one of {KEY_DISTRIBUTIONS}, not {dist!r}")
        if dist == "zipf" and s <= 0:
            raise ValueError("the zipf exponent must be > 0")
        self.n, self.dist = n, dist
        self._cdf: list[float] = []
        if dist == "zipf":
            weights = [1.0 / (i + 1) ** s for i in range(n)]
            total = sum(weights)
            self._cdf = list(itertools.accumulate(w / total for w in weights))

    def draw(self, rng: random.Random) -> int:
        if self.dist == "uniform":
            return rng.randrange(self.n)
        return min(bisect.bisect_left(self._cdf, rng.random()), self.n - 1)


@dataclass
class OpGenerator:
    """One user's operations. ``prefix`` must be fresh for every run: the checker
    assumes every key starts absent."""

    user: str
    prefix: str
    mix: dict[str, float]
    keys: KeyChooser
    value_size: int = 16
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _names: list[str] = field(init=False, repr=False)
    _cum: list[float] = field(init=False, repr=False)
    _n: int = field(default=0, init=False)
    _seen: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.mix) - {"get", "put", "append", "cas", "delete"}
        if unknown or not self.mix or min(self.mix.values()) < 0 or sum(self.mix.values()) <= 0:
            raise ValueError(f"bad mix {self.mix!r}")
        if self.value_size < 1 or self.value_size > 1024 * 1024:
            raise ValueError("value_size must be 1..1048576 bytes")
        self._rng = random.Random(self.seed)
        self._names = list(self.mix)
        self._cum = list(itertools.accumulate(self.mix[n] for n in self._names))

    def key(self, i: int) -> str:
        return f"{self.prefix}-k{i}"

    def _value(self, tag: str) -> str:
        # Unique per write; padded with a filler to value_size bytes.
        return tag if len(tag) >= self.value_size else tag + "." * (self.value_size - len(tag))

    def next(self) -> tuple:
        """The next operation (a KV tuple)."""
        self._n += 1
        tag = f"{self.user}.{self._n}"
        r = self._rng.random() * self._cum[-1]
        name = self._names[min(bisect.bisect_right(self._cum, r), len(self._names) - 1)]
        k = self.key(self.keys.draw(self._rng))
        if name == "get":
            return ("get", k)
        if name == "put":
            return ("put", k, self._value(tag))
        if name == "delete":
            return ("delete", k)
        if name == "append":
            return ("append", k, f"[{tag}]")  # short: values grow with every append
        return ("cas", k, self._seen.get(k), self._value(tag))

    def observe(self, op: tuple, result: Any) -> None:
        """Remember what the user learned of a key (cas then expects it)."""
        name, k = op[0], op[1]
        if name == "get":
            self._seen[k] = result
        elif name == "put" or (name == "cas" and result):
            self._seen[k] = op[-1]
        elif name == "delete":
            self._seen[k] = None
        elif name == "append":
            self._seen.pop(k, None)  # unknown now; cas will expect "absent"


# --- what an answer means for the history -------------------------------------------------

RETURNED = "returned"
"""It took effect (or read) once, with a known result."""
UNKNOWN = "unknown"
"""It may or may not have taken effect, at any time after it was sent."""
DISCARDED = "discarded"
"""It certainly changed nothing (refused, or never sent): left out of the history."""

#: The gateway's refusals: (status, error code) pairs after which nothing changed.
_HTTP_REFUSALS = {
    400: {"bad_request"},
    403: {"forbidden"},
    404: {"unknown_op"},
    405: {"method_not_allowed"},
    409: {"rejected"},
    413: {"body_too_large"},
    503: {"unavailable", "overloaded"},
}


def http_outcome(op_name: str, status: int | None, answer: Any) -> str:
    """What a gateway's answer (``status``, its JSON; None: no answer) to a KV operation
    means: :data:`RETURNED` for 200 and a get's 404 ``not_found``, :data:`DISCARDED`
    for one of the gateway's refusals (400, 403, 404 ``unknown_op``, 405, 409, 413,
    503), :data:`UNKNOWN` for anything else (504, another 5xx, no answer, or an answer
    the gateway would not give)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if status == 200 and isinstance(answer, dict):
        return RETURNED
    if status == 404 and op_name == "get" and error == "not_found":
        return RETURNED
    if status in _HTTP_REFUSALS and error in _HTTP_REFUSALS[status]:
        return DISCARDED
    return UNKNOWN


def sidecar_outcome(answer: dict[str, Any]) -> str:
    """What a sidecar's answer (see :mod:`pmmc_ray.ops.sidecar`) means."""
    if answer.get("ok"):
        return RETURNED
    if answer.get("kind") in ("invalid", "rejected", "not_sent"):
        return DISCARDED
    return UNKNOWN


# --- the history ---------------------------------------------------------------------------


def boot_id() -> str | None:
    """This machine's boot id (Linux): the same for every process until a reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


class _Entry:
    __slots__ = ("call", "call_mono", "client", "done", "op", "result", "ret", "ret_mono")

    def __init__(self, client: str, op: tuple) -> None:
        self.client, self.op = client, op
        self.call, self.call_mono = time.time(), time.monotonic()
        self.ret: float | None = None
        self.ret_mono: float | None = None
        self.result: Any = None
        self.done = False

    def line(self, boot: str | None) -> str:
        return json.dumps(
            {
                "client": self.client,
                "call": self.call,
                "return": self.ret,
                "op": list(self.op),
                "result": self.result,
                "call_mono": self.call_mono,
                "return_mono": self.ret_mono,
                "boot": boot,
            }
        )


class HistoryLog:
    """One process's record of its users' operations (thread- and greenlet-safe).

    ``begin`` when an operation is sent; then exactly one of ``returned`` (known
    result), ``unknown`` (it may or may not have taken effect) or ``discard`` (it
    certainly changed nothing: refused as malformed, or never sent), or ``settle``
    with one of :data:`RETURNED`, :data:`UNKNOWN`, :data:`DISCARDED`. Operations still
    open when the log is drained for the last time count as unknown.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, _Entry] = {}
        self._finished: list[_Entry] = []
        self.boot = boot_id()

    def begin(self, client: str, op: tuple) -> _Entry:
        e = _Entry(client, op)
        with self._lock:
            self._open[id(e)] = e
        return e

    def settle(self, e: _Entry, outcome: str, result: Any = None) -> None:
        if outcome == RETURNED:
            self.returned(e, result)
        elif outcome == DISCARDED:
            self.discard(e)
        elif outcome == UNKNOWN:
            self.unknown(e)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")

    def returned(self, e: _Entry, result: Any) -> None:
        self._finish(e, (time.time(), time.monotonic()), result, keep=True)

    def unknown(self, e: _Entry) -> None:
        self._finish(e, None, None, keep=True)

    def discard(self, e: _Entry) -> None:
        self._finish(e, None, None, keep=False)

    def _finish(self, e: _Entry, ret: tuple[float, float] | None, result: Any, keep: bool) -> None:
        with self._lock:
            if self._open.pop(id(e), None) is None:
                return  # already drained as unknown
            if ret is not None:
                e.ret, e.ret_mono = ret
            e.result, e.done = result, True
            if keep:
                self._finished.append(e)

    def drain(self, final: bool = False) -> list[str]:
        """JSON lines of the operations finished since the last drain (and, if
        ``final``, of every open one, as unknown)."""
        with self._lock:
            out, self._finished = self._finished, []
            if final:
                out += self._open.values()
                self._open = {}
        return [e.line(self.boot) for e in out]


def load_histories(
    paths: Iterable[str | Path], skew_s: float = 0.0, clock: str = "auto"
) -> tuple[list[Any], str]:
    """Operations of several jsonl history files, each interval widened by ``skew_s``,
    and the clock their times come from: ``clock="wall"`` (``call``/``return``),
    ``"monotonic"`` (``call_mono``/``return_mono``; every record must have them, from
    one boot of one machine) or ``"auto"`` (monotonic when it can be)."""
    from ..check import Operation, parse_jsonl
    from ..check.history import HistoryFormatError

    if skew_s < 0:
        raise ValueError("skew_s must be >= 0")
    if clock not in ("auto", "wall", "monotonic"):
        raise ValueError(f"clock must be auto, wall or monotonic, not {clock!r}")
    ops: list[Operation] = []
    monos: list[tuple[Any, Any]] = []
    boots: set[Any] = set()
    for p in paths:
        file_ops = parse_jsonl(p)  # validated, in line order
        with open(p, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        if len(records) != len(file_ops):
            raise HistoryFormatError(p, None, "could not pair records with operations")
        ops += file_ops
        for r in records:
            monos.append((r.get("call_mono"), r.get("return_mono")))
            boots.add(r.get("boot"))
    one_machine = (
        len(boots) == 1
        and None not in boots
        and all(_mono_ok(o, c, r) for o, (c, r) in zip(ops, monos, strict=True))
    )
    if clock == "monotonic" and not one_machine:
        raise ValueError("monotonic times need every record from one boot of one machine")
    if clock == "auto":
        clock = "monotonic" if one_machine else "wall"
    if clock == "monotonic":
        ops = [
            Operation(o.client, float(c), None if o.ret is None else float(r), o.op, o.result)
            for o, (c, r) in zip(ops, monos, strict=True)
        ]
    if skew_s:
        ops = [
            Operation(
                o.client, o.call - skew_s, None if o.ret is None else o.ret + skew_s, o.op, o.result
            )
            for o in ops
        ]
    return ops, clock


def _mono_ok(o: Any, call: Any, ret: Any) -> bool:
    def num(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    if not num(call):
        return False
    if o.ret is None:
        return ret is None
    return num(ret) and ret >= call


def check_histories(
    paths: Iterable[str | Path],
    *,
    skew_s: float = 0.0,
    timeout_s: float = 120.0,
    clock: str = "auto",
) -> dict[str, Any]:
    """Check the merged histories against the KV model; a JSON-able verdict (``clock``
    says which times were checked, see :func:`load_histories`)."""
    from ..check import KV_MODEL, check

    paths = [Path(p) for p in paths]
    ops, used = load_histories(paths, skew_s, clock)
    res = check(ops, KV_MODEL, timeout=timeout_s)
    return {
        "verdict": res.verdict,
        "ops": res.ops,
        "unknown_outcome": sum(1 for o in ops if o.ret is None),
        "clients": len({o.client for o in ops}),
        "partitions": res.partitions,
        "elapsed_s": round(res.elapsed, 2),
        "skew_s": skew_s,
        "clock": used,
        "files": [str(p) for p in paths],
        "explanation": res.explanation,
    }


def read_locust_stats(csv_prefix: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of Locust's ``<prefix>_stats.csv`` by name ("Aggregated" is the total)."""
    path = Path(f"{csv_prefix}_stats.csv")
    out: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            name = row.get("Name") or ""
            kind = row.get("Type") or ""
            out[name if name == "Aggregated" else f"{kind} {name}".strip()] = row
    return out
