"""A deterministic, seeded, virtual-time simulation of a whole PMMC deployment.

The simulator is the second interpreter of the core's effects (the Ray runtime is the
first). It owns a virtual clock in milliseconds, a heap of pending events ordered by
(time, sequence number), and one ``random.Random(seed)``: nothing else decides what
happens, so a seed replays the same run byte for byte (see ``trace``).

Faults are configuration (:class:`Faults`): message loss, duplication, delay spikes
(reordering), partitions (two-way and one-way), crashes and restarts of any process
(one at a time, or every replica at once), power loss (every process at once), loss of
a crashed process's disk, and live reconfiguration. Restarts behave as Ray's do: the
process object is thrown away and rebuilt from its constructor arguments plus what it
persisted: acceptors, leaders and replicas reload their durable records. A leader
whose disk is gone takes a fresh ballot identity; a replica whose disk is gone
recovers by state transfer. Faults stop at ``fault_until``; after that every crashed
process restarts, partitions heal and the network is reliable, and every client
operation must finish.

Clients are simulated too: each opens a session, then runs a sequence of KV operations
one at a time, retrying with the same command id until it gets an answer, and records
invoke and return times for the linearizability checker. A command rejected because the
session was evicted counts as an operation of unknown outcome; the client then opens a
new session under a new id.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..app import KVStore
from ..check.history import Operation
from ..check.linearizability import KV_MODEL, check
from ..core import (
    SESSION_EXPIRED,
    Acceptor,
    ClientReply,
    Command,
    Commander,
    Config,
    Leader,
    OpenSession,
    Persist,
    ProtocolViolation,
    Reconfigure,
    Replica,
    Request,
    Requests,
    Response,
    Scout,
    Send,
    SetTimer,
    Timer,
    Timing,
)
from ..core.ids import commander_of, role_of, scout_of
from ..core.messages import DurableRecord, Effect, Message, supersedes_earlier
from .invariants import InvariantChecker

FAULT_KINDS = ("drop", "duplicate", "delay", "partition", "crash", "power", "disk", "reconfig")


@dataclass(frozen=True)
class Faults:
    """Which faults a run injects, and how hard."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_spike: float = 0.0
    """Probability that a message is delayed by up to ``spike_max`` ms (reordering)."""
    spike_max: int = 120
    long_delay: float = 0.0
    """Probability that a message is held back 500-2500 ms: it arrives long after it was
    sent, when what it is about may already be decided and collected."""
    partition: bool = False
    crash: bool = False
    power: bool = False
    """Every process crashes at once (a power loss) and restarts with its disk."""
    disk: bool = False
    """Some crashes also lose the process's disk: a leader's (it must take a fresh ballot
    identity) or a replica's while another replica holds the state (state transfer)."""
    reconfig: bool = False

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``"all"``, ``"none"``, or a comma list of :data:`FAULT_KINDS`."""
        kinds = set(FAULT_KINDS) if spec.strip() == "all" else set()
        if spec.strip() not in ("all", "none", ""):
            for k in spec.split(","):
                k = k.strip()
                if k not in FAULT_KINDS:
                    raise ValueError(
                        f"unknown fault kind {k!r}; choose from {', '.join(FAULT_KINDS)}, all, none"
                    )
                kinds.add(k)
        return cls(
            drop=0.05 if "drop" in kinds else 0.0,
            duplicate=0.05 if "duplicate" in kinds else 0.0,
            delay_spike=0.03 if "delay" in kinds else 0.0,
            long_delay=0.003 if "delay" in kinds else 0.0,
            partition="partition" in kinds,
            crash="crash" in kinds,
            power="power" in kinds,
            disk="disk" in kinds,
            reconfig="reconfig" in kinds,
        )

    def kinds(self) -> list[str]:
        out = []
        for k, on in (
            ("drop", self.drop > 0),
            ("duplicate", self.duplicate > 0),
            ("delay", self.delay_spike > 0),
            ("partition", self.partition),
            ("crash", self.crash),
            ("power", self.power),
            ("disk", self.disk),
            ("reconfig", self.reconfig),
        ):
            if on:
                out.append(k)
        return out


@dataclass(frozen=True)
class SimParams:
    """Size and length of one simulated run."""

    f: int = 1
    clients: int = 3
    ops_per_client: int = 25
    keys: int = 3
    fault_until: int = 3000
    """Virtual ms during which faults happen."""
    max_time: int = 40000
    """Give up (liveness failure) if client operations are still open at this time."""
    settle: int = 1500
    """After the last operation completes, run this long before the final checks."""
    latency: tuple[int, int] = (1, 6)
    client_retry: int = 300
    timing: Timing = field(default_factory=Timing)
    bug: str | None = None
    """Inject a known bug (for tests that prove the checkers can fail)."""
    vary: bool = True
    """Let the runner vary f, WINDOW, batch size and clients by seed."""
    fixed_clients: bool = False
    """Keep ``clients`` even when the runner varies the rest by seed."""
    sample_every: int = 500
    """Virtual ms between samples of every process's state sizes (``SimResult.peaks``)."""
    mux: bool = False
    """Clients' requests to one replica within a virtual ms travel together, as one
    :class:`Requests` message (what a client process's multiplexer does)."""


BUGS = (
    "acceptor-amnesia",
    "acceptor-forgets-collected",
    "leader-reuses-ballot",
    "leader-amnesia",
    "no-dedup",
    "replica-no-persist",
)
"""Injected bugs: an acceptor that forgets its records on restart; an acceptor that
forgets its collected marks on restart (paper 4.2); a leader whose
rounds are off by one after a restart; a leader that comes back without its disk under
its old ballot identity; replicas with no exactly-once table; replicas that never
persist what they apply."""


@dataclass
class ClientOp:
    client: str
    command_id: int
    op: tuple
    call: int
    ret: int | None = None
    result: Any = None
    error: str | None = None


@dataclass
class SimResult:
    """What one seeded run did and found."""

    seed: int
    faults: list[str]
    f: int
    violations: list[str]
    ops: list[ClientOp]
    ops_completed: int
    linearizable: str  # "linearizable" | "not_linearizable" | "unknown" | "skipped"
    lin_detail: str
    converged: bool
    end_time: int
    events: int
    messages: int
    decided_slots: int
    crashes: int
    partitions: int
    reconfigs: int
    power_losses: int = 0
    disk_losses: int = 0
    peaks: dict[str, int] = field(default_factory=dict)
    """The largest value seen of each state size, sampled during the run: what memory
    and disk a role needed (``acceptor.pvalues``, ``replica.disk_records``, ...)."""
    peaks_by_quarter: list[dict[str, int]] = field(default_factory=list)
    """The same, for each quarter of the run: flat state shows no upward trend."""
    reconfig_pending: bool = False
    trace: list[str] | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.violations
            and self.ops_completed == len(self.ops)
            and self.linearizable == "linearizable"
            and self.converged
            and not self.reconfig_pending
        )

    def problems(self) -> list[str]:
        if self.violations:
            # The run stopped at the first violating step; nothing after it counts.
            return list(self.violations)
        out: list[str] = []
        if self.ops_completed != len(self.ops):
            out.append(
                f"liveness: {len(self.ops) - self.ops_completed} client operations never completed"
            )
        if self.linearizable not in ("linearizable", "skipped"):
            out.append(f"linearizability: {self.linearizable} {self.lin_detail}")
        if self.reconfig_pending:
            out.append("liveness: a reconfiguration command never completed")
        if not self.converged:
            out.append("convergence: replicas of the last configuration differ at the end")
        return out


class _Cut:
    """A partition: side ``a`` cannot reach side ``b`` (nor ``b`` reach ``a`` if
    ``both``). Answers ``(src, dst) in cut`` like the set of those pairs, without
    building it (thousands of pairs with 50 clients, at every partition)."""

    __slots__ = ("a", "b", "both")

    def __init__(self, a: list[str], b: list[str], both: bool) -> None:
        self.a, self.b, self.both = frozenset(a), frozenset(b), both

    def __contains__(self, pair: tuple[str, str]) -> bool:
        src, dst = pair
        return (src in self.a and dst in self.b) or (self.both and src in self.b and dst in self.a)

    def clear(self) -> None:
        self.a = self.b = frozenset()


class _SimClient:
    def __init__(self, cid: str, rng: random.Random, params: SimParams) -> None:
        self.id = cid
        self.rng = rng
        self.params = params
        self.next_id = 1
        self.current: ClientOp | None = None
        self.done = 0
        self.reads: dict[str, str | None] = {}
        self.sessions = 1
        self.session = f"{cid}~1"  # the client id its commands carry
        self.opened = False
        self.sid = 0  # the session identity the log gave it
        self._keys = [f"k{i}" for i in range(params.keys)]

    def next_op(self, now: int) -> ClientOp:
        k = self.rng.choice(self._keys)
        kind = self.rng.choices(["get", "put", "append", "cas", "delete"], [30, 25, 25, 12, 8])[0]
        tag = f"{self.session}.{self.next_id}"  # unique across its sessions
        if kind == "get":
            op: tuple = ("get", k)
        elif kind == "put":
            op = ("put", k, tag)
        elif kind == "append":
            op = ("append", k, f"[{tag}]")
        elif kind == "delete":
            op = ("delete", k)
        else:
            expected = self.reads.get(k) if self.rng.random() < 0.7 else None
            op = ("cas", k, expected, tag)
        c = ClientOp(self.session, self.next_id, op, now)
        self.next_id += 1
        self.current = c
        return c

    def new_session(self) -> None:
        self.sessions += 1
        self.session = f"{self.id}~{self.sessions}"
        self.opened = False
        self.sid = 0
        self.next_id = 1


class Simulation:
    """One seeded run. Construct, then call :meth:`run`."""

    def __init__(
        self,
        seed: int,
        faults: Faults,
        params: SimParams,
        *,
        trace: bool = False,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.seed = seed
        self.progress = progress  # called after every state sample (see _sample)
        self.rng = random.Random(seed)
        self.faults = faults
        self.params = params
        self.timing = params.timing
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, str, Any]] = []
        self.procs: dict[str, Any] = {}
        self.alive: set[str] = set()
        self.incarnation: dict[str, int] = {}
        self.storage: dict[str, list[DurableRecord]] = {}
        self.factories: dict[str, Callable[[bool], Any]] = {}
        self.timer_version: dict[tuple[str, str], int] = {}
        self.blocked: set[tuple[str, str]] | _Cut = set()  # (src, dst) pairs cut off
        self.trace: list[str] | None = [] if trace else None
        self.events = 0
        self.messages = 0
        self.crashes = 0
        self.partitions = 0
        self.reconfigs = 0
        self.power_losses = 0
        self.disk_losses = 0
        self.peaks: dict[str, int] = {}
        self.samples: list[tuple[int, dict[str, int]]] = []
        self.disk_lost: set[str] = set()  # crashed processes whose disk is gone
        self.had_state: dict[str, bool] = {}  # replica -> held state when it crashed
        self._config0: Config | None = None
        self._last_configs: tuple[Config, ...] = ()
        self._muxed: dict[str, list[Command]] = {}  # replica -> commands waiting (mux)
        self.checker = InvariantChecker({}, max_sessions=params.timing.max_sessions)
        self.checker.replicas_since = lambda e: {
            r for c in self._known_configs() if c.epoch >= e for r in c.replicas
        }
        self.clients: dict[str, _SimClient] = {}
        self.history: list[ClientOp] = []
        self.admin_pending: ClientOp | None = None
        self.admin_session = "admin~1"
        self.admin_opened = False
        self.admin_sid = 0
        self._next_id = {"replica": 0, "leader": 0, "acceptor": 0}
        self.faulty = True

    # --- building the deployment ----------------------------------------------------------

    def _new_id(self, role: str) -> str:
        n = self._next_id[role]
        self._next_id[role] = n + 1
        return f"{role}-{n}"

    def _add(self, pid: str, factory: Callable[[bool], Any]) -> None:
        self.factories[pid] = factory
        self.storage.setdefault(pid, [])
        self.incarnation[pid] = 0
        self._boot(pid, restarted=False)

    def _boot(self, pid: str, restarted: bool) -> None:
        role = self.factories[pid](restarted)
        self.procs[pid] = role
        self.alive.add(pid)
        self.incarnation[pid] += 1
        if restarted:
            self.checker.on_restart(pid, role)
        self._log(f"start {pid}" + (" (restart)" if restarted else ""))
        self._execute(pid, role, role.start(self.now))

    def _add_acceptor(self, aid: str) -> None:
        bug = self.params.bug

        def make(restarted: bool) -> Acceptor:
            if restarted and bug == "acceptor-amnesia":
                return Acceptor(aid)
            acc = Acceptor.recover(aid, self.storage[aid])
            if restarted and bug == "acceptor-forgets-collected":
                for st in acc.epochs.values():
                    st.collected_below = 0  # the pvalues below it stay forgotten
            return acc

        self._add(aid, make)

    def _add_leader(self, lid: str, config0: Config) -> None:
        t, bug = self.timing, self.params.bug
        sid, cid = scout_of(lid), commander_of(lid)

        def make(restarted: bool) -> Leader:
            # A fresh ballot identity, used only if its records hold none (a first start,
            # or a restart after its disk was lost): unique in the run by construction.
            fresh = f"{lid}/{self.incarnation[lid] + 1}"
            if bug == "leader-amnesia":
                fresh = f"{lid}/1"  # back without its disk, under its first identity
            ldr = Leader.recover(
                lid,
                config0,
                t,
                self.storage[lid],
                scout_id=sid,
                commander_id=cid,
                fresh_identity=fresh,
            )
            if restarted and bug == "leader-reuses-ballot":
                ldr.max_round -= 1  # off by one: the next scout reuses the last round
            return ldr

        self._add(lid, make)
        self._add(sid, lambda restarted: Scout(sid, lid, t))
        self._add(cid, lambda restarted: Commander(cid, lid, t))

    def _add_replica(self, rid: str, configs: tuple[Config, ...], recovering: bool) -> None:
        t = self.timing
        cls = _NoPersistReplica if self.params.bug == "replica-no-persist" else Replica

        def make(restarted: bool) -> Replica:
            if restarted and rid not in self.disk_lost:
                r = cls.recover(rid, configs, KVStore(), t, self.storage[rid], joined=recovering)
            else:
                # First start, or back without its disk: state transfer if it needs state.
                lost = restarted and rid in self.disk_lost
                r = cls(rid, configs, KVStore(), t, recovering=recovering or lost)
            if self.params.bug == "no-dedup":
                r.client_table = _ForgetfulTable()
            return r

        self._add(rid, make)

    def setup(self) -> None:
        f = self.params.f
        replicas = tuple(self._new_id("replica") for _ in range(f + 1))
        leaders = tuple(self._new_id("leader") for _ in range(f + 1))
        acceptors = tuple(self._new_id("acceptor") for _ in range(2 * f + 1))
        config0 = Config(0, 1, replicas, leaders, acceptors)
        self._config0 = config0
        self._last_configs = (config0,)
        self.checker.quorum_of[0] = config0.quorum
        for a in acceptors:
            self._add_acceptor(a)
        for r in replicas:
            self._add_replica(r, (config0,), recovering=False)
        for ldr in leaders:
            self._add_leader(ldr, config0)
        for i in range(self.params.clients):
            cid = f"client-{i}"
            self.clients[cid] = _SimClient(cid, self.rng, self.params)
            self._schedule(self.rng.randint(0, 20), "client_next", cid)
        if self.faults.crash or self.faults.disk:
            self._schedule(self.rng.randint(50, 400), "nemesis_crash", None)
        if self.faults.power:
            self._schedule(self.rng.randint(200, 1500), "nemesis_power", None)
        if self.faults.partition:
            self._schedule(self.rng.randint(50, 600), "nemesis_partition", None)
        if self.faults.reconfig:
            self._schedule(self.rng.randint(100, 1500), "nemesis_reconfig", None)
        self._schedule(self.params.fault_until, "heal", None)
        self._schedule(self.params.sample_every, "sample", None)

    # --- event loop ------------------------------------------------------------------------

    def _schedule(self, delay: int, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, kind, payload))

    def _log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:>6} {line}")

    def run(self) -> SimResult:
        self.setup()
        end = self.params.max_time
        all_done_at: int | None = None
        while self._heap and not self.checker.violations:
            if self._heap[0][0] > end:
                break
            self._run_one()
            if all_done_at is None and not self.faulty and self._all_ops_done():
                all_done_at = self.now
                end = min(end, self.now + self.params.settle)
        return self._result()

    def _run_one(self) -> None:
        """Execute the next event."""
        t, _, kind, payload = heapq.heappop(self._heap)
        self.now = t
        self.events += 1
        self._dispatch(kind, payload)

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "deliver":
            src, dst, msg = payload
            owner = dst.split("~", 1)[0]  # clients' messages go to their session id
            if owner in self.clients or owner == "admin":
                self._client_receive(owner, msg)
            elif dst in self.alive:
                if self.trace is not None:  # repr of every message is costly in long runs
                    self._log(f"{src} -> {dst} {msg!r}")
                self._step(dst, msg)
        elif kind == "timer":
            pid, name, inc, version = payload
            if (
                pid in self.alive
                and self.incarnation[pid] == inc
                and self.timer_version.get((pid, name)) == version
            ):
                self._log(f"timer {pid} {name}")
                self._step(pid, Timer(name))
        elif kind == "client_next":
            self._client_next(payload)
        elif kind == "mux_flush":
            self._mux_flush(payload)
        elif kind == "client_retry":
            self._client_retry(*payload)
        elif kind == "admin_retry":
            self._admin_send(payload)
        elif kind == "restart":
            if payload not in self.alive:
                self._boot(payload, restarted=True)
                self.disk_lost.discard(payload)
        elif kind == "unblock":
            self._log("partition healed")
            self.blocked.clear()
        elif kind == "nemesis_crash":
            self._nemesis_crash()
        elif kind == "nemesis_power":
            self._nemesis_power()
        elif kind == "nemesis_partition":
            self._nemesis_partition()
        elif kind == "nemesis_reconfig":
            self._nemesis_reconfig()
        elif kind == "heal":
            self._heal()
        elif kind == "sample":
            self._sample()
            self._schedule(self.params.sample_every, "sample", None)
        else:
            raise ValueError(kind)

    def _step(self, pid: str, inp: Message | Timer) -> None:
        role = self.procs[pid]
        try:
            effects = role.handle(inp, self.now)
        except ProtocolViolation as e:
            self.checker.fail(f"{pid} raised: {e}")
            return
        self._execute(pid, role, effects)

    def _execute(self, pid: str, role: Any, effects: list) -> None:
        sent = False
        for e in effects:
            if isinstance(e, Persist):
                if sent:
                    self.checker.fail(f"{pid}: Persist after Send in one step (durability rule)")
                if supersedes_earlier(e.record):
                    self.storage[pid] = [e.record]  # a checkpoint: older records may go
                else:
                    self.storage[pid].append(e.record)
            elif isinstance(e, Send):
                sent = True
                self._send(pid, e.dst, e.msg)
            elif isinstance(e, SetTimer):
                key = (pid, e.name)
                v = self.timer_version.get(key, 0) + 1
                self.timer_version[key] = v
                delay = e.delay
                if e.jitter:
                    delay = max(1, round(delay * (1 + self.rng.uniform(-e.jitter, e.jitter))))
                self._schedule(delay, "timer", (pid, e.name, self.incarnation[pid], v))
            elif isinstance(e, ClientReply):
                sent = True
                self._send(pid, e.response.client_id, e.response)
            else:
                raise TypeError(f"unknown effect {e!r}")
        self.checker.after_step(pid, role, effects)

    def _send(self, src: str, dst: str, msg: Any) -> None:
        self.messages += 1
        if (src, dst) in self.blocked:
            return
        lo, hi = self.params.latency
        copies = 1
        if self.faulty:
            if self.rng.random() < self.faults.drop:
                return
            if self.rng.random() < self.faults.duplicate:
                copies = 2
        for _ in range(copies):
            delay = self.rng.randint(lo, hi)
            if self.faulty and self.rng.random() < self.faults.delay_spike:
                delay += self.rng.randint(1, self.faults.spike_max)
            if (
                self.faulty
                and self.faults.long_delay
                and self.rng.random() < self.faults.long_delay
            ):
                delay += self.rng.randint(500, 2500)
            self._schedule(delay, "deliver", (src, dst, msg))

    # --- clients ----------------------------------------------------------------------------

    def _current_config(self) -> Config:
        return self._known_configs()[-1]

    def _client_send(self, cid: str, op: ClientOp) -> None:
        c = self.clients[cid]
        replicas = self._current_config().replicas
        dst = self.rng.choice(replicas)
        if not c.opened:
            self._log(f"{c.session} open session -> {dst}")
            self._request(c.session, dst, Command(c.session, 0, OpenSession()))
            return
        self._log(f"{c.session} request {op.command_id} {op.op!r} -> {dst}")
        self._request(c.session, dst, Command(c.session, op.command_id, op.op, c.sid))

    def _request(self, src: str, dst: str, cmd: Command) -> None:
        if not self.params.mux:
            self._send(src, dst, Request(cmd))
            return
        waiting = self._muxed.setdefault(dst, [])
        if not waiting:
            self._schedule(1, "mux_flush", dst)
        waiting.append(cmd)

    def _mux_flush(self, dst: str) -> None:
        cmds = self._muxed.pop(dst, [])
        if cmds:
            self._log(f"mux {len(cmds)} requests -> {dst}")
            self._send("mux", dst, Requests(tuple(cmds)))

    def _client_next(self, cid: str) -> None:
        c = self.clients[cid]
        if c.done >= self.params.ops_per_client:
            return
        op = c.next_op(self.now)
        self.history.append(op)
        self._client_send(cid, op)
        self._schedule(self.params.client_retry, "client_retry", (cid, op.command_id))

    def _client_retry(self, cid: str, command_id: int) -> None:
        op = self.clients[cid].current
        if op is None or op.command_id != command_id or op.ret is not None:
            return
        self._client_send(cid, op)
        self._schedule(self.params.client_retry, "client_retry", (cid, command_id))

    def _client_receive(self, cid: str, msg: Any) -> None:
        if not isinstance(msg, Response):
            return
        if cid == "admin":
            self._admin_receive(msg)
            return
        c = self.clients[cid]
        if msg.client_id != c.session:
            return  # for an earlier session
        if msg.command_id == 0:
            if not c.opened:
                c.opened, c.sid = True, int(msg.result)
                self._log(f"{c.session} session open")
                if c.current is not None:
                    self._client_send(cid, c.current)
            return
        op = c.current
        if op is None or op.command_id != msg.command_id or op.ret is not None:
            return
        if msg.error == SESSION_EXPIRED:
            # The session was evicted: the outcome of this operation is unknown (an
            # earlier decision of a retry may have performed it). New session, next op.
            self._log(f"{c.session} session expired at command {op.command_id}")
            op.ret, op.error = self.now, SESSION_EXPIRED
            c.new_session()
            c.done += 1
            c.current = None
            self._schedule(self.rng.randint(0, 15), "client_next", cid)
            return
        op.ret, op.result, op.error = self.now, msg.result, msg.error
        self._log(f"{cid} response {op.command_id} {msg.result!r} {msg.error or ''}")
        if op.op[0] == "get" and msg.error is None:
            c.reads[op.op[1]] = msg.result
        c.done += 1
        c.current = None
        self._schedule(self.rng.randint(0, 15), "client_next", cid)

    def _all_ops_done(self) -> bool:
        return self.admin_pending is None and all(
            c.done >= self.params.ops_per_client for c in self.clients.values()
        )

    # --- nemesis ----------------------------------------------------------------------------

    def crash(self, pid: str, lose_disk: bool = False) -> None:
        """Kill ``pid`` now: its memory is gone; its durable records stay unless
        ``lose_disk``."""
        self._log(f"crash {pid}" + (" losing its disk" if lose_disk else ""))
        role = self.procs.pop(pid)
        self.alive.discard(pid)
        if isinstance(role, Replica):
            self.had_state[pid] = not role.recovering and not lose_disk
        if lose_disk:
            self.storage[pid] = []
            self.disk_lost.add(pid)
            self.checker.on_disk_lost(pid)
            self.disk_losses += 1
        self.crashes += 1

    def _has_state(self, rid: str) -> bool:
        """The replica holds the replicated state, in memory or on its disk."""
        if rid in self.alive:
            return not self.procs[rid].recovering
        return self.had_state.get(rid, False) and rid not in self.disk_lost

    def _can_lose_disk(self, pid: str) -> bool:
        role = role_of(pid)
        if role == "leader":
            return True  # it comes back with a fresh ballot identity
        if role == "replica":
            # The state survives the loss of a replica's disk only if another replica
            # holds all of it: every slot the acceptors may have collected (a replica
            # still catching up does not; losing this disk then is a second failure).
            cfg = self._current_config()
            mark = max(self.checker.collected.values(), default=1)
            return any(
                self._has_state(r)
                and r not in self.disk_lost
                and self.checker.durable_slot_out.get(r, 1) >= mark
                for r in cfg.replicas
                if r != pid
            )
        return False  # an acceptor without its disk must not vote again: not simulated

    def _can_crash(self, pid: str, cfg: Config) -> bool:
        role = role_of(pid)
        if role == "acceptor":
            down = sum(1 for a in cfg.acceptors if a not in self.alive)
            return down < len(cfg.acceptors) - cfg.quorum
        return True

    def _nemesis_crash(self) -> None:
        if not self.faulty:
            return
        group: list[str] = []
        if self.faults.crash and self.rng.random() < 0.1:
            # Every replica of the current configuration at once: each comes back from
            # its own disk, with no peer to ask.
            group = [r for r in self._current_config().replicas if r in self.alive]
        else:
            cfg = self._current_config()
            candidates = [p for p in sorted(self.alive) if self._can_crash(p, cfg)]
            if self.faults.disk and not self.faults.crash:
                candidates = [p for p in candidates if self._can_lose_disk(p)]
            if candidates:
                pid = self.rng.choice(candidates)
                group = [pid]
                if role_of(pid) == "leader" and self.rng.random() < 0.5:
                    # A leader's scout and commander live on its node: lose them together.
                    group += [p for p in (scout_of(pid), commander_of(pid)) if p in self.alive]
        downtime = self.rng.randint(20, 600)
        for p in group:
            lose = (
                self.faults.disk
                and role_of(p) in ("leader", "replica")
                and self.rng.random() < 0.4
                and self._can_lose_disk(p)
            )
            self.crash(p, lose_disk=lose)
            self._schedule(downtime, "restart", p)
        self._schedule(self.rng.randint(100, 700), "nemesis_crash", None)

    def _nemesis_power(self) -> None:
        """Power loss: every process crashes at once; all restart with their disks."""
        if not self.faulty:
            return
        self._log("power loss")
        self.power_losses += 1
        downtime = self.rng.randint(20, 800)
        for p in sorted(self.alive):
            self.crash(p)
            self._schedule(downtime, "restart", p)
        self._schedule(self.rng.randint(800, 2500), "nemesis_power", None)

    def _nemesis_partition(self) -> None:
        if not self.faulty:
            return
        nodes = sorted(self.factories) + sorted(self.clients)
        side = {n: self.rng.random() < 0.5 for n in nodes}
        one_way = self.rng.random() < 0.4
        self.blocked = _Cut(
            [n for n in nodes if side[n]], [n for n in nodes if not side[n]], not one_way
        )
        self.partitions += 1
        self._log(
            f"partition {'one-way' if one_way else 'two-way'} {sorted(n for n in nodes if side[n])}"
        )
        length = self.rng.randint(50, 700)
        self._schedule(length, "unblock", None)
        self._schedule(length + self.rng.randint(100, 900), "nemesis_partition", None)

    def _nemesis_reconfig(self) -> None:
        if not self.faulty or self.admin_pending is not None:
            return
        cfg = self._current_config()
        replicas, leaders, acceptors = list(cfg.replicas), list(cfg.leaders), list(cfg.acceptors)
        change = self.rng.choice(["acceptor", "leader", "replica", "same"])
        if change == "acceptor":
            new = self._new_id("acceptor")
            acceptors[self.rng.randrange(len(acceptors))] = new
            self._add_acceptor(new)
        elif change == "leader":
            new = self._new_id("leader")
            leaders[self.rng.randrange(len(leaders))] = new
            self._add_leader(new, self._initial_config())
        elif change == "replica":
            new = self._new_id("replica")
            replicas[self.rng.randrange(len(replicas))] = new
            self._add_replica(new, self._known_configs(), recovering=True)
        op = Reconfigure(tuple(replicas), tuple(leaders), tuple(acceptors))
        self.reconfigs += 1
        cmd_id = self.reconfigs
        self.admin_pending = ClientOp("admin", cmd_id, ("reconfigure", change), self.now)
        self._log(f"admin reconfigure {op!r}")
        self._admin_op = op
        self._admin_send(cmd_id)

    def _admin_send(self, cmd_id: int) -> None:
        if self.admin_pending is None or self.admin_pending.command_id != cmd_id:
            return
        dst = self.rng.choice(self._current_config().replicas)
        sid = self.admin_session
        if not self.admin_opened:
            self._send(sid, dst, Request(Command(sid, 0, OpenSession())))
        else:
            self._send(sid, dst, Request(Command(sid, cmd_id, self._admin_op, self.admin_sid)))
        self._schedule(self.params.client_retry, "admin_retry", cmd_id)

    def _admin_receive(self, msg: Response) -> None:
        if msg.client_id != self.admin_session:
            return
        op = self.admin_pending
        if msg.command_id == 0:
            if not self.admin_opened:
                self.admin_opened, self.admin_sid = True, int(msg.result)
                if op is not None:
                    self._admin_send(op.command_id)
            return
        if op is None or op.command_id != msg.command_id:
            return
        op.ret, op.result, op.error = self.now, msg.result, msg.error
        self._log(f"admin reconfigured: epoch {msg.result} {msg.error or ''}")
        if msg.error == SESSION_EXPIRED:
            n = int(self.admin_session.split("~")[1]) + 1
            self.admin_session, self.admin_opened, self.admin_sid = f"admin~{n}", False, 0
        self.admin_pending = None
        if self.faulty:
            self._schedule(self.rng.randint(200, 1200), "nemesis_reconfig", None)

    def _initial_config(self) -> Config:
        assert self._config0 is not None
        return self._config0

    def _known_configs(self) -> tuple[Config, ...]:
        """The longest configuration list a live replica with state knows (what a client
        would discover); the last one seen if no such replica is up (a power loss)."""
        best: list[Config] = []
        for pid in sorted(self.alive):
            r = self.procs[pid]
            if isinstance(r, Replica) and not r.recovering and len(r.configs) > len(best):
                best = r.configs
        last = self._last_configs
        # Copy only when it differs: the list grows with every reconfiguration.
        if len(best) > len(last) or (best and len(best) == len(last) and best[-1] is not last[-1]):
            self._last_configs = tuple(best)
        return self._last_configs

    def _heal(self) -> None:
        self._log("heal: faults stop")
        self.faulty = False
        self.blocked.clear()
        for pid in sorted(self.factories):
            if pid not in self.alive:
                self._boot(pid, restarted=True)
                self.disk_lost.discard(pid)

    def _sample(self) -> None:
        """Record the size of every bounded piece of state (DESIGN 4b)."""
        sizes: dict[str, int] = {}
        for pid in sorted(self.alive):
            role = self.procs[pid]
            if isinstance(role, Acceptor):
                got = {
                    "pvalues": sum(len(e.accepted) for e in role.epochs.values()),
                    "disk_records": len(self.storage[pid]),
                }
            elif isinstance(role, Leader):
                got = {"proposals": sum(len(e.proposals) for e in role.epochs.values())}
            elif isinstance(role, Replica):
                got = {
                    "decisions_kept": len(role.decisions),
                    "sessions": len(role.client_table),
                    "requests": len(role.requests),
                    "disk_records": len(self.storage[pid]),
                }
            elif isinstance(role, Commander):
                got = {"pending": sum(len(r.pending) for r in role.runs.values())}
            else:
                continue
            for k, v in got.items():
                key = f"{role_of(pid)}.{k}"
                sizes[key] = max(sizes.get(key, 0), v)
        for k, v in sizes.items():
            self.peaks[k] = max(self.peaks.get(k, 0), v)
        self.samples.append((self.now, sizes))
        if self.progress is not None:
            done = sum(c.done for c in self.clients.values())
            self.progress(
                {
                    "virtual_ms": self.now,
                    "operations_completed": done,
                    "operations": self.params.ops_per_client * len(self.clients),
                    "sizes": sizes,
                    "peaks": dict(sorted(self.peaks.items())),
                }
            )

    def _quarters(self) -> list[dict[str, int]]:
        out: list[dict[str, int]] = [{} for _ in range(4)]
        end = max(1, self.now)
        for t, sizes in self.samples:
            q = out[min(3, 4 * t // end)]
            for k, v in sizes.items():
                q[k] = max(q.get(k, 0), v)
        return [dict(sorted(q.items())) for q in out]

    # --- results -----------------------------------------------------------------------------

    def _converged(self) -> bool:
        cfg = self._current_config()
        states = []
        for rid in cfg.replicas:
            r = self.procs.get(rid)
            if r is None or r.recovering:
                return False
            states.append((r.slot_out, r.digest, r.app.snapshot()))
        return len(set(states)) == 1

    def _result(self) -> SimResult:
        ops = [o for o in self.history]
        completed = sum(1 for o in ops if o.ret is not None)
        verdict, detail = "skipped", ""
        if not self.checker.violations:
            # A rejected operation changed nothing; one whose session expired may have been
            # performed by an earlier decision: its outcome is unknown.
            hist = [
                Operation(
                    o.client,
                    float(o.call),
                    None if o.ret is None or o.error == SESSION_EXPIRED else float(o.ret),
                    o.op,
                    o.result,
                )
                for o in ops
                if o.error is None or o.error == SESSION_EXPIRED
            ]
            res = check(hist, KV_MODEL, timeout=30.0)
            verdict, detail = res.verdict, str(getattr(res, "detail", ""))
        return SimResult(
            seed=self.seed,
            faults=self.faults.kinds(),
            f=self.params.f,
            violations=list(self.checker.violations),
            ops=ops,
            ops_completed=completed,
            linearizable=verdict,
            lin_detail=detail,
            converged=self._converged() if not self.checker.violations else False,
            end_time=self.now,
            events=self.events,
            messages=self.messages,
            decided_slots=len(self.checker.decided),
            crashes=self.crashes,
            partitions=self.partitions,
            reconfigs=self.reconfigs,
            power_losses=self.power_losses,
            disk_losses=self.disk_losses,
            peaks=dict(sorted(self.peaks.items())),
            peaks_by_quarter=self._quarters(),
            reconfig_pending=self.admin_pending is not None,
            trace=self.trace,
        )


class _ForgetfulTable(dict):
    """Bug injection for ``no-dedup``: a client table that keeps sessions but forgets
    which command each client ran last, so a command decided in two slots (or retried)
    is performed twice."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, (value[0], 0, value[2]))


class _NoPersistReplica(Replica):
    """Bug injection for ``replica-no-persist``: a replica that applies and answers but
    never makes what it applied durable."""

    def _persist_applied(self) -> list[Effect]:
        self._unsaved = []
        self._checkpoint_due = False
        return []
