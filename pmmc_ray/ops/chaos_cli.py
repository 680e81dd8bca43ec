"""``pmmc-ray chaos``: a seeded nemesis schedule against a live deployment, then checks."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..stdio import stdout_to_stderr, write_to

EXIT_VIOLATION = 1
EXIT_USAGE = 2
EXIT_UNDECIDED = 3
EXIT_CRASHED = 4

# Faster node-death detection than Ray's defaults (3 s x 5 checks) for the cluster this
# command starts on one machine: a killed node's actors come back elsewhere sooner.
_HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .chaos_schedule import GROUPS, KINDS

    p = sub.add_parser(
        "chaos",
        help="a seeded fault schedule under concurrent clients, then every safety check",
        description=(
            "Deploy f=1 (on a multi-node Ray cluster this command starts on this machine, "
            "or on --address), run concurrent clients that record a full history, and "
            "apply a seeded schedule of faults, printed before it starts: kills of every "
            "role (ray.kill and SIGKILL), network faults (drop, delay, duplicate, "
            "partitions of the active leader or a minority of acceptors, one-way too), "
            "pauses (SIGSTOP/SIGCONT), whole-node kills and a lost disk. Then heal and "
            "check: the history is linearizable, every acknowledged append is in the final "
            "reads exactly once, the replicas converge, every role is alive and not "
            "refusing. Writes summary.json, report.html (throughput and latency over time "
            "with every fault marked), history.jsonl and schedule.txt to --out. Exit status "
            f"0 when every check passes, {EXIT_VIOLATION} on any violation, "
            f"{EXIT_UNDECIDED} when the linearizability checker could not decide (or client "
            f"threads did not stop), {EXIT_CRASHED} when the run itself failed. The same "
            "--seed gives the same schedule and the same client choices (real Ray's "
            "timing differs from run to run)."
        ),
    )
    p.add_argument("--duration", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--seed", type=int, default=1, help="schedule and workload seed (default 1)")
    p.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    p.add_argument(
        "--faults",
        default="all",
        help=f"comma list of kinds or groups (default all). Groups: {', '.join(GROUPS)}; "
        f"kinds: {', '.join(KINDS)}",
    )
    p.add_argument(
        "--nodes",
        type=int,
        default=3,
        help="nodes of the local Ray cluster this command starts (default 3; 1: a plain "
        "local Ray, node faults skipped)",
    )
    p.add_argument(
        "--address",
        help="use this existing Ray cluster instead (node faults are then skipped; SIGKILL "
        "and SIGSTOP only reach actors on this machine)",
    )
    p.add_argument("--config", help="deployment config file (.json or .toml)")
    p.add_argument("--out", help="directory for the results (default results/chaos-seed<N>)")
    p.add_argument("--json", action="store_true", help="print the JSON summary on stdout")
    p.add_argument(
        "--print-schedule", action="store_true", help="print the schedule and exit (no Ray)"
    )
    p.add_argument(
        "--lincheck-timeout",
        type=float,
        default=120.0,
        help="seconds for the linearizability check (default 120)",
    )


def _err(msg: str) -> int:
    print(f"pmmc-ray chaos: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _start_cluster(nodes: int, namespace: str) -> tuple[Any, dict[str, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": _HEALTH_CHECKS,
        },
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=namespace, log_to_driver=False)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, {"kind": "local multi-node (ray.cluster_utils)", "nodes": nodes}


def run(args: argparse.Namespace) -> int:
    if not args.json:
        return _run(args)
    # --json: stdout holds only the summary (see pmmc_ray.stdio).
    with stdout_to_stderr() as real_stdout:
        return _run(args, json_out=real_stdout)


def _run(args: argparse.Namespace, json_out: int | None = None) -> int:
    from .chaos_schedule import describe, expand_kinds, make_schedule, planned_kills

    if args.duration <= 0 or args.clients < 1 or args.nodes < 1:
        return _err("--duration must be > 0, --clients and --nodes >= 1")
    try:
        kinds = expand_kinds(args.faults)
    except ValueError as e:
        return _err(str(e))
    from ..ray_cli import _load_config, _ray_env_for_local_run, _write_json

    try:
        cfg = _load_config(args.config, namespace=f"chaos-{os.getpid()}")
    except ValueError as e:
        return _err(str(e))
    schedule = make_schedule(
        args.seed, args.duration, kinds, f=cfg.f, replicas=len(cfg.replica_ids())
    )
    # With --json, stdout holds only the JSON summary; everything else goes to stderr.
    stream = sys.stderr if args.json else sys.stdout

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    say(
        f"chaos schedule, seed {args.seed}, {args.duration:g}s, kinds {','.join(kinds)}: "
        f"{len(schedule)} faults; planned kills by role {planned_kills(schedule)}"
    )
    for f in schedule:
        say("  " + describe(f))
    if args.print_schedule:
        return 0
    if not schedule:
        return _err("--duration is too short for any fault (at least ~20 s)")

    if not args.address:
        # Before ray is imported: it reads these when its constants are loaded.
        _ray_env_for_local_run()
    out_dir = Path(args.out or f"results/chaos-seed{args.seed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "schedule.txt").write_text("\n".join(describe(f) for f in schedule) + "\n")

    import ray

    from ..check.history import write_jsonl
    from ..runtime import deploy
    from .chaos import run_chaos
    from .chaos_report import write_report

    cluster = None
    data_dir = None
    if args.address:
        ray.init(address=args.address, namespace=cfg.namespace, log_to_driver=False)
        info: dict[str, Any] = {"kind": f"existing cluster at {args.address}"}
        if any(k in kinds for k in ("node-kill", "disk-loss")):
            say(
                "note: node faults are skipped on --address: this command cannot reach "
                "the nodes' processes (run without --address for a local multi-node cluster)"
            )
    else:
        data_dir = tempfile.mkdtemp(prefix="pmmc-chaos-")
        cfg = cfg.model_copy(update={"data_dir": data_dir})
        if args.nodes >= 2:
            say(f"starting a {args.nodes}-node Ray cluster on this machine ...")
            cluster, info = _start_cluster(args.nodes, cfg.namespace)
        else:
            from ..runtime.deployment import start_local_ray

            start_local_ray(cfg.namespace, num_cpus=2)
            info = {"kind": "local single-node Ray", "nodes": 1}
            if any(k in kinds for k in ("node-kill", "disk-loss")):
                say("note: node faults are skipped with --nodes 1")
    info["nodes_alive"] = sum(1 for n in ray.nodes() if n.get("Alive"))
    dep = None
    try:
        t = time.monotonic()
        dep = deploy(cfg)
        say(f"deployed {cfg.namespace} in {time.monotonic() - t:.1f}s; running the schedule")
        res = _run_chaos_or_none(
            run_chaos,
            dep,
            schedule,
            seed=args.seed,
            duration_s=args.duration,
            clients=args.clients,
            kinds=kinds,
            cluster=cluster,
            cluster_info=info,
            lincheck_timeout_s=args.lincheck_timeout,
            on_history=lambda ops: write_jsonl(ops, out_dir / "history.jsonl"),
            say=say,
        )
    finally:
        if dep is not None:
            try:
                dep.shutdown(delete_data=True)
            except Exception as e:
                say(f"warning: shutting the deployment down failed: {e}")
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
    if res is None:
        say(
            f"CRASHED: the chaos run itself failed (see above); no verdict. Replay: "
            f"pmmc-ray chaos --seed {args.seed} --duration {args.duration:g} "
            f"--faults {args.faults} --clients {args.clients}"
        )
        return EXIT_CRASHED
    summary = res.to_dict()
    _write_json(str(out_dir / "summary.json"), summary)
    report = write_report(summary, out_dir / "report.html")
    if json_out is not None:
        write_to(json_out, json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, say)
    say(f"wrote {report}, timeline.svg, summary.json, history.jsonl and schedule.txt")
    if not res.ok:
        say(
            f"replay: pmmc-ray chaos --seed {args.seed} --duration {args.duration:g} "
            f"--faults {args.faults} --clients {args.clients}"
        )
    if res.violations():
        return EXIT_VIOLATION
    return EXIT_UNDECIDED if res.undecided else 0


def _run_chaos_or_none(run_chaos: Any, *args: Any, say: Any, **kw: Any) -> Any:
    """The run's result, or None when the run itself raised (a bug or a cluster that
    fell apart): that is no verdict, and gets its own exit status, not a violation's."""
    import traceback

    try:
        return run_chaos(*args, progress=say, **kw)
    except Exception:
        say(traceback.format_exc())
        return None


def _print_summary(s: dict[str, Any], say: Any) -> None:
    v = s["verdicts"]
    rec = s["recovery"]
    say(
        "faults by kind (planned/applied/skipped): "
        + ", ".join(
            f"{k} {c['planned']}/{c['applied']}/{c['skipped']}"
            for k, c in s["faults_by_kind"].items()
        )
    )
    say(f"actors killed by role: {s['kills_by_role']}; by method: {s['kills_by_method']}")
    say(
        f"operations by outcome: {s['operations_by_outcome']}; {s['throughput_ops_per_s']} "
        f"acknowledged/s; latency ms p50 {s['latency_ms']['p50']} p99 {s['latency_ms']['p99']}"
    )
    lk = rec["leader_kill_to_next_write_s"]
    say(
        f"leader kill -> next acknowledged write: median {lk['median']}s, max {lk['max']}s "
        f"({lk['n']} kills)"
    )
    for kind, r in rec["by_kind"].items():
        say(
            f"  {kind:<19s} next write median {r['next_write_s']['median']}s max "
            f"{r['next_write_s']['max']}s; unavailable median {r['unavailable_s']['median']}s "
            f"max {r['unavailable_s']['max']}s"
        )
    say(
        f"acknowledged appends {s['acknowledged_appends']}: lost "
        f"{v['lost_acknowledged_writes']}, applied twice {v['duplicated_writes']}"
    )
    say(
        f"history: {v['linearizable']} ({v['checked_operations']} operations, "
        f"{v['check_seconds']}s): {v['linearizability_detail']}"
    )
    say(
        f"replicas converged: {v['replicas_converged']}; every role alive and not refusing: "
        f"{v['roles_alive']}" + (f" {s['role_problems'][:3]}" if s["role_problems"] else "")
    )
    if s.get("injected_bug"):
        say(f"INJECTED BUG: {s['injected_bug']} (test only)")
    for problem in v["violations"]:
        say(f"VIOLATION: {problem}")
    if v["undecided"]:
        if s.get("unfinished_clients"):
            say(f"UNDECIDED: client threads did not stop: {s['unfinished_clients']}")
        else:
            say("UNDECIDED: the linearizability checker ran out of time")
    say("OK" if s["ok"] else ("FAILED" if v["violations"] else "UNDECIDED"))
