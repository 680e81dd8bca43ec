"""``pmmc-ray loadtest``: one command to load the store with Locust and check the result."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from .ops.loadgen import KEY_DISTRIBUTIONS, MIXES, check_histories


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loadtest",
        help="run Locust headless against a deployment and check the recorded history",
        description=(
            "Without --address: start an embedded local Ray, deploy a fresh f=1 "
            "deployment and an HTTP gateway on 127.0.0.1, then run Locust headless (the "
            "files in loadtest/), print the summary and where the reports are, check the "
            "recorded history for linearizability and that the replicas agree, and tear "
            "everything down. With --address and --namespace: load that deployment "
            "through this node's gateway. Exit status 0 when Locust saw no failure and "
            "the history is linearizable. --check FILE only checks history files."
        ),
    )
    p.add_argument("--users", type=int, default=50, help="Locust users (default 50)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (default: all)"
    )
    p.add_argument("--mix", choices=sorted(MIXES), default="mixed", help="workload mix")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    p.add_argument("--key-dist", choices=KEY_DISTRIBUTIONS, default="uniform")
    p.add_argument("--zipf-s", type=float, default=0.99, help="zipf exponent (default 0.99)")
    p.add_argument("--value-size", type=int, default=16, help="bytes per put/cas value")
    p.add_argument(
        "--client",
        default="http",
        help="http, native or http,native: users of the HTTP API and/or of the Python client",
    )
    p.add_argument("--shape", choices=["step", "spike"], default=None, help="a load shape")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0: one Locust process; N: a master and N worker processes (distributed mode)",
    )
    p.add_argument(
        "--workers-via-ray",
        action="store_true",
        help="start the workers through Ray, spread over the cluster's nodes (ray up clusters)",
    )
    p.add_argument("--results", default=None, help="results folder (default results/loadtest-TIME)")
    p.add_argument("--address", default=None, help="Ray address of a running cluster")
    p.add_argument("--namespace", default=None, help="deployment to load (with --address)")
    p.add_argument("--gateway-url", default=None, help="gateway to use (default: this node's)")
    p.add_argument("-f", type=int, default=1, help="crashes tolerated, embedded mode (default 1)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the embedded Ray")
    p.add_argument("--no-check", action="store_true", help="skip the linearizability check")
    p.add_argument(
        "--clock-skew-ms",
        type=float,
        default=0.0,
        help="widen every recorded interval by this bound on clock skew (multi-node)",
    )
    p.add_argument("--locust-dir", default=None, help="folder of the Locust files")
    p.add_argument(
        "--check",
        nargs="+",
        metavar="FILE",
        default=None,
        help="only check these history files (with --clock-skew-ms)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _err(msg: str) -> int:
    print(f"pmmc-ray: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if args.check:
        try:
            res = check_histories(args.check, skew_s=args.clock_skew_ms / 1000.0, timeout_s=300)
        except (OSError, ValueError) as e:
            return _err(str(e))
        print(json.dumps(res, indent=2) if args.json else _verdict_line(res))
        return 0 if res["verdict"] == "linearizable" else 1
    # Never import locust here: it patches this process with gevent, and Ray breaks.
    if importlib.util.find_spec("locust") is None:
        return _err("loadtest needs Locust: pip install -e '.[loadtest]'")
    from .ops.loadtest import LoadTestPlan, run_loadtest

    if args.address is None:
        # An embedded single-machine Ray: on loopback, no usage-stats prompt (as `run`).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    plan = LoadTestPlan(
        users=args.users,
        duration_s=args.duration,
        spawn_rate=args.spawn_rate,
        mix=args.mix,
        keys=args.keys,
        key_dist=args.key_dist,
        zipf_s=args.zipf_s,
        value_size=args.value_size,
        clients=tuple(c.strip() for c in args.client.split(",") if c.strip()),
        shape=args.shape,
        workers=args.workers,
        workers_via_ray=args.workers_via_ray,
        results_dir=Path(args.results) if args.results else None,
        address=args.address,
        namespace=args.namespace,
        gateway_url=args.gateway_url,
        f=args.f,
        num_cpus=args.num_cpus,
        check=not args.no_check,
        skew_s=args.clock_skew_ms / 1000.0,
    )
    if args.locust_dir:
        plan.loadtest_dir = Path(args.locust_dir)
    try:
        plan.validate()
    except ValueError as e:
        return _err(str(e))
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    try:
        summary = run_loadtest(plan, progress=say)
    except (RuntimeError, LookupError, TimeoutError, ConnectionError) as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print("\n".join(summary_lines(summary)))
    return 0 if summary["ok"] else 1


def _ms(x: Any) -> str:
    return "?" if x is None else f"{x:g}"


def _verdict_line(lin: dict[str, Any]) -> str:
    line = (
        f"history: {lin.get('verdict')} ({lin.get('ops', '?')} operations, "
        f"{lin.get('unknown_outcome', '?')} with unknown outcome, {lin.get('clients', '?')} "
        f"clients, checked in {lin.get('elapsed_s', '?')}s"
        + (f", intervals widened by {lin['skew_s'] * 1000:g} ms" if lin.get("skew_s") else "")
        + ")"
    )
    if lin.get("explanation"):
        line += f"\n  {lin['explanation']}"
    return line


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human-readable summary of a ``run_loadtest`` result."""
    t = s.get("locust", {})
    lines = [
        f"Locust: {t.get('requests', '?')} requests, {t.get('failures', '?')} failures, "
        f"{_ms(t.get('rps'))} req/s; latency ms p50 {_ms(t.get('p50_ms'))}  "
        f"p95 {_ms(t.get('p95_ms'))}  p99 {_ms(t.get('p99_ms'))} (exit code "
        f"{s.get('locust_exit_code')})",
    ]
    for name, row in sorted(t.get("by_operation", {}).items()):
        lines.append(
            f"  {name:<12} {row['requests']:>7} req  {row['failures']:>4} fail  "
            f"p50 {_ms(row['p50_ms'])} ms  p99 {_ms(row['p99_ms'])} ms"
        )
    cpu = s.get("cpu", {})
    if cpu:
        share = cpu.get("share_of_machine", {})
        parts = [f"{g} {v * 100:.0f}%" for g, v in share.items() if g != "machine_busy"]
        lines.append(
            f"CPU over {cpu['wall_s']}s on {cpu['cores']} cores: "
            + ", ".join(parts)
            + f" (machine busy {share.get('machine_busy', 0) * 100:.0f}%)"
        )
    if "linearizability" in s:
        lines.append(_verdict_line(s["linearizability"]))
    if not s.get("history_complete", True):
        lines.append(
            f"history INCOMPLETE (see history-{s.get('run_id')}.meta.json): a worker did not "
            "deliver all of its operations, or lines of another run came in; the verdict "
            "cannot be trusted"
        )
    if "replicas_agree" in s:
        lines.append(f"replicas agree: {s['replicas_agree']}")
    d = s["results_dir"]
    lines.append(
        f"reports: {d}/report.html, {d}/locust_stats.csv (and _stats_history, _failures, "
        f"_exceptions), final totals {d}/stats-{s.get('run_id')}.json, history "
        f"{s.get('history_file')}, summary {d}/summary.json"
    )
    lines.append("OK" if s["ok"] else "FAILED")
    return lines
