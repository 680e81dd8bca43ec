"""``pmmc-ray chaos``: a seeded nemesis against a live deployment, with every check.

Theory of operation. A run has four parts:

1. **The schedule** (:func:`make_schedule`): a pure function of the seed, the duration,
   the fault kinds asked for and f. It returns a list of :class:`Fault` episodes that
   never overlap: a warm-up, then rounds in which every enabled kind appears (shuffled
   by the seed), each episode followed by a quiet gap, then a quiet tail. Targets are
   symbolic ("the active leader", "acceptor 1 of the current configuration", "every
   replica"), because who leads, or which acceptors are members, is only known when the
   episode starts. The same seed always prints and applies the same schedule; real Ray's
   timing varies, so the same seed does not replay the same interleaving.
2. **The workload** (:class:`Workload`): client threads with seeded random choices
   record every operation (invocation and completion on ``time.monotonic()``, result,
   or an unknown outcome) through :class:`~pmmc_ray.runtime.client.HistoryRecorder`.
   Appends of unique tokens go to a few log keys, puts/gets/cas to register keys; keys
   change every ``key_window_s`` seconds so that no key's history gets too long for the
   linearizability checker.
3. **The nemesis** (:class:`Nemesis`) applies each episode at its planned time (or
   later: before each episode it waits until every member of the current configuration
   answers, so that faults compound only where the schedule says so): actor kills
   (``ray.kill(..., no_restart=False)`` or SIGKILL of the actor's worker process),
   network faults through the runtime's transport (drop, delay, duplicate, partitions
   that isolate the active leader or a minority of acceptors, both ways or one way),
   pauses (SIGSTOP, then SIGCONT), and on a multi-node cluster it started itself, whole
   node kills and the loss of a node's disk (its acceptor is then replaced through the
   log). Right after a fault is applied, a probe client writes once: the time to that
   write's acknowledgement is the fault's ``next_write_s``.
4. **Heal and check**: every fault off, every paused process resumed, every member
   answering; then the history must be linearizable (``unknown`` from the checker's
   time budget is reported as undecided, never as a pass), every acknowledged append
   must be in the final reads exactly once (an unacknowledged one at most once), the
   replicas must hold identical state, and every member of the current configuration
   (with its scout and commander) must be alive and not refusing.

Nothing here prints; progress goes to a callback. :mod:`.chaos_report` renders the
summary as an HTML page.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .chaos_schedule import (
    GROUPS,
    KINDS,
    LAGGING,
    ROLES,
    Fault,
    View,
    describe,
    expand_kinds,
    make_schedule,
    planned_kills,
    resolve,
)
from .nodeloss import wait_refusing

__all__ = [
    "GROUPS",
    "KINDS",
    "ChaosResult",
    "Fault",
    "FaultRecord",
    "describe",
    "expand_kinds",
    "make_schedule",
    "planned_kills",
    "resolve",
    "run_chaos",
]

# --- records ---------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    """What happened to one planned episode."""

    index: int
    kind: str
    planned_at_s: float
    method: str = ""
    targets: list[str] = field(default_factory=list)  # resolved actor names (or node)
    killed: list[str] = field(default_factory=list)  # actors that were killed
    # of those, the ones killed by ray.kill though ``method`` is sigkill (not local)
    ray_killed_instead: list[str] = field(default_factory=list)
    start_s: float | None = None  # fault applied (seconds after the workload started)
    end_s: float | None = None  # healed (== start_s for a kill)
    settle_s: float = 0.0  # waited for every member to answer before it
    skipped: str = ""  # why it was not applied
    killed_active_leader: bool = False
    next_write_s: float | None = None  # fault applied -> a probe write acknowledged
    unavailable_s: float | None = None  # longest stretch without an acknowledged write
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        who = ",".join(self.targets)
        return f"{self.kind} {who}".strip()


@dataclass
class ChaosResult:
    """Everything a run measured and decided (see :meth:`to_dict`)."""

    seed: int
    duration_s: float
    clients: int
    kinds: list[str]
    schedule: list[Fault] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)
    injected_bug: str | None = None
    elapsed_s: float = 0.0
    ops: list[tuple[float, float | None, str, str]] = field(default_factory=list, repr=False)
    """(call, return, kind, outcome) relative to the workload's start."""
    outcomes: dict[str, int] = field(default_factory=dict)
    client_errors: list[str] = field(default_factory=list)
    acked_appends: int = 0
    unacked_appends: int = 0
    lost_appends: list[str] = field(default_factory=list)
    duplicated_appends: list[str] = field(default_factory=list)
    final_reads_error: str = ""
    linearizable: str | None = None
    lin_detail: str = ""
    lin_ops: int = 0
    lin_elapsed_s: float = 0.0
    replicas_converged: bool | None = None
    replica_states: dict[str, Any] = field(default_factory=dict)
    roles_alive: bool | None = None
    role_problems: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    healed_in_s: float | None = None
    unfinished_clients: list[str] = field(default_factory=list)

    # --- verdicts ---------------------------------------------------------------------------

    def violations(self) -> list[str]:
        out: list[str] = []
        if self.linearizable == "not_linearizable":
            out.append(f"history not linearizable: {self.lin_detail}")
        if self.lost_appends:
            out.append(f"{len(self.lost_appends)} acknowledged appends lost")
        if self.duplicated_appends:
            out.append(f"{len(self.duplicated_appends)} appends applied more than once")
        if self.final_reads_error:
            out.append(f"final reads failed: {self.final_reads_error}")
        # None (never checked) counts as failed: a check that did not run is no pass.
        if self.replicas_converged is not True:
            out.append("replicas did not converge")
        if self.roles_alive is not True:
            out.append("roles not alive or refusing: " + "; ".join(self.role_problems[:5]))
        if not any(o[3] == "ok" for o in self.ops):
            out.append("no operation completed")
        return out

    @property
    def undecided(self) -> bool:
        """The checker could not decide, or clients were still running after the stop
        (their later operations could escape the final reads)."""
        return self.linearizable not in ("linearizable", "not_linearizable") or bool(
            self.unfinished_clients
        )

    @property
    def ok(self) -> bool:
        return not self.violations() and not self.undecided

    # --- figures ----------------------------------------------------------------------------

    def kills_by_role(self) -> dict[str, int]:
        out = dict.fromkeys(ROLES, 0)
        for r in self.faults:
            for n in r.killed:
                role = n.split("-", 1)[0]
                out[role] = out.get(role, 0) + 1
        return out

    def kills_by_method(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.faults:
            if r.killed and r.start_s is not None:
                m = r.method or "node"
                instead = len(set(r.ray_killed_instead) & set(r.killed))
                out[m] = out.get(m, 0) + len(r.killed) - instead
                if instead:
                    out["ray.kill"] = out.get("ray.kill", 0) + instead
        return {m: n for m, n in out.items() if n}

    def faults_by_kind(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.faults:
            d = out.setdefault(r.kind, {"planned": 0, "applied": 0, "skipped": 0})
            d["planned"] += 1
            d["applied" if r.start_s is not None else "skipped"] += 1
        return out

    def recovery(self) -> dict[str, Any]:
        def stats(xs: list[float]) -> dict[str, Any]:
            if not xs:
                return {"n": 0, "median": None, "max": None}
            return {
                "n": len(xs),
                "median": round(statistics.median(xs), 3),
                "max": round(max(xs), 3),
            }

        applied = [r for r in self.faults if r.start_s is not None]
        lk = [r.next_write_s for r in applied if r.killed_active_leader]
        by_kind: dict[str, Any] = {}
        for kind in dict.fromkeys(r.kind for r in applied):
            rs = [r for r in applied if r.kind == kind]
            by_kind[kind] = {
                "next_write_s": stats([r.next_write_s for r in rs if r.next_write_s is not None]),
                "unavailable_s": stats(
                    [r.unavailable_s for r in rs if r.unavailable_s is not None]
                ),
                "no_write_acknowledged": sum(1 for r in rs if r.next_write_s is None),
            }
        return {
            "leader_kill_to_next_write_s": stats([x for x in lk if x is not None]),
            "leader_kills_without_next_write": sum(1 for x in lk if x is None),
            "by_kind": by_kind,
        }

    def timeline(self) -> dict[str, list]:
        """Per second of the run: acknowledged operations, unknown outcomes, latency
        percentiles (ms) of the operations acknowledged in that second."""
        end = max(1, int(self.elapsed_s) + 1)
        done: list[list[float]] = [[] for _ in range(end)]
        unknown = [0] * end
        for call, ret, _kind, outcome in self.ops:
            if outcome == "ok" and ret is not None and 0 <= int(ret) < end:
                done[int(ret)].append((ret - call) * 1000.0)
            elif outcome == "unknown" and 0 <= int(call) < end:
                unknown[int(call)] += 1

        def pct(xs: list[float], q: float) -> float | None:
            if not xs:
                return None
            xs = sorted(xs)
            return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)

        return {
            "t": list(range(end)),
            "ops": [len(x) for x in done],
            "unknown": unknown,
            "p50_ms": [pct(x, 0.5) for x in done],
            "p90_ms": [pct(x, 0.9) for x in done],
            "p99_ms": [pct(x, 0.99) for x in done],
            "max_ms": [round(max(x), 1) if x else None for x in done],
        }

    def to_dict(self) -> dict[str, Any]:
        acked_ok = [o for o in self.ops if o[3] == "ok"]
        lat = sorted((o[1] - o[0]) * 1000.0 for o in acked_ok if o[1] is not None)

        def p(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

        return {
            "ok": self.ok,
            "verdicts": {
                "linearizable": self.linearizable,
                "linearizability_detail": self.lin_detail,
                "checked_operations": self.lin_ops,
                "check_seconds": round(self.lin_elapsed_s, 2),
                "lost_acknowledged_writes": len(self.lost_appends),
                "duplicated_writes": len(self.duplicated_appends),
                "replicas_converged": self.replicas_converged,
                "roles_alive": self.roles_alive,
                "violations": self.violations(),
                "undecided": self.undecided,
            },
            "seed": self.seed,
            "duration_s": self.duration_s,
            "elapsed_s": round(self.elapsed_s, 1),
            "clients": self.clients,
            "fault_kinds": self.kinds,
            "injected_bug": self.injected_bug,
            "cluster": self.cluster,
            "faults_by_kind": self.faults_by_kind(),
            "kills_by_role": self.kills_by_role(),
            "kills_by_method": self.kills_by_method(),
            "operations_by_outcome": dict(sorted(self.outcomes.items())),
            "throughput_ops_per_s": round(len(acked_ok) / self.elapsed_s, 1)
            if self.elapsed_s
            else None,
            "latency_ms": {"p50": p(0.5), "p90": p(0.9), "p99": p(0.99), "max": p(1.0)},
            "acknowledged_appends": self.acked_appends,
            "unacknowledged_appends": self.unacked_appends,
            "lost_appends": self.lost_appends[:20],
            "duplicated_appends": self.duplicated_appends[:20],
            "final_reads_error": self.final_reads_error,
            "recovery": self.recovery(),
            "healed_in_s": self.healed_in_s,
            "replica_states": self.replica_states,
            "role_problems": self.role_problems,
            "retired_members": self.retired,
            "client_errors": self.client_errors[:10],
            "unfinished_clients": self.unfinished_clients,
            "schedule": [f.to_dict() for f in self.schedule],
            "faults": [asdict(r) for r in self.faults],
            "timeline": self.timeline(),
        }


# --- the workload ------------------------------------------------------------------------------


class Workload:
    """Client threads with seeded choices over rotating keys (see the module docstring)."""

    LOGS = 4
    REGISTERS = 8

    def __init__(
        self,
        dep: Any,
        recorder: Any,
        *,
        clients: int,
        seed: int,
        prefix: str,
        key_window_s: float = 20.0,
        op_timeout_s: float = 10.0,
    ) -> None:
        self.dep = dep
        self.recorder = recorder
        self.clients = clients
        self.seed = seed
        self.prefix = prefix
        self.key_window_s = key_window_s
        self.op_timeout_s = op_timeout_s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops: list[tuple[float, float | None, str, str]] = []
        self.outcomes: dict[str, int] = {}
        self.errors: list[str] = []
        self.acked: list[tuple[str, str]] = []  # (log key, token)
        self.unacked: list[tuple[str, str]] = []
        self.log_keys: set[str] = set()
        self.t0 = 0.0
        self.threads: list[threading.Thread] = []

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True, name=f"chaos-client-{i}")
            for i in range(self.clients)
        ]
        for t in self.threads:
            t.start()

    def finish(self, timeout_s: float = 60.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        self.unfinished = [t.name for t in self.threads if t.is_alive()]
        if self.unfinished:
            self.errors.append(f"client threads still running after stop: {self.unfinished}")

    def _note(self, call: float, ret: float | None, kind: str, outcome: str) -> None:
        with self.lock:
            self.ops.append((call - self.t0, None if ret is None else ret - self.t0, kind, outcome))
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _client(self, i: int) -> None:
        from ..runtime.client import outcome_of

        rng = random.Random(f"pmmc-chaos/{self.seed}/client-{i}")
        c = self.dep.client(
            timeout_s=self.op_timeout_s, recorder=self.recorder, client_id=f"chaos-{i}"
        )
        seen: dict[str, str | None] = {}
        n = 0
        while not self.stop.is_set():
            n += 1
            w = int((time.monotonic() - self.t0) / self.key_window_s)
            token = f"[{i}.{n}]"
            x = rng.random()
            log_key = f"{self.prefix}-w{w}-log{rng.randrange(self.LOGS)}"
            reg = f"{self.prefix}-w{w}-r{rng.randrange(self.REGISTERS)}"
            if x < 0.30:
                op: tuple = ("append", log_key, token)
                with self.lock:
                    self.log_keys.add(log_key)
            elif x < 0.40:
                op = ("get", log_key)
            elif x < 0.65:
                op = ("get", reg)
            elif x < 0.85:
                op = ("put", reg, f"{i}.{n}")
            else:
                op = ("cas", reg, seen.get(reg), f"{i}.{n}")
            call = time.monotonic()
            try:
                result = c.execute(op)
            except Exception as e:
                outcome = outcome_of(e)
                self._note(call, None, op[0], outcome)
                if op[0] == "append" and outcome in ("unknown", "error"):
                    with self.lock:
                        self.unacked.append((log_key, token))
                if outcome == "error":
                    with self.lock:
                        self.errors.append(f"client {i}: {type(e).__name__}: {e}"[:300])
                    # The client may be mid-command: continue with a new one.
                    c = self.dep.client(
                        timeout_s=self.op_timeout_s,
                        recorder=self.recorder,
                        client_id=f"chaos-{i}-{n}",
                    )
                continue
            self._note(call, time.monotonic(), op[0], "ok")
            if op[0] == "append":
                with self.lock:
                    self.acked.append((log_key, token))
            elif op[0] in ("get", "put"):
                seen[op[1]] = result if op[0] == "get" else op[2]
            elif op[0] == "cas" and result:
                seen[op[1]] = op[3]


class Probes:
    """Writes issued right after each fault: the time to the next acknowledged write."""

    def __init__(self, dep: Any, recorder: Any, prefix: str, size: int = 3) -> None:
        self.dep = dep
        self.recorder = recorder
        self.prefix = prefix
        self.lock = threading.Lock()
        self.idle: list[tuple[int, Any]] = []
        self.made = 0
        self.threads: list[threading.Thread] = []
        for _ in range(size):
            n, c = self._new()
            try:
                c.put(f"{prefix}-probe{n}", "open")  # opens its session before any fault
            except Exception:
                pass
            self.idle.append((n, c))

    def _new(self) -> tuple[int, Any]:
        n = self.made
        self.made += 1
        return n, self.dep.client(
            timeout_s=60.0, recorder=self.recorder, client_id=f"chaos-probe-{n}"
        )

    def fire(self, rec: FaultRecord, t_fault: float, t0: float) -> None:
        with self.lock:
            probe = self.idle.pop() if self.idle else None
        if probe is None:
            probe = self._new()
            rec.notes.append("probe client opened its session after the fault")
        n, c = probe

        def run() -> None:
            try:
                c.put(f"{self.prefix}-probe{n}", f"after-{rec.index}")
                rec.next_write_s = round(time.monotonic() - t_fault, 3)
            except Exception as e:
                rec.notes.append(f"probe write failed: {type(e).__name__}")
            with self.lock:
                self.idle.append(probe)

        th = threading.Thread(target=run, daemon=True, name=f"chaos-probe-{rec.index}")
        self.threads.append(th)
        th.start()

    def join(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        for th in self.threads:
            th.join(timeout=max(0.1, deadline - time.monotonic()))


# --- the nemesis ---------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Nemesis:
    """Applies :class:`Fault` episodes to a deployment (see the module docstring)."""

    def __init__(
        self,
        dep: Any,
        *,
        cluster: Any = None,
        say: Callable[[str], None],
        seed: int,
    ) -> None:
        import ray

        self.dep = dep
        self.cluster = cluster
        self.say = say
        self.rng = random.Random(f"pmmc-chaos/{seed}/nemesis")
        self.local_ip = ray.util.get_node_ip_address()
        self.paused: set[int] = set()
        self.work: Workload | None = None  # for the lagging replica's own clients
        self._last_members: tuple[tuple[str, ...], ...] | None = None  # see view()

    # --- views ----------------------------------------------------------------------------

    def view(self) -> View:
        from ..runtime.workload import active_leader

        try:
            cur = self.dep.configurations(timeout_s=5.0)[-1]
            members = (tuple(cur["acceptors"]), tuple(cur["replicas"]), tuple(cur["leaders"]))
            self._last_members = members
        except Exception:
            # No replica answered: the last configuration seen (after an acceptor was
            # replaced, the deployed one is out of date), else the deployed one.
            c = self.dep.config
            deployed = (tuple(c.acceptor_ids()), tuple(c.replica_ids()), tuple(c.leader_ids()))
            members = self._last_members or deployed
        return View(*members, active_leader(self.dep, wait_s=5.0))

    def members(self, view: View) -> list[str]:
        out = [*view.acceptors, *view.replicas]
        for lid in view.leaders:
            num = lid.removeprefix("leader-")
            out += [lid, f"scout-{num}", f"commander-{num}"]
        return out

    def health(self, view: View) -> list[str]:
        """Problems of the current members (empty: all answer and none refuses)."""
        problems = []
        for n, st in self.dep._gather("status", 5.0, names=self.members(view)).items():
            if not isinstance(st, dict) or "error" in st:
                err = st.get("error") if isinstance(st, dict) else st
                problems.append(f"{n}: {err}")
            elif st.get("refusing"):
                problems.append(f"{n} refusing: {st['refusing'][:120]}")
        return problems

    def settle(self, timeout_s: float) -> tuple[float, list[str]]:
        t = time.monotonic()
        problems: list[str] = []
        while True:
            problems = self.health(self.view())
            if not problems or time.monotonic() - t > timeout_s:
                return time.monotonic() - t, problems
            time.sleep(0.5)

    def _where(self, names: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for n, w in self.dep._gather("where", 5.0, names=names).items():
            if isinstance(w, dict) and "pid" in w:
                out[n] = w
        return out

    # --- episodes -------------------------------------------------------------------------

    def apply(self, fault: Fault, rec: FaultRecord, t0: float, probes: Probes) -> None:
        view = self.view()
        rec.params = dict(fault.params)
        if fault.kind.startswith("kill-"):
            self._kill(fault, rec, view, t0, probes)
        elif fault.kind in ("drop", "delay", "duplicate"):
            self._lossy(fault, rec, t0, probes)
        elif fault.kind == "cut-links":
            self._cut_links(fault, rec, t0, probes)
        elif fault.kind.startswith("partition-"):
            self._partition(fault, rec, view, t0, probes)
        elif fault.kind == "pause":
            self._pause(fault, rec, view, t0, probes)
        elif fault.kind in ("node-kill", "disk-loss"):
            self._node(fault, rec, view, t0, probes)
        elif fault.kind == LAGGING:
            self._lagging_failover(fault, rec, view, t0, probes)
        else:  # pragma: no cover
            raise ValueError(fault.kind)

    def _kill(self, fault: Fault, rec: FaultRecord, view: View, t0: float, probes: Probes) -> None:
        names: list[str] = []
        for t in fault.targets:
            names += [n for n in resolve(t, view) if n not in names]
        rec.targets = names
        where = self._where(names)
        if fault.method == "sigkill":
            remote = [n for n in names if where.get(n, {}).get("node_ip") != self.local_ip]
            if remote:
                rec.notes.append(f"not on this machine, not killed: {remote}")
            names = [n for n in names if n in where and n not in remote]
        if not names:
            rec.skipped = "no target could be reached"
            return
        start = time.monotonic()
        gone: list[str] = []
        for n in names:
            if fault.method == "sigkill":
                try:
                    os.kill(int(where[n]["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    rec.notes.append(f"{n}: process already gone, not counted as killed")
                    gone.append(n)
            else:
                self.dep.kill(n, restart=True)
        names = [n for n in names if n not in gone]
        if not names:
            rec.skipped = "every target's process was already gone"
            return
        # ray.kill is asynchronous: the probe starts once the processes are gone, so it
        # cannot be answered by the actor that was being killed (measured from the kill).
        local = [
            int(where[n]["pid"])
            for n in names
            if n in where and where[n].get("node_ip") == self.local_ip
        ]
        deadline = time.monotonic() + 5.0
        while any(_pid_alive(p) for p in local) and time.monotonic() < deadline:
            time.sleep(0.01)
        rec.killed = list(names)
        rec.killed_active_leader = view.active in names
        rec.start_s = rec.end_s = round(start - t0, 3)
        probes.fire(rec, start, t0)

    def _kill_and_wait(
        self, name: str, rec: FaultRecord, method: str, timeout_s: float = 60.0
    ) -> bool:
        """Kill ``name`` and wait until it answers again from a new process. SIGKILL
        reaches only this machine's processes: elsewhere it is ray.kill, noted in ``rec``."""
        w = self._where([name]).get(name)
        if w is None:
            return False
        if method == "sigkill" and w.get("node_ip") == self.local_ip:
            try:
                os.kill(int(w["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            if method == "sigkill":
                rec.ray_killed_instead.append(name)
                rec.notes.append(f"{name}: not on this machine, killed by ray.kill instead")
            self.dep.kill(name, restart=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = self._where([name]).get(name)
            if now is not None and now["pid"] != w["pid"]:
                return True
            time.sleep(0.1)
        return False

    def _lagging_failover(
        self, fault: Fault, rec: FaultRecord, view: View, t0: float, probes: Probes
    ) -> None:
        """The other replicas cannot reach the active leader's rival, and the lagging
        replica cannot reach the active leader; 2 s later the lagging replica hears nothing
        any more either (so it stops at slots whose proposals the rival never received
        from anyone else), and clients of its own make it propose into them, to the rival
        only. Every acceptor restarts in turn (a majority always up), then the active
        leader is killed, and cut off once it is back. The rival takes over holding the
        lagging replica's proposals for slots that are long decided: it must take their
        values from the acceptors' votes (pmax), never its own proposals. Everything but
        the replicas' messages to the lagging one is healed first, for 3 s, so that it
        learns those slots from the new leader rather than from its peers. Acceptors that
        forgot their votes on restart let the new leader decide those slots again with
        other commands: the replicas diverge."""
        from ..runtime.client import Client, outcome_of

        lag = resolve(fault.targets[0], view)[0]
        main = [r for r in view.replicas if r != lag]
        active = view.active if view.active in view.leaders else None
        rivals = [x for x in view.leaders if x != active]
        if not main or active is None or not rivals:
            rec.skipped = "needs two replicas, two leaders and an active leader"
            return
        num = active.removeprefix("leader-")
        group = [active, f"scout-{num}", f"commander-{num}"]
        first = [[m, r] for m in main for r in rivals] + [[lag, active]]
        blocked = first + [[o, lag] for o in self.dep.names() if o != lag]
        rec.targets = [lag, *view.acceptors, active]
        work = self.work
        stop = threading.Event()

        def lagging_client(i: int) -> None:
            # Requests that reach the lagging replica, so it proposes into old slots.
            assert work is not None
            c = Client(
                self.dep.config,
                timeout_s=8.0,
                recorder=work.recorder,
                client_id=f"chaos-lag-{rec.index}-{i}",
                replicas=[lag],
            )
            n = 0
            while not stop.is_set():
                n += 1
                op = ("put", f"{work.prefix}-lag{rec.index}-{i}", str(n))
                call = time.monotonic()
                try:
                    c.execute(op)
                    work._note(call, time.monotonic(), "put", "ok")
                except Exception as e:
                    work._note(call, None, "put", outcome_of(e))

        threads = [
            threading.Thread(target=lagging_client, args=(i,), daemon=True) for i in range(2)
        ]
        start = time.monotonic()
        self._set_faults(rec, blocked=first)
        rec.start_s = round(start - t0, 3)
        try:
            time.sleep(2.0)
            self._set_faults(rec, blocked=blocked)
            for th in threads:
                th.start()
            time.sleep(1.5)
            rec.notes.append("cut off: " + self._positions([lag, *main], rivals))
            for a in view.acceptors:
                if self._kill_and_wait(a, rec, fault.method):
                    rec.killed.append(a)
                else:
                    rec.notes.append(f"{a} did not come back within 60s")
                time.sleep(0.3)
            killed_at = time.monotonic()
            for n in group:
                if self._kill_and_wait(n, rec, fault.method):
                    rec.killed.append(n)
            rec.notes.append(
                f"{active} killed at t={killed_at - t0:.1f}s while {', '.join(main)} could not "
                f"reach {', '.join(rivals)} (not in the leader-kill figures); it stays cut "
                "off once restarted, so that a rival takes over"
            )
            others = [o for o in self.dep.names() if o not in group]
            blocked += [[g, o] for g in group for o in others]
            blocked += [[o, g] for g in group for o in others]
            self._set_faults(rec, blocked=blocked)  # the restarted actors start without it
            time.sleep(4.0)
            rec.notes.append("before the heal: " + self._positions([lag, *main], view.leaders))
            # Heal the leaders first: the lagging replica learns the old slots from the
            # new leader (through the acceptors' votes) before its peers can tell it.
            self._set_faults(rec, blocked=[[m, lag] for m in main])
            time.sleep(3.0)
        finally:
            self._set_faults(rec)
            healed = time.monotonic()
            rec.end_s = round(healed - t0, 3)
            stop.set()
            probes.fire(rec, healed, t0)
            rec.notes.append("next write measured from the heal")
            for th in threads:
                if th.is_alive() or th.ident is not None:
                    th.join(timeout=15.0)

    def _positions(self, replicas: list[str], leaders: list[str]) -> str:
        """Where replicas and leaders stand (for the record of an episode)."""
        out = []
        for n, st in self.dep._gather("status", 5.0, names=[*replicas, *leaders]).items():
            if not isinstance(st, dict) or "error" in st:
                out.append(f"{n} not answering")
            elif n in replicas:
                out.append(
                    f"{n} slot_out {st.get('slot_out')} proposals {st.get('proposals')} "
                    f"digest {str(st.get('digest'))[:8]}"
                )
            else:
                ep = (st.get("epochs") or {}).get("0") or {}
                out.append(
                    f"{n} {'active' if ep.get('active') else 'passive'} ballot "
                    f"{ep.get('ballot')} proposals {ep.get('proposals')}"
                )
        return "; ".join(out)

    def _lossy(self, fault: Fault, rec: FaultRecord, t0: float, probes: Probes) -> None:
        self._hold_faults(fault, rec, t0, probes, **dict(fault.params))

    def _hold_faults(
        self, fault: Fault, rec: FaultRecord, t0: float, probes: Probes, **kw: Any
    ) -> None:
        """Set the transport faults ``kw`` for the fault's duration, then clear them."""
        start = time.monotonic()
        if not self._set_faults(rec, **kw):
            rec.skipped = "no actor confirmed the faults"
            self._set_faults(rec)
            return
        rec.start_s = round(start - t0, 3)
        probes.fire(rec, start, t0)
        try:
            time.sleep(fault.duration_s)
        finally:
            self._set_faults(rec)
            rec.end_s = round(time.monotonic() - t0, 3)

    def _cut_links(self, fault: Fault, rec: FaultRecord, t0: float, probes: Probes) -> None:
        """Reset every actor's data-plane streams every ``every_s`` for the duration."""
        start = time.monotonic()
        rec.start_s = round(start - t0, 3)
        probes.fire(rec, start, t0)
        every = float(fault.param("every_s", 0.5))
        cuts = rounds = 0
        while True:
            res = self.dep.cut_links()
            rounds += 1
            cuts += sum(len(v) for v in res.values() if isinstance(v, list))
            if time.monotonic() - start + every > fault.duration_s:
                break
            time.sleep(every)
        rec.end_s = round(time.monotonic() - t0, 3)
        rec.notes.append(f"{cuts} streams cut in {rounds} rounds")
        if cuts == 0:
            rec.skipped = "no data-plane stream to cut (transport: ray?)"

    def _set_faults(self, rec: FaultRecord, **kw: Any) -> bool:
        """Set (or, with no arguments, clear) the transport faults of every actor; False
        when no actor confirmed them (the episode is then reported as skipped)."""
        res = self.dep.set_faults(**kw)
        bad = [n for n, r in res.items() if not isinstance(r, dict) or "error" in r]
        if bad:
            rec.notes.append(f"set_faults not confirmed by {bad}")
        return len(bad) < len(res)

    def _partition(
        self, fault: Fault, rec: FaultRecord, view: View, t0: float, probes: Probes
    ) -> None:
        group: list[str] = []
        for t in fault.targets:
            group += [n for n in resolve(t, view) if n not in group]
        others = [n for n in self.dep.names() if n not in group]
        direction = fault.param("direction", "both")
        blocked: list[list[str]] = []
        if direction in ("both", "out"):
            blocked += [[g, o] for g in group for o in others]
        if direction in ("both", "in"):
            blocked += [[o, g] for g in group for o in others]
        rec.targets = group
        self._hold_faults(fault, rec, t0, probes, blocked=blocked)

    def _pause(self, fault: Fault, rec: FaultRecord, view: View, t0: float, probes: Probes) -> None:
        names = resolve(fault.targets[0], view)
        rec.targets = names
        where = self._where(names)
        w = where.get(names[0])
        if w is None or w.get("node_ip") != self.local_ip:
            rec.skipped = f"{names[0]} is not a process on this machine"
            return
        pid = int(w["pid"])
        start = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        self.paused.add(pid)
        rec.start_s = round(start - t0, 3)
        probes.fire(rec, start, t0)
        try:
            time.sleep(fault.duration_s)
        finally:
            self.resume(pid)
            rec.end_s = round(time.monotonic() - t0, 3)

    def resume(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        self.paused.discard(pid)

    def _node(self, fault: Fault, rec: FaultRecord, view: View, t0: float, probes: Probes) -> None:
        if self.cluster is None:
            rec.skipped = (
                "no node of this cluster can be killed from here (it was not started by "
                "this command: run without --address, with --nodes 3 or more)"
            )
            return
        workers = {n.node_id: n for n in self.cluster.worker_nodes}
        members = self.members(view)
        where = self._where(list(self.dep.names()))
        on: dict[str, list[str]] = {}
        for n, w in where.items():
            on.setdefault(w["node_id"], []).append(n)

        def safe(node_id: str) -> bool:
            # Never more than f acceptors or every replica of the configuration at once.
            there = [n for n in on.get(node_id, []) if n in members]
            accs = sum(1 for n in there if n in view.acceptors)
            reps = sum(1 for n in there if n in view.replicas)
            return accs <= (len(view.acceptors) - 1) // 2 and reps < len(view.replicas)

        wanted = resolve(fault.targets[0], view)[0]
        candidates = [nid for nid in workers if safe(nid)]
        if fault.kind == "disk-loss":
            candidates = [
                nid for nid in candidates if any(n in view.acceptors for n in on.get(nid, []))
            ]
        if not candidates:
            rec.skipped = "no worker node can be lost without losing a majority (placement)"
            return
        home = where.get(wanted, {}).get("node_id")
        victim = home if home in candidates else sorted(candidates)[0]
        if home not in candidates:
            rec.notes.append(f"{wanted} is on the head node or an unsafe node: took another")
        victims = sorted(on.get(victim, []))
        rec.targets = [f"node {victim[:8]}"]
        storage = {}
        if fault.kind == "disk-loss":
            for n, s in self.dep._gather("status", 5.0, names=victims).items():
                if isinstance(s, dict) and s.get("storage"):
                    storage[n] = s["storage"]
            if not any(n in view.acceptors for n in storage):
                rec.skipped = "the acceptor on that node did not say where its log is"
                return
        start = time.monotonic()
        self.cluster.remove_node(workers[victim], allow_graceful=False)
        if fault.kind == "disk-loss":
            for path in storage.values():
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(f"{path}{suffix}")
                    except FileNotFoundError:
                        pass
        rec.killed = victims
        rec.killed_active_leader = view.active in victims
        rec.start_s = rec.end_s = round(start - t0, 3)
        probes.fire(rec, start, t0)
        rec.notes.append(f"killed node {victim[:8]} with {victims}")
        self.cluster.add_node(num_cpus=1)  # the machine comes back as a fresh node
        if fault.kind == "disk-loss":
            for name in [n for n in victims if n in view.acceptors]:
                self._replace_lost(name, rec)

    def _replace_lost(self, name: str, rec: FaultRecord) -> None:
        if not wait_refusing(self.dep, name, timeout_s=120.0, poll_s=0.5):
            rec.notes.append(f"{name} never came back refusing")
            return
        try:
            new = self.dep.replace(name, timeout_s=120.0)
            rec.notes.append(f"{name} lost its disk: replaced by {new} through the log")
        except Exception as e:
            rec.notes.append(f"replacing {name} failed: {type(e).__name__}: {e}")

    def heal(self) -> None:
        for pid in list(self.paused):
            self.resume(pid)
        try:
            self.dep.set_faults()
        except Exception:
            pass


# --- checks --------------------------------------------------------------------------------


def _unavailability(records: list[FaultRecord], writes: list[float], end_s: float) -> None:
    """Each applied fault's longest stretch without an acknowledged write, from its start
    until the next fault starts (or the run ends)."""
    applied = sorted((r for r in records if r.start_s is not None), key=lambda r: r.start_s or 0)
    writes = sorted(writes)
    for i, r in enumerate(applied):
        start = r.start_s or 0.0
        stop = applied[i + 1].start_s if i + 1 < len(applied) else end_s
        stop = stop if stop is not None else end_s
        inside = [w for w in writes if start < w <= stop]
        if not inside:
            r.unavailable_s = round(stop - start, 3)
            r.notes.append("no write acknowledged before the next fault")
            continue
        times = [start, *inside]
        r.unavailable_s = round(max(b - a for a, b in zip(times, times[1:], strict=False)), 3)


def _final_reads(
    dep: Any, recorder: Any, work: Workload, res: ChaosResult, timeout_s: float = 60.0
) -> None:
    reader = dep.client(timeout_s=timeout_s, recorder=recorder, client_id="chaos-reader")
    acked: dict[str, list[str]] = {}
    for k, tok in work.acked:
        acked.setdefault(k, []).append(tok)
    unacked: dict[str, list[str]] = {}
    for k, tok in work.unacked:
        unacked.setdefault(k, []).append(tok)
    res.acked_appends = len(work.acked)
    res.unacked_appends = len(work.unacked)
    for key in sorted(work.log_keys):
        try:
            final = reader.get(key) or ""
        except Exception as e:
            res.final_reads_error = f"{key}: {type(e).__name__}: {e}"[:300]
            return
        pieces = final.replace("][", "]\n[").split("\n") if final else []
        counts: dict[str, int] = {}
        for p in pieces:
            counts[p] = counts.get(p, 0) + 1
        res.lost_appends += [f"{key} {t}" for t in acked.get(key, []) if counts.get(t, 0) == 0]
        res.duplicated_appends += [f"{key} {p}" for p, c in sorted(counts.items()) if c > 1]


def _role_check(nem: Nemesis, res: ChaosResult) -> None:
    view = nem.view()
    res.role_problems = nem.health(view)
    res.roles_alive = not res.role_problems
    members = set(nem.members(view))
    res.retired = sorted(n for n in nem.dep.names() if n not in members)


# --- the run --------------------------------------------------------------------------------


def _injected_bug(dep: Any) -> str | None:
    for st in dep._gather("status", 5.0).values():
        if isinstance(st, dict) and st.get("injected_bug"):
            return str(st["injected_bug"])
    return None


def run_chaos(
    dep: Any,
    schedule: list[Fault],
    *,
    seed: int,
    duration_s: float,
    clients: int = 4,
    kinds: Iterable[str] = KINDS,
    cluster: Any = None,
    cluster_info: dict[str, Any] | None = None,
    tail_s: float = 6.0,
    settle_timeout_s: float = 60.0,
    lincheck_timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
    on_history: Callable[[list[Any]], None] | None = None,
) -> ChaosResult:
    """Drive ``dep`` with the workload while the nemesis applies ``schedule``, then heal
    and check (see the module docstring). ``cluster``: the ``ray.cluster_utils.Cluster``
    this process started, for node faults (None: they are skipped, and say why).
    ``on_history`` receives the recorded operations before they are checked."""
    from ..check.linearizability import KV_MODEL, check
    from ..runtime.client import HistoryRecorder
    from ..runtime.workload import replica_states

    say = progress or (lambda _m: None)
    res = ChaosResult(seed, duration_s, clients, list(expand_kinds(kinds)), list(schedule))
    res.cluster = dict(cluster_info or {})
    res.injected_bug = _injected_bug(dep)
    if res.injected_bug:
        say(f"WARNING: the deployment runs with an injected bug: {res.injected_bug}")
    prefix = f"c{seed}-{uuid.uuid4().hex[:6]}"
    recorder = HistoryRecorder()
    nem = Nemesis(dep, cluster=cluster, say=say, seed=seed)
    probes = Probes(dep, recorder, prefix)
    work = Workload(dep, recorder, clients=clients, seed=seed, prefix=prefix)
    nem.work = work
    res.faults = [
        FaultRecord(f.index, f.kind, f.at_s, f.method, params=dict(f.params)) for f in schedule
    ]
    t0 = time.monotonic()
    work.start(t0)
    try:
        for fault, rec in zip(schedule, res.faults, strict=True):
            while (wait := fault.at_s - (time.monotonic() - t0)) > 0:
                time.sleep(min(wait, 0.2))
            waited, problems = nem.settle(settle_timeout_s)
            rec.settle_s = round(waited, 2)
            if problems:
                rec.notes.append(f"not every member answered before it: {problems[:3]}")
            try:
                nem.apply(fault, rec, t0, probes)
            except Exception as e:
                rec.notes.append(f"applying it failed: {type(e).__name__}: {e}"[:300])
                if rec.start_s is None:
                    rec.skipped = rec.skipped or "failed to apply"
            now = time.monotonic() - t0
            if rec.skipped:
                say(f"t={now:6.1f}s  #{rec.index} {rec.kind}: SKIPPED ({rec.skipped})")
            else:
                at = rec.start_s if rec.start_s is not None else now
                say(
                    f"t={at:6.1f}s  #{rec.index} {rec.kind} {', '.join(rec.targets)}"
                    + (f" via {rec.method}" if rec.method else "")
                    + (f" (waited {rec.settle_s:.1f}s for members)" if rec.settle_s > 1 else "")
                )
        end_at = max(duration_s, (time.monotonic() - t0) + tail_s)
        while (wait := end_at - (time.monotonic() - t0)) > 0:
            time.sleep(min(wait, 0.2))
    finally:
        nem.heal()
        work.finish()
    res.elapsed_s = time.monotonic() - t0
    say(f"t={res.elapsed_s:6.1f}s  workload stopped; healing and checking")
    probes.join()
    heal_t = time.monotonic()
    waited, problems = nem.settle(120.0)
    res.healed_in_s = round(time.monotonic() - heal_t, 2)
    res.ops = list(work.ops)
    res.outcomes = dict(work.outcomes)
    res.client_errors = list(work.errors)
    res.unfinished_clients = list(getattr(work, "unfinished", []))
    writes = [r for _c, r, k, o in work.ops if o == "ok" and k != "get" and r is not None]
    _unavailability(res.faults, writes, res.elapsed_s)

    _final_reads(dep, recorder, work, res)
    res.replicas_converged, res.replica_states = replica_states(dep, settle_s=60.0)
    _role_check(nem, res)
    history = recorder.operations()
    if on_history is not None:
        on_history(history)
    say(f"checking {len(history)} operations for linearizability ...")
    verdict = check(history, KV_MODEL, timeout=lincheck_timeout_s)
    res.linearizable = verdict.verdict
    res.lin_detail = verdict.detail
    res.lin_ops = len(history)
    res.lin_elapsed_s = verdict.elapsed
    return res
