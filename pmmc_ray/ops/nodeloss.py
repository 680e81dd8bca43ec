"""Losing a whole node, on one machine: a multi-node Ray cluster, a deployment spread
over it, a recorded workload, and a node killed in the middle (DESIGN 4, 4b).

``run_nodeloss`` starts ``ray.cluster_utils.Cluster`` with ``nodes`` nodes (each a raylet
of its own; they share this machine's disk), deploys f=1 so each role is spread over
the nodes, checks where every actor landed, drives a workload, and kills the node that
runs the active leader (a worker node: the driver lives on the head), hard (every
process SIGKILLed) or gracefully. It measures the time from the kill to the next
committed write: the protocol's own failure detection must not wait for Ray's, which
notices a crashed node only after tens of seconds. With ``lose_disk`` the dead node's
disk is gone too: its actors' logs are deleted, so when Ray restarts them elsewhere
its acceptor refuses to vote again, and it is replaced through the log. At the end the
history must be linearizable, every acknowledged append present exactly once, and the
replicas in agreement.

Ray's cluster utilities are meant for tests and for this kind of exercise on one
machine; on a real cluster, kill a node with its cloud's tools and watch
``pmmc-ray status``.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..check.linearizability import KV_MODEL, check
from ..core.ids import role_of

__all__ = ["NodeLossResult", "run_nodeloss"]

LOGS = ("log-0", "log-1", "log-2", "log-3")
"""Keys the workload appends unique tokens to (and reads): every acknowledged append
must be in its log exactly once at the end."""


@dataclass
class NodeLossResult:
    nodes: int
    hard: bool
    lose_disk: bool
    placement: dict[str, str] = field(default_factory=dict)  # actor -> node id (short)
    acceptors_on_distinct_nodes: bool = False
    roles_spread: bool = False  # replicas and leaders each on distinct nodes too
    victim_node: str = ""
    victims: list[str] = field(default_factory=list)  # actors that were on it
    killed_at_s: float = 0.0
    next_write_s: float | None = None  # kill -> the next committed write
    replaced: dict[str, str] = field(default_factory=dict)  # lost acceptor -> its successor
    ops_ok: int = 0
    ops_unknown: int = 0
    acked_appends: int = 0
    lost_appends: list[str] = field(default_factory=list)
    duplicated_appends: list[str] = field(default_factory=list)
    replicas_agree: bool | None = None
    linearizable: str | None = None
    lin_detail: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.acceptors_on_distinct_nodes
            and self.roles_spread
            and self.next_write_s is not None
            and not self.lost_appends
            and not self.duplicated_appends
            and bool(self.replicas_agree)
            and self.linearizable == "linearizable"
            and not self.errors
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def wait_refusing(dep: Any, name: str, *, timeout_s: float, poll_s: float) -> bool:
    """Wait until ``name`` answers and refuses (an acceptor back without its log, which
    must be replaced through the log); False if it did not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = dep._gather("status", 10.0, names=[name])[name]
        if isinstance(st, dict) and st.get("refusing"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def run_nodeloss(
    *,
    nodes: int = 3,
    hard: bool = True,
    lose_disk: bool = False,
    duration_s: float = 20.0,
    clients: int = 3,
    config: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> NodeLossResult:
    """Run the exercise (see the module docstring). Starts and stops its own Ray."""
    import ray
    from ray.cluster_utils import Cluster

    from ..runtime import HistoryRecorder, OutcomeUnknownError, SessionNotOpenedError, deploy
    from ..runtime.workload import active_leader, replica_states

    if nodes < 3:
        raise ValueError("nodes must be >= 3 (one per acceptor)")
    if duration_s <= 0 or clients < 1:
        raise ValueError("duration_s must be > 0 and clients >= 1")
    say = progress or (lambda _msg: None)
    res = NodeLossResult(nodes, hard, lose_disk)
    data_dir = tempfile.mkdtemp(prefix="pmmc-nodeloss-")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(nodes - 1)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="pmmc-nodeloss", log_to_driver=False)
        say(f"{nodes}-node Ray cluster on this machine; deploying f=1 ...")
        cfg = {
            "namespace": f"nodeloss-{os.getpid()}",
            "data_dir": data_dir,
            "timeout_initial": 300,
            "timeout_min": 200,
            "timeout_max": 2000,
            **(config or {}),
        }
        dep = deploy(cfg)
        where = dep._gather("where", 10.0)
        res.placement = {n: str(w.get("node_id", "?"))[:8] for n, w in where.items()}

        def spread(names: tuple[str, ...]) -> bool:
            placed = [res.placement[n] for n in names]
            return len(set(placed)) == len(placed)

        res.acceptors_on_distinct_nodes = spread(dep.config.acceptor_ids())
        res.roles_spread = spread(dep.config.replica_ids()) and spread(dep.config.leader_ids())
        say(f"placement: {res.placement}")

        recorder = HistoryRecorder()
        stop = threading.Event()
        acked: dict[str, list[str]] = {k: [] for k in LOGS}
        lock = threading.Lock()
        counts = {"ok": 0, "unknown": 0}

        def worker(i: int) -> None:
            r = random.Random(i)
            c = dep.client(timeout_s=60.0, recorder=recorder, client_id=f"nodeloss-{i}")
            n = 0
            while not stop.is_set():
                n += 1
                token = f"[{i}.{n}]"
                key = r.choice(LOGS)
                try:
                    if r.random() < 0.6:
                        c.append(key, token)
                        with lock:
                            acked[key].append(token)
                    else:
                        c.get(key)
                    with lock:
                        counts["ok"] += 1
                except OutcomeUnknownError:
                    with lock:
                        counts["unknown"] += 1
                except SessionNotOpenedError:
                    pass  # not sent (no session yet): nothing happened, go on
                except Exception as e:
                    with lock:
                        res.errors.append(f"client {i}: {type(e).__name__}: {e}")
                    return

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(duration_s / 3)

        # The victim: the worker node that runs the active leader (else any worker node
        # with an acceptor). The driver runs on the head node, which is never killed.
        lid = active_leader(dep, wait_s=20.0) or ""
        by_id = {n.node_id[:8]: n for n in workers}
        victim_id = res.placement.get(lid, "")
        if victim_id not in by_id:
            victim_id = next(
                res.placement[a] for a in dep.config.acceptor_ids() if res.placement[a] in by_id
            )
        res.victim_node = victim_id
        res.victims = sorted(n for n, nid in res.placement.items() if nid == victim_id)
        say(f"killing node {victim_id} ({'hard' if hard else 'gracefully'}): {res.victims}")
        probe = dep.client(timeout_s=120.0, client_id="nodeloss-probe")
        probe.put("probe", "before")
        storage = {
            n: s.get("storage")
            for n, s in dep._gather("status", 10.0, names=res.victims).items()
            if isinstance(s, dict)
        }
        killed = time.monotonic()
        cluster.remove_node(by_id[victim_id], allow_graceful=not hard)
        if lose_disk:
            for path in storage.values():
                if path:
                    for suffix in ("", "-wal", "-shm"):
                        try:
                            os.unlink(f"{path}{suffix}")
                        except FileNotFoundError:
                            pass
        probe.put("probe", "after")
        res.killed_at_s = round(killed - t0, 2)
        res.next_write_s = round(time.monotonic() - killed, 3)
        say(f"next committed write {res.next_write_s}s after the node was killed")

        if lose_disk:
            lost = [n for n in res.victims if role_of(n) == "acceptor"]
            for name in lost:
                # Ray restarts it on a live node once it notices the node is gone; with its
                # log gone it refuses to vote, and is replaced through the log.
                if not wait_refusing(dep, name, timeout_s=120.0, poll_s=1.0):
                    res.errors.append(f"{name} never came back refusing")
                res.replaced[name] = dep.replace(name, timeout_s=120.0)
                say(f"{name} lost its disk: replaced by {res.replaced[name]} through the log")

        remaining = duration_s - (time.monotonic() - t0)
        if remaining > 0:
            time.sleep(remaining)
        stop.set()
        for t in threads:
            t.join(timeout=120.0)
        res.ops_ok, res.ops_unknown = counts["ok"], counts["unknown"]
        reader = dep.client(timeout_s=120.0, recorder=recorder)
        for key in LOGS:
            final = reader.get(key) or ""
            res.acked_appends += len(acked[key])
            res.lost_appends += [x for x in acked[key] if final.count(x) == 0][:10]
            pieces = final.replace("][", "]\n[").split("\n") if final else []
            res.duplicated_appends += sorted({p for p in pieces if pieces.count(p) > 1})[:10]
        res.replicas_agree, _ = replica_states(dep, settle_s=60.0)
        verdict = check(recorder.operations(), KV_MODEL, timeout=120.0)
        res.linearizable, res.lin_detail = verdict.verdict, str(getattr(verdict, "detail", ""))
        dep.shutdown(delete_data=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)
    return res
