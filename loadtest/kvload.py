"""What the pmmc-ray Locust files share: options, the operation stream, history plumbing.

Not a locustfile itself (it defines no users): ``locustfile.py`` (HTTP users),
``native.py`` (native-client users) and the shape files import it.

Command-line options (all processes get the master's values when it spawns users):

  --kv-mix NAME          read-heavy | mixed | write-heavy | append | cas | put | all
  --kv-keys N            distinct keys (default 1000)
  --kv-key-dist D        uniform | zipf (default uniform); --kv-zipf-s S (0.99)
  --kv-value-size B      bytes of a put/cas value (default 16)
  --kv-think-ms MS       pause between a user's operations (default 0: closed loop)
  --kv-history-dir DIR   where the history is written (default results/loadtest-history)
  --kv-run-id ID         names the keys and the history file; fresh per test if empty
  --kv-namespace NS      deployment, for native users (default pmmc)
  --kv-ray-address A     Ray address, for native users (default auto)
  --kv-op-timeout S      seconds before a native operation's outcome is unknown (10)

History. Every user records each operation it sends (call and return times from
``time.time()`` and ``time.monotonic()``, the operation, its result, or "unknown") in
a per-process :class:`pmmc_ray.ops.loadgen.HistoryLog`; what an answer means for it
is :func:`~pmmc_ray.ops.loadgen.http_outcome` / ``sidecar_outcome``. A standalone
Locust writes it to ``<history dir>/history-<run id>.jsonl``. In distributed mode the
workers stream it to the master (custom messages ``pmmc_history``), which writes the
lines of its own run id to the file of that id and drops any other. When the test
stops, the master asks every worker it has known during the run to stop its users and
send the rest (``pmmc_history_flush``, answered by ``pmmc_history_done``) before the
workers quit. ``history-<run id>.meta.json`` then says whether the file holds every
operation of every worker (``complete``); if not (a worker went missing, or lines of
another run arrived), the check cannot be trusted, and Locust exits with status 1.
Check it with ``pmmc-ray loadtest --check FILE`` (monotonic times when every record
comes from one machine; ``--clock-skew-ms`` widens wall-clock intervals for workers on
several machines) or ``pmmc-ray lincheck <file> --format jsonl`` (wall-clock times).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from pmmc_ray.gateway.schema import body_of, result_of  # noqa: F401 (re-exported)
from pmmc_ray.ops.loadgen import (
    DISCARDED,
    MIXES,
    RETURNED,
    UNKNOWN,
    HistoryLog,
    KeyChooser,
    OpGenerator,
)
from pmmc_ray.ops.sidecar_client import SidecarProcess

log = logging.getLogger("pmmc_ray.loadtest")

HISTORY = HistoryLog()
_HOST = socket.gethostname()
_state: dict[str, Any] = {
    "run_id": None,
    "users": 0,
    "flusher": None,
    "sidecar": None,
    "sidecar_error": None,
    "dropped": 0,  # master: lines of another run (the history may lack some of this one)
}
_sidecar_lock = Semaphore()
_done_workers: set[str] = set()
_known_workers: set[str] = set()  # master: every worker connected during this run


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("pmmc-ray KV workload")
    g.add_argument("--kv-mix", choices=sorted(MIXES), default="mixed", help="workload mix")
    g.add_argument("--kv-keys", type=int, default=1000, help="distinct keys")
    g.add_argument(
        "--kv-key-dist", choices=["uniform", "zipf"], default="uniform", help="key popularity"
    )
    g.add_argument("--kv-zipf-s", type=float, default=0.99, help="zipf exponent")
    g.add_argument("--kv-value-size", type=int, default=16, help="bytes per put/cas value")
    g.add_argument("--kv-think-ms", type=float, default=0.0, help="pause between operations")
    g.add_argument(
        "--kv-history-dir", default="results/loadtest-history", help="history output folder"
    )
    g.add_argument("--kv-run-id", default="", help="key prefix and history name (fresh if empty)")
    g.add_argument("--kv-namespace", default="pmmc", help="deployment (native users)")
    g.add_argument("--kv-ray-address", default="auto", help="Ray address (native users)")
    g.add_argument("--kv-op-timeout", type=float, default=10.0, help="native op deadline (s)")


def options(environment: Any) -> Any:
    return environment.parsed_options


def history_path(environment: Any, run_id: str) -> Path:
    d = Path(options(environment).kv_history_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d / f"history-{run_id}.jsonl"


def _write_meta(environment: Any, complete: bool, **details: Any) -> None:
    """``history-<run id>.meta.json``: whether the history holds every operation."""
    run_id = _state["run_id"]
    path = history_path(environment, run_id).with_suffix(".meta.json")
    meta = {"run": run_id, "complete": complete, "boot": HISTORY.boot, **details}
    path.write_text(json.dumps(meta, indent=2) + "\n")
    if not complete:
        environment.process_exit_code = 1  # an unsound check must not pass


def _append(path: Path, lines: list[str]) -> None:
    if lines:
        with path.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))


# --- one run: a fresh run id (keys start absent), the history stream -------------------


@events.test_start.add_listener
def _test_start(environment: Any, **_: Any) -> None:
    opts = options(environment)
    if not isinstance(environment.runner, WorkerRunner):
        # The master (or a standalone Locust) names the run; workers get it with the
        # spawn message, since Locust forwards custom options to them.
        if not _state.get("fixed_run_id"):
            _state["fixed_run_id"] = bool(opts.kv_run_id)
        if not _state["fixed_run_id"]:
            opts.kv_run_id = f"r{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        log.info("pmmc-ray run %s: history in %s", opts.kv_run_id, opts.kv_history_dir)
    _state["run_id"] = opts.kv_run_id
    _state["dropped"] = 0
    _done_workers.clear()
    if isinstance(environment.runner, MasterRunner):
        _known_workers.clear()
        _known_workers.update(c.id for c in environment.runner.clients.all)
    if not isinstance(environment.runner, MasterRunner) and _state["flusher"] is None:
        _state["flusher"] = gevent.spawn(_flush_loop, environment)


def _flush_loop(environment: Any) -> None:
    while True:
        gevent.sleep(1.0)
        _ship(environment, HISTORY.drain())


def _ship(environment: Any, lines: list[str]) -> None:
    run_id = _state["run_id"]
    if not lines or run_id is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message("pmmc_history", {"run": run_id, "lines": lines})
    else:
        _append(history_path(environment, run_id), lines)


@events.test_stop.add_listener
def _test_stop(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        _collect_from_workers(environment)
    elif not isinstance(runner, WorkerRunner):
        _ship(environment, HISTORY.drain(final=True))
        _write_meta(environment, True, workers=[], missing=[], dropped_lines=0)


def _collect_from_workers(environment: Any, timeout_s: float = 60.0) -> None:
    """On the master: have every worker stop its users and send the rest.

    Every worker known during the run counts, also one that went missing or left: its
    operations may be in the history only in part, and a partial history can hide a
    violation or show one that did not happen (an operation whose effect others saw
    may be absent).
    """
    runner = environment.runner
    workers = set(_known_workers) | {c.id for c in runner.clients.all}
    # Only those still heard from can answer; the others are missing already.
    present = {c.id for c in runner.clients.all if c.state != "missing"}
    for wid in sorted(present):
        runner.send_message("pmmc_history_flush", {"run": _state["run_id"]}, wid)
    deadline = time.monotonic() + timeout_s
    while not present <= _done_workers and time.monotonic() < deadline:
        gevent.sleep(0.1)
    missing = sorted(workers - _done_workers)
    dropped = _state["dropped"]
    complete = not missing and not dropped
    if missing:
        log.error("no complete history from worker(s) %s: the check will be unsound", missing)
    if dropped:
        log.error("%d history line(s) of another run dropped: the check will be unsound", dropped)
    if complete:
        log.info("history of run %s complete from %d worker(s)", _state["run_id"], len(workers))
    _write_meta(
        environment, complete, workers=sorted(workers), missing=missing, dropped_lines=dropped
    )


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):

        def ours(msg: Any) -> bool:
            """Lines of this run go to its file; others are dropped (and counted)."""
            run = _state["run_id"]
            if run is not None and msg.data["run"] == run:
                _append(history_path(environment, run), msg.data["lines"])
                return True
            _state["dropped"] += len(msg.data["lines"])
            log.warning("dropped history lines of run %s from %s", msg.data["run"], msg.node_id)
            return False

        def on_history(environment: Any, msg: Any) -> None:
            ours(msg)

        def on_done(environment: Any, msg: Any) -> None:
            if ours(msg):
                _done_workers.add(msg.node_id)

        def on_connect(client_id: str, **_: Any) -> None:
            _known_workers.add(client_id)

        runner.register_message("pmmc_history", on_history)
        runner.register_message("pmmc_history_done", on_done)
        environment.events.worker_connect.add_listener(on_connect)
    elif isinstance(runner, WorkerRunner):

        def on_flush(environment: Any, msg: Any) -> None:
            environment.runner.stop()  # no user may send anything after this
            lines = HISTORY.drain(final=True)
            run = _state["run_id"] or msg.data["run"]
            environment.runner.send_message("pmmc_history_done", {"run": run, "lines": lines})

        runner.register_message("pmmc_history_flush", on_flush)


@events.quitting.add_listener
def _final_stats(environment: Any, **_: Any) -> None:
    """Write Locust's final totals to ``stats-<run id>.json``: the ``_stats.csv`` file is
    rewritten only once a second while the test runs, so it can miss the last second."""
    if isinstance(environment.runner, WorkerRunner) or not _state["run_id"]:
        return
    st = environment.stats

    def row(e: Any) -> dict[str, Any]:
        return {
            "type": e.method or "",
            "name": e.name,
            "requests": e.num_requests,
            "failures": e.num_failures,
            "rps": round(e.total_rps, 2),
            "avg_ms": round(e.avg_response_time, 2),
            **{
                f"p{int(q * 100)}_ms": e.get_response_time_percentile(q) if e.num_requests else None
                for q in (0.5, 0.95, 0.99)
            },
        }

    path = history_path(environment, _state["run_id"]).with_name(f"stats-{_state['run_id']}.json")
    path.write_text(
        json.dumps(
            {"total": row(st.total), "entries": [row(e) for e in st.entries.values()]}, indent=2
        )
    )


@events.quitting.add_listener
def _quitting(environment: Any, **_: Any) -> None:
    sidecar = _state.get("sidecar")
    if sidecar is not None:
        sidecar.stop()
        _state["sidecar"] = None


# --- per user ------------------------------------------------------------------------------


class KVUserState:
    """A user's identity, operation stream and history handle."""

    def __init__(self, environment: Any) -> None:
        opts = options(environment)
        _state["users"] += 1
        self.base = f"{_HOST}-{os.getpid()}-u{_state['users']}"
        self.incarnation = 0
        self.think_s = max(0.0, opts.kv_think_ms / 1000.0)
        self.gen = OpGenerator(
            user=self.base,
            prefix=opts.kv_run_id or "norun",
            mix=MIXES[opts.kv_mix],
            keys=KeyChooser(opts.kv_keys, opts.kv_key_dist, opts.kv_zipf_s),
            value_size=opts.kv_value_size,
        )

    @property
    def client(self) -> str:
        # After an unknown outcome the user goes on as a new client of the history:
        # its earlier operation may still take effect at any later time.
        return f"{self.base}.{self.incarnation}" if self.incarnation else self.base

    def next_op(self) -> tuple:
        return self.gen.next()

    def lost_track(self) -> None:
        self.incarnation += 1

    def settle(self, entry: Any, op: tuple, outcome: str, result: Any = None) -> None:
        """Record how ``op`` ended (an outcome of :mod:`pmmc_ray.ops.loadgen`)."""
        HISTORY.settle(entry, outcome, result)
        if outcome == RETURNED:
            self.gen.observe(op, result)
        elif outcome == UNKNOWN:
            # Its effect may still come at any later time: go on as a new client.
            self.lost_track()
        else:
            assert outcome == DISCARDED


def sidecar(environment: Any) -> SidecarProcess:
    """This process's sidecar (started by the first native user that needs it). If it
    could not start, every later call raises at once: one attempt per process."""
    with _sidecar_lock:
        if _state["sidecar_error"] is not None:
            raise RuntimeError(f"the sidecar could not start: {_state['sidecar_error']}")
        sc = _state.get("sidecar")
        if sc is None:
            opts = options(environment)
            logdir = Path(opts.kv_history_dir)
            sc = SidecarProcess(
                opts.kv_namespace,
                address=opts.kv_ray_address,
                op_timeout_s=opts.kv_op_timeout,
                log_path=logdir / f"sidecar-{_HOST}-{os.getpid()}.log",
            )
            try:
                sc.start()
            except Exception as e:
                _state["sidecar_error"] = f"{type(e).__name__}: {e}"
                raise
            _state["sidecar"] = sc
        return sc


def short(text: Any, n: int = 120) -> str:
    s = text if isinstance(text, str) else json.dumps(text)
    return s if len(s) <= n else s[:n] + "..."
