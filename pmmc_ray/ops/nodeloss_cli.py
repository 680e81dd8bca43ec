"""``pmmc-ray nodeloss``: kill a whole node of a multi-node Ray cluster on this machine."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nodeloss",
        help="lose a whole node (and optionally its disk) of a local multi-node cluster",
        description=(
            "Start a Ray cluster of --nodes nodes on this machine (ray.cluster_utils), deploy "
            "f=1 spread over them, show where every actor runs, drive a recorded workload, "
            "and kill the node that runs the active leader (hard by default). Print the time "
            "from the kill to the next committed write. With --lose-disk the node's disk is "
            "gone too: its acceptor is replaced through the log. Exit status 0 when the "
            "acceptors were on distinct nodes, nothing acknowledged was lost, the history is "
            "linearizable and the replicas agree."
        ),
    )
    p.add_argument("--nodes", type=int, default=3, help="nodes, 3 or more (default 3)")
    p.add_argument("--graceful", action="store_true", help="remove the node gracefully")
    p.add_argument("--lose-disk", action="store_true", help="the node's disk is gone too")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--clients", type=int, default=3, help="client threads (default 3)")
    p.add_argument("--json", action="store_true", help="print the JSON result")
    p.add_argument("--out", help="also write the JSON result to this file")


def run(args: argparse.Namespace) -> int:
    from ..ray_cli import _ray_env_for_local_run, _write_json

    _ray_env_for_local_run()
    from .nodeloss import run_nodeloss

    say = (lambda _m: None) if args.json else (lambda m: print(m, flush=True))
    try:
        res = run_nodeloss(
            nodes=args.nodes,
            hard=not args.graceful,
            lose_disk=args.lose_disk,
            duration_s=args.duration,
            clients=args.clients,
            progress=say,
        )
    except ValueError as e:
        print(f"pmmc-ray nodeloss: {e}", file=sys.stderr)
        return 2
    out = res.to_dict()
    if args.out:
        _write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{res.ops_ok} operations ({res.ops_unknown} unknown outcome), "
            f"{res.acked_appends} acknowledged appends: {len(res.lost_appends)} lost, "
            f"{len(res.duplicated_appends)} applied twice"
        )
        print(
            f"acceptors on distinct nodes: {res.acceptors_on_distinct_nodes}; replicas and "
            f"leaders too: {res.roles_spread}"
        )
        print(f"killed node {res.victim_node} at t={res.killed_at_s}s with {res.victims}")
        print(f"next committed write after {res.next_write_s}s")
        for old, new in res.replaced.items():
            print(f"{old} lost its disk: replaced by {new}")
        for e in res.errors[:5]:
            print(f"error: {e}")
        print(f"replicas agree: {res.replicas_agree}")
        print(f"history linearizable: {res.linearizable} {res.lin_detail}")
        print("OK" if res.ok else "FAILED")
    return 0 if res.ok else 1
