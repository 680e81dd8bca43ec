"""``pmmc-ray sim``: run seeded simulations and report what the checkers found."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .runner import Summary, run_many, run_seed, trace_digest
from .world import BUGS, FAULT_KINDS, Faults, SimParams


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="run the protocol in the deterministic fault simulator",
        description=(
            "Run N seeded simulations of a PMMC deployment with faults, checking the paper's "
            "invariants after every step and linearizability of the client history at the end. "
            "Exit status 0 if every run is clean, 1 otherwise."
        ),
    )
    p.add_argument("--seeds", type=int, default=200, help="number of seeds to run (default 200)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seed", type=int, help="run just this seed (with --trace to print its trace)")
    p.add_argument(
        "--faults",
        default="all",
        help=f"'all' (default), 'none', or a comma list of: {', '.join(FAULT_KINDS)}",
    )
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    p.add_argument("--ops", type=int, default=25, help="operations per client (default 25)")
    p.add_argument("--clients", type=int, help="clients (default: 2 to 5, varied by seed)")
    p.add_argument("--keys", type=int, help="distinct keys (default 3)")
    p.add_argument(
        "--fault-until",
        type=int,
        metavar="MS",
        help="virtual ms during which faults happen (default 3000); long runs raise it",
    )
    p.add_argument("--bug", choices=BUGS, help="inject a known bug (to see the checkers fail)")
    p.add_argument("--trace", action="store_true", help="with --seed: print the full event trace")
    p.add_argument(
        "--failures-dir",
        default="sim-failures",
        help="where traces of failing seeds are written (default ./sim-failures)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--progress",
        type=float,
        metavar="SECONDS",
        help="with --seed: every SECONDS of wall time, one JSON line on stderr with the "
        "virtual time, operations completed and the state peaks so far (for long runs)",
    )


def _params(args: argparse.Namespace) -> SimParams:
    if args.ops < 1:
        raise ValueError("--ops must be >= 1")
    p = SimParams(ops_per_client=args.ops, bug=args.bug)
    if args.clients is not None:
        if args.clients < 1:
            raise ValueError("--clients must be >= 1")
        p = replace(p, clients=args.clients, fixed_clients=True)
    if args.keys is not None:
        if args.keys < 1:
            raise ValueError("--keys must be >= 1")
        p = replace(p, keys=args.keys)
    if args.fault_until is not None:
        if args.fault_until < 0:
            raise ValueError("--fault-until must be >= 0")
        # a long run: the time limit follows the fault window
        p = replace(p, fault_until=args.fault_until, max_time=max(p.max_time, 4 * args.fault_until))
    return p


def run(args: argparse.Namespace) -> int:
    try:
        faults = Faults.parse(args.faults)
        params = _params(args)
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        if args.workers < 0:
            raise ValueError("--workers must be >= 0")
        if args.progress is not None and (args.seed is None or not args.progress > 0):
            raise ValueError("--progress needs --seed and a number of seconds > 0")
    except ValueError as e:
        print(f"pmmc-ray sim: {e}", file=sys.stderr)
        return 2
    if args.seed is not None:
        return _one(args, faults, params)
    seeds = list(range(args.start, args.start + args.seeds))
    t0 = time.monotonic()
    summary = Summary()
    for i, res in enumerate(run_many(seeds, faults, params, workers=args.workers or None), 1):
        summary.add(res)
        if not args.json and sys.stderr.isatty():
            print(
                f"\r{i}/{len(seeds)} runs, {len(summary.failures)} failing", end="", file=sys.stderr
            )
    elapsed = time.monotonic() - t0
    if not args.json and sys.stderr.isatty():
        print(file=sys.stderr)
    traces = _write_failure_traces(summary, faults, params, Path(args.failures_dir))
    out = {
        "runs": summary.runs,
        "faults": faults.kinds(),
        "bug": args.bug,
        "operations": summary.operations,
        "operations_completed": summary.completed,
        "invariant_violations": summary.invariant_violations,
        "non_linearizable_histories": summary.non_linearizable,
        "linearizability_unknown": summary.lin_unknown,
        "runs_with_incomplete_operations": summary.incomplete_runs,
        "runs_diverged": summary.diverged_runs,
        "crashes": summary.crashes,
        "power_losses": summary.power_losses,
        "disk_losses": summary.disk_losses,
        "partitions": summary.partitions,
        "reconfigurations": summary.reconfigs,
        "runs_with_reconfiguration": summary.runs_with_reconfig,
        "messages": summary.messages,
        "decided_slots": summary.decided_slots,
        "failing_seeds": [
            {"seed": s, "problems": p, "trace": traces.get(s)} for s, p in summary.failures
        ],
        "elapsed_seconds": round(elapsed, 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{out['runs']} runs ({', '.join(out['faults']) or 'no faults'}) in {elapsed:.1f}s: "
            f"{out['operations_completed']}/{out['operations']} operations completed, "
            f"{out['invariant_violations']} invariant violations, "
            f"{out['non_linearizable_histories']} non-linearizable histories, "
            f"{out['linearizability_unknown']} unknown, {out['runs_diverged']} diverged"
        )
        print(
            f"faults injected: {out['crashes']} crashes ({out['power_losses']} power losses, "
            f"{out['disk_losses']} lost disks), {out['partitions']} partitions, "
            f"{out['reconfigurations']} reconfigurations ({out['runs_with_reconfiguration']} runs)"
        )
        for f in out["failing_seeds"]:
            print(f"FAIL seed {f['seed']}: {'; '.join(f['problems'])}")
            if f["trace"]:
                print(f"  trace: {f['trace']}  (replay: pmmc-ray sim --seed {f['seed']} --trace)")
    return 0 if not summary.failures else 1


def _write_failure_traces(
    summary: Summary, faults: Faults, params: SimParams, where: Path, limit: int = 20
) -> dict[int, str]:
    out: dict[int, str] = {}
    for seed, _ in summary.failures[:limit]:
        res = run_seed(seed, faults, params, trace=True)
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"seed-{seed}.trace"
        path.write_text("\n".join(res.trace or []) + "\n" + "\n".join(res.problems()) + "\n")
        out[seed] = str(path)
    return out


def _progress_printer(args: argparse.Namespace) -> Callable[[dict[str, Any]], None] | None:
    """For --progress: print a sample as a JSON line on stderr at most every N seconds."""
    if args.progress is None:
        return None
    every = args.progress
    last = [time.monotonic()]

    def show(sample: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            print(json.dumps(sample, sort_keys=True), file=sys.stderr, flush=True)

    return show


def _one(args: argparse.Namespace, faults: Faults, params: SimParams) -> int:
    # A long run keeps no trace in memory unless asked (its digest is then not printed).
    long = params.ops_per_client * params.clients > 20_000
    res = run_seed(
        args.seed, faults, params, trace=args.trace or not long, progress=_progress_printer(args)
    )
    if args.trace:
        print("\n".join(res.trace or []))
    out = {
        "seed": res.seed,
        "ok": res.ok,
        "problems": res.problems(),
        "operations": len(res.ops),
        "operations_completed": res.ops_completed,
        "linearizable": res.linearizable,
        "end_time_ms": res.end_time,
        "events": res.events,
        "messages": res.messages,
        "decided_slots": res.decided_slots,
        "crashes": res.crashes,
        "power_losses": res.power_losses,
        "disk_losses": res.disk_losses,
        "partitions": res.partitions,
        "reconfigurations": res.reconfigs,
        "peaks": res.peaks,
        "peaks_by_quarter": res.peaks_by_quarter,
        "trace_sha256": trace_digest(res) if res.trace is not None else None,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(" ".join(f"{k}={v}" for k, v in out.items() if k != "problems"))
        for p in res.problems():
            print(f"FAIL: {p}")
    return 0 if res.ok else 1
