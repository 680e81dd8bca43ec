"""Running many seeded simulations and summarising them (``pmmc-ray sim``)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from .world import Faults, SimParams, SimResult, Simulation


def params_for_seed(seed: int, faults: Faults, base: SimParams) -> SimParams:
    """Vary the deployment by seed, so a sweep covers more shapes than one.

    One run in four uses f=2 (3 replicas, 3 leaders, 5 acceptors); WINDOW is 1, 2, 4
    or 8; batches hold at most 1, 3 or 64 commands; a replica keeps 1, 2 or WINDOW
    proposals in flight and checkpoints every 2, 7 or 1000 slots; state transfers move
    16, 64 or 2^20 bytes per chunk; replicas keep 3 or 1000 decisions for peers; the
    client table keeps 5 or 100,000 sessions (5: the clients and the admin evict each
    other now and then); 2 to 5 clients; in one run in two, clients' requests to a
    replica travel together as one ``Requests`` message (``mux``).
    """
    if not base.vary:
        return base
    r = random.Random(f"params-{seed}")
    window = r.choice([1, 2, 4, 8])
    timing = replace(
        base.timing,
        window=window,
        max_batch=r.choice([1, 3, 64]),
        max_inflight=r.choice([1, 2, window]),
        snapshot_every=r.choice([2, 7, 1000]),
        state_chunk=r.choice([16, 64, 1 << 20]),
        keep_decisions=r.choice([3, 1000]),
        max_sessions=r.choice([5, 100_000]),
    )
    varied = replace(
        base,
        f=2 if r.random() < 0.25 else base.f,
        clients=base.clients if base.fixed_clients else r.randint(2, 5),
        timing=timing,
    )
    # Drawn last, so the draws above (and the runs of seeds without it) stay as they were.
    return replace(varied, mux=base.mux or r.random() < 0.5)


def run_seed(
    seed: int,
    faults: Faults,
    base: SimParams | None = None,
    *,
    trace: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SimResult:
    """Run one seed. The same (seed, faults, base) always gives the same run;
    ``progress`` gets every state sample (it does not change the run)."""
    params = params_for_seed(seed, faults, base or SimParams())
    return Simulation(seed, faults, params, trace=trace, progress=progress).run()


def trace_digest(result: SimResult) -> str:
    """sha256 of a traced run's log: equal digests mean byte-identical traces."""
    if result.trace is None:
        raise ValueError("run the seed with trace=True")
    return hashlib.sha256("\n".join(result.trace).encode()).hexdigest()


@dataclass
class Summary:
    """Totals over many runs; ``failures`` holds (seed, problems) of failing runs."""

    runs: int = 0
    ok_runs: int = 0
    operations: int = 0
    completed: int = 0
    invariant_violations: int = 0
    non_linearizable: int = 0
    lin_unknown: int = 0
    incomplete_runs: int = 0
    diverged_runs: int = 0
    crashes: int = 0
    partitions: int = 0
    reconfigs: int = 0
    power_losses: int = 0
    disk_losses: int = 0
    runs_with_reconfig: int = 0
    messages: int = 0
    decided_slots: int = 0
    failures: list[tuple[int, list[str]]] = field(default_factory=list)

    def add(self, r: SimResult) -> None:
        self.runs += 1
        self.ok_runs += r.ok
        self.operations += len(r.ops)
        self.completed += r.ops_completed
        self.invariant_violations += len(r.violations)
        self.non_linearizable += r.linearizable == "not_linearizable"
        self.lin_unknown += r.linearizable == "unknown"
        self.incomplete_runs += r.ops_completed != len(r.ops)
        self.diverged_runs += not r.converged and not r.violations
        self.crashes += r.crashes
        self.power_losses += r.power_losses
        self.disk_losses += r.disk_losses
        self.partitions += r.partitions
        self.reconfigs += r.reconfigs
        self.runs_with_reconfig += r.reconfigs > 0
        self.messages += r.messages
        self.decided_slots += r.decided_slots
        if not r.ok:
            self.failures.append((r.seed, r.problems()))


def _job(args: tuple[int, Faults, SimParams]) -> SimResult:
    seed, faults, base = args
    return run_seed(seed, faults, base)


def run_many(
    seeds: list[int], faults: Faults, base: SimParams | None = None, workers: int | None = None
) -> Iterator[SimResult]:
    """Run ``seeds``, in parallel processes when ``workers`` > 1, yielding results in order."""
    base = base or SimParams()
    workers = workers or min(len(seeds), os.cpu_count() or 1)
    jobs = [(s, faults, base) for s in seeds]
    if workers <= 1:
        for j in jobs:
            yield run_seed(*j)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_job, jobs, chunksize=8)
