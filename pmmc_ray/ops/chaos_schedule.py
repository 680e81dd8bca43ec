"""The chaos schedule: fault kinds and :func:`make_schedule`, a pure function of the seed.

:func:`make_schedule` returns a list of :class:`Fault` episodes that never overlap: a
warm-up, then rounds in which every enabled kind appears (shuffled by the seed), each
episode followed by a quiet gap, then a quiet tail. Targets are symbolic ("the active
leader", "acceptor 1 of the current configuration", "every replica"); :func:`resolve`
turns one into actor names with a :class:`View` of the deployment when the episode
starts. Nothing here touches Ray: :mod:`.chaos` applies the schedule.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Fault",
    "GROUPS",
    "KILL_METHODS",
    "KINDS",
    "KIND_HELP",
    "LAGGING",
    "ROLES",
    "View",
    "describe",
    "expand_kinds",
    "make_schedule",
    "planned_kills",
    "resolve",
]

# --- fault kinds ---------------------------------------------------------------------------

KINDS: tuple[str, ...] = (
    "kill-leader",
    "kill-acceptors",
    "kill-replicas",
    "kill-role",
    "kill-several",
    "drop",
    "delay",
    "duplicate",
    "cut-links",
    "partition-leader",
    "partition-acceptors",
    "pause",
    "node-kill",
    "disk-loss",
    "failover-lagging-replica",
)
"""Every kind of fault episode (see :data:`KIND_HELP`)."""

KIND_HELP: dict[str, str] = {
    "kill-leader": "the active leader is killed",
    "kill-acceptors": "a minority (f) of the acceptors are killed at once",
    "kill-replicas": "every replica is killed at once",
    "kill-role": "one actor of a role (the least killed role so far) is killed",
    "kill-several": "several roles killed together (each time a scout and a commander too)",
    "drop": "every actor drops a share of its outgoing messages",
    "delay": "every actor delays its outgoing messages (reordering them)",
    "duplicate": "every actor sends a share of its messages twice",
    "cut-links": (
        "every actor's data-plane connections reset again and again (frames in flight lost; "
        "they reconnect)"
    ),
    "partition-leader": "the active leader, its scout and commander cut off (both ways or one way)",
    "partition-acceptors": "a minority of acceptors cut off (both ways or one way)",
    "pause": "one actor's process stopped (SIGSTOP) and resumed (SIGCONT): the slow node",
    "node-kill": "a whole worker node killed hard (a fresh node joins after it)",
    "disk-loss": "a worker node killed with its disk: its acceptor is replaced through the log",
    "failover-lagging-replica": (
        "one replica cut off and lagging, the other replica cut off from the passive leader, "
        "every acceptor restarted in turn, then the active leader killed: the new leader must "
        "learn the decided slots from the acceptors (paper 2.4, pmax) and not from replicas"
    ),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "kill": ("kill-leader", "kill-acceptors", "kill-replicas", "kill-role", "kill-several"),
    "network": (
        "drop",
        "delay",
        "duplicate",
        "cut-links",
        "partition-leader",
        "partition-acceptors",
    ),
    "pause": ("pause",),
    "node": ("node-kill", "disk-loss"),
    "combined": ("failover-lagging-replica",),
    "all": KINDS,
}
"""Names accepted by ``--faults`` besides the kinds themselves."""

ROLES = ("leader", "acceptor", "replica", "scout", "commander")
KILL_METHODS = ("ray.kill", "sigkill")


def expand_kinds(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Kinds named by a comma list of kinds and groups (``"kill,pause"``), in KINDS order.

    Raises ValueError for an unknown name."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for n in names:
        if not n:
            continue
        if n in GROUPS:
            chosen.update(GROUPS[n])
        elif n in KINDS:
            chosen.add(n)
        else:
            raise ValueError(
                f"unknown fault kind {n!r}; kinds: {', '.join(KINDS)}; groups: {', '.join(GROUPS)}"
            )
    if not chosen:
        raise ValueError("no fault kind given")
    return tuple(k for k in KINDS if k in chosen)


# --- the schedule (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One planned fault episode. ``targets`` are symbolic, resolved when it starts:

    ``leader:active``, ``scout:active``, ``commander:active`` (the active leader's),
    ``leader:passive`` (and its scout/commander), ``acceptor:i`` / ``replica:i`` (the
    i-th member of the current configuration, modulo their number), ``replica:*``
    (every replica), ``node:leader:active`` / ``node:acceptor:i`` (the worker node that
    runs it).
    """

    index: int
    at_s: float
    kind: str
    targets: tuple[str, ...] = ()
    method: str = ""
    duration_s: float = 0.0
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at_s": self.at_s,
            "kind": self.kind,
            "targets": list(self.targets),
            "method": self.method,
            "duration_s": self.duration_s,
            "params": dict(self.params),
        }


def describe(f: Fault) -> str:
    """One line for the printed schedule."""
    what = ", ".join(f.targets)
    extra = ", ".join(f"{k}={v}" for k, v in f.params)
    parts = [f"#{f.index:<3d} t={f.at_s:7.1f}s  {f.kind:<19s}"]
    if what:
        parts.append(what)
    if f.method:
        parts.append(f"via {f.method}")
    if extra:
        parts.append(f"({extra})")
    if f.duration_s:
        parts.append(f"for {f.duration_s:g}s")
    return "  ".join(parts)


_GAP_S = {
    "kill": (3.0, 5.0),
    "network": (3.0, 5.0),
    "pause": (3.0, 5.0),
    "node": (8.0, 12.0),
    "combined": (4.0, 6.0),
}


def _group_of(kind: str) -> str:
    return next(g for g in _GAP_S if kind in GROUPS[g])


LAGGING = "failover-lagging-replica"


def _kill_roles(targets: Iterable[str], replicas: int, acceptors: int = 3) -> list[str]:
    out: list[str] = []
    for t in targets:
        role, _, which = t.partition(":")
        if role == "node":
            continue
        many = replicas if role == "replica" else acceptors
        out += [role] * (many if which == "*" else 1)
    return out


def make_schedule(
    seed: int,
    duration_s: float,
    kinds: Iterable[str] = KINDS,
    *,
    f: int = 1,
    replicas: int | None = None,
    warmup_s: float = 5.0,
    tail_s: float = 6.0,
) -> list[Fault]:
    """The seeded fault schedule for a run of ``duration_s`` seconds (pure: the same
    arguments always give the same list).

    Rounds: each round holds, in an order shuffled by the seed, two leader kills (one
    with ``ray.kill``, one with SIGKILL), one kill of f acceptors, of every replica, of
    several roles together, two kills of single actors (the roles killed least so far),
    and one episode of every other enabled kind. Each episode is followed by a quiet gap
    (3-5 s; 8-12 s after a node fault). Rounds go on while episodes fit before
    ``duration_s - tail_s``.
    """
    kinds = expand_kinds(kinds)
    if duration_s <= 0 or f < 1:
        raise ValueError("duration_s must be > 0 and f >= 1")
    n_acc = 2 * f + 1
    n_rep = replicas if replicas is not None else f + 1
    rng = random.Random(f"pmmc-chaos/{seed}")
    killed = dict.fromkeys(ROLES, 0)
    counters: dict[str, int] = {}
    out: list[Fault] = []
    t = warmup_s
    end = duration_s - tail_s

    def nth(key: str) -> int:
        counters[key] = counters.get(key, 0) + 1
        return counters[key] - 1

    def alternate(key: str) -> str:
        # Both methods for every kind, starting with the one the seed and kind pick.
        return KILL_METHODS[(nth(key) + seed + zlib.crc32(key.encode())) % 2]

    def one_of(xs: tuple[str, ...], key: str) -> str:
        return xs[(nth(key) + seed) % len(xs)]

    def minority() -> tuple[str, ...]:
        return tuple(f"acceptor:{i}" for i in sorted(rng.sample(range(n_acc), f)))

    def episode(kind: str) -> Fault:
        idx = len(out)
        targets: tuple[str, ...] = ()
        method = ""
        dur = 0.0
        params: list[tuple[str, Any]] = []
        if kind == "kill-leader":
            targets, method = ("leader:active",), alternate(kind)
        elif kind == "kill-acceptors":
            targets, method = minority(), alternate(kind)
        elif kind == "kill-replicas":
            targets, method = ("replica:*",), alternate(kind)
        elif kind == "kill-role":
            role = min(ROLES, key=lambda r: (killed[r], ROLES.index(r)))
            which = {
                "leader": ("passive", "active"),
                "scout": ("active", "passive"),
                "commander": ("active", "passive"),
                "acceptor": tuple(str(i) for i in range(n_acc)),
                "replica": tuple(str(i) for i in range(n_rep)),
            }[role]
            targets = (f"{role}:{one_of(which, 'which-' + role)}",)
            method = alternate("kill-role-" + role)
        elif kind == "kill-several":
            variant = nth("variant-" + kind) % 3
            a = rng.randrange(n_acc)
            r = rng.randrange(n_rep)
            if variant == 0:  # the leader's process group, as if its node lost power
                targets = ("leader:active", "scout:active", "commander:active")
            elif variant == 1:
                targets = (f"acceptor:{a}", f"replica:{r}", "scout:passive", "commander:active")
            else:
                targets = ("leader:passive", f"acceptor:{a}", "scout:active", "commander:passive")
            method = alternate(kind)
        elif kind == "drop":
            dur = round(rng.uniform(4.0, 8.0), 1)
            params = [("drop", round(rng.uniform(0.05, 0.3), 2))]
        elif kind == "delay":
            dur = round(rng.uniform(4.0, 8.0), 1)
            params = [("delay_ms", rng.randrange(20, 250))]
        elif kind == "duplicate":
            dur = round(rng.uniform(4.0, 8.0), 1)
            params = [("duplicate", round(rng.uniform(0.1, 0.5), 2))]
        elif kind == "cut-links":
            dur = round(rng.uniform(3.0, 6.0), 1)
            params = [("every_s", round(rng.uniform(0.3, 1.0), 1))]
        elif kind == "partition-leader":
            dur = round(rng.uniform(4.0, 8.0), 1)
            targets = ("leader:active", "scout:active", "commander:active")
            params = [("direction", one_of(("both", "out", "in"), kind))]
        elif kind == "partition-acceptors":
            dur = round(rng.uniform(4.0, 8.0), 1)
            targets = minority()
            params = [("direction", one_of(("in", "both", "out"), kind))]
        elif kind == "pause":
            dur = round(rng.uniform(2.0, 6.0), 1)
            choices = ("leader:active", f"acceptor:{rng.randrange(n_acc)}", "replica:0")
            choices += ("commander:active", f"replica:{n_rep - 1}")
            targets = (one_of(choices, kind),)
        elif kind == "node-kill":
            targets = ("node:leader:active",)
        elif kind == "disk-loss":
            targets = (f"node:acceptor:{rng.randrange(n_acc)}",)
        elif kind == "failover-lagging-replica":
            targets = (f"replica:{n_rep - 1}", "acceptor:*", "leader:active")
            targets += ("scout:active", "commander:active")
            method = alternate(kind)
            dur = 18.0  # an estimate: each acceptor is killed once the previous one is back
        else:  # pragma: no cover - expand_kinds rejects it
            raise ValueError(kind)
        if kind.startswith("kill-") or kind == LAGGING:
            for role in _kill_roles(targets[1:] if kind == LAGGING else targets, n_rep, n_acc):
                killed[role] += 1
        return Fault(idx, round(t, 1), kind, targets, method, dur, tuple(params))

    while True:
        plan: list[str] = []
        for k in kinds:
            plan += [k] * {"kill-leader": 2, "kill-role": 2}.get(k, 1)
        rng.shuffle(plan)
        added = False
        for kind in plan:
            ep = episode(kind)
            lo, hi = _GAP_S[_group_of(kind)]
            gap = rng.uniform(lo, hi)
            if t + ep.duration_s + gap > end:
                return out
            out.append(ep)
            added = True
            t += ep.duration_s + gap
        if not added:
            return out


def planned_kills(schedule: Iterable[Fault], replicas: int = 2, f: int = 1) -> dict[str, int]:
    """Actor kills per role that ``schedule`` plans (node faults not counted)."""
    counts = dict.fromkeys(ROLES, 0)
    for fault in schedule:
        if fault.kind.startswith("kill-") or fault.kind == LAGGING:
            targets = fault.targets[1:] if fault.kind == LAGGING else fault.targets
            for role in _kill_roles(targets, replicas, 2 * f + 1):
                counts[role] += 1
    return counts


@dataclass(frozen=True)
class View:
    """Who is who when an episode starts: the current configuration and the leader."""

    acceptors: tuple[str, ...]
    replicas: tuple[str, ...]
    leaders: tuple[str, ...]
    active: str | None


def resolve(target: str, view: View) -> list[str]:
    """The actor names a symbolic target means in ``view`` (pure)."""
    role, _, which = target.partition(":")
    if role == "node":
        return resolve(which, view)
    if role in ("leader", "scout", "commander"):
        lead = view.active if view.active in view.leaders else view.leaders[0]
        if which == "passive":
            others = [x for x in view.leaders if x != lead]
            lead = others[0] if others else lead
        num = lead.removeprefix("leader-")
        return [f"{role}-{num}"]
    members = view.acceptors if role == "acceptor" else view.replicas
    if which == "*":
        return list(members)
    return [members[int(which) % len(members)]]
