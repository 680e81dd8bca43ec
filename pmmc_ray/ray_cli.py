"""``pmmc-ray run | up | down | status | get | put | delete | append | cas``.

These commands use Ray through :mod:`pmmc_ray.runtime`, imported only when one of them
runs, so ``pmmc-ray sim`` and ``pmmc-ray lincheck`` start fast and need no cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from .gateway_cli import add_gateway_options
from .runtime.openloop import AUTO_POOL_S, MAX_POOL, MIN_POOL, pool_size

KV_COMMANDS = {"get": 1, "put": 2, "delete": 1, "append": 2, "cas": 3}


def _ray_env_for_local_run() -> None:
    # An embedded single-machine Ray: keep it on loopback and skip the usage-stats
    # prompt. (Never set in cluster configs, where nodes must reach each other.)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


PEERS = ("pysyncobj", "etcd")
MAX_RATE = 1_000_000.0


def _peer_list(arg: str) -> list[str]:
    """--peer: a comma list of PEERS, or "none"."""
    names = [x.strip() for x in arg.split(",") if x.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in PEERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {(bad or [arg])[0]!r} (choose from {', '.join(PEERS)}, or none)"
        )
    return list(dict.fromkeys(names))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: local Ray, f=1 deployment, workload, leader kill, report",
        description=(
            "Start an embedded local Ray, deploy f=1 (2 replicas, 2 leaders, 3 acceptors, "
            "plus a scout and a commander per leader), drive a KV workload from concurrent "
            "clients, kill the active leader halfway, and report throughput, latency, "
            "failover time, replica agreement and the linearizability of the history. "
            "Exit status 0 when the history is linearizable and the replicas agree."
        ),
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--keys", type=int, default=50, help="distinct keys (default 50)")
    p.add_argument("--no-kill", action="store_true", help="do not kill the active leader")
    p.add_argument(
        "--chaos-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also kill a random actor (Ray restarts it) every SECONDS (a chaos soak)",
    )
    p.add_argument("--config", help="deployment config file (.json or .toml)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--out", help="also write the JSON result to this file")

    p = sub.add_parser(
        "bench",
        help="measure hop costs and pmmc-ray latency/throughput next to raw Ray",
        description=(
            "Start an embedded local Ray and measure, in one run: raw Ray round trips and "
            "actor-to-actor hops, the cost of one actor call, then pmmc-ray sequential put "
            "latency and throughput at several client counts, closed loop, and at fixed "
            "offered rates, open loop (--rate); then the same puts on peer systems "
            "(PySyncObj, the optional bench extra: 3 local processes, in memory; etcd, when "
            "an etcd binary is on PATH: 3 local members, fsync on), with the ratio "
            "pmmc-ray / peer next to each figure. Writes JSON to --out."
        ),
    )
    p.add_argument(
        "--out", default="results/bench.json", help="result file (default results/bench.json)"
    )
    p.add_argument("--clients", default="1,4,16", help="client counts (default 1,4,16)")
    p.add_argument(
        "--outstanding",
        default="64,1024",
        help="operations in flight from one process (asyncio clients sharing a mux), a "
        "comma list; 0 skips (default 64,1024)",
    )
    p.add_argument(
        "--value-bytes",
        type=int,
        default=16,
        help="size of the values the --outstanding and --rate runs and etcd write (default 16)",
    )
    p.add_argument(
        "--rate",
        default="",
        help="open-loop runs: a comma list of offered rates, operations per second (e.g. "
        "1000,5000). Each starts operations on a fixed schedule for --duration seconds, "
        "whatever the system does; an operation with no free client at its time is not "
        "started and counted (not_started); latency runs from the scheduled start. "
        "Default: none",
    )
    p.add_argument(
        "--open-clients",
        type=int,
        default=0,
        metavar="N",
        help="clients (one operation in flight each) per open-loop run; 0: enough for "
        f"operations of up to {AUTO_POOL_S:g} s at that rate, at least {MIN_POOL} (default 0)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--config", help="deployment config file (.json or .toml)")
    p.add_argument(
        "--f", type=int, default=None, help="failures tolerated (default 1, or the config's)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    p.add_argument(
        "--peer",
        type=_peer_list,
        default=_peer_list("pysyncobj,etcd"),
        help="peer systems measured on the same workload, a comma list of pysyncobj and "
        "etcd, or none (default pysyncobj,etcd; each is skipped when it is not there: "
        "pip install 'pmmc-ray[bench]' for pysyncobj, an etcd binary on PATH for etcd)",
    )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=None, help="Ray address (default: auto)")
    common.add_argument(
        "--namespace", default=None, help="deployment namespace (default: the config's, or pmmc)"
    )

    p = sub.add_parser(
        "up",
        parents=[common],
        help="deploy on an existing Ray cluster, or re-attach to the deployment's data",
        description=(
            "Deploy on a running Ray cluster. If the data directory already holds this "
            "namespace's deployment (after ray stop / ray start, ray down / ray up with the "
            "same disks, or pmmc-ray down --keep-data), re-attach to it: every acknowledged "
            "write is there. --fresh deletes that data first."
        ),
    )
    p.add_argument("--config", help="deployment config file (.json or .toml)")
    p.add_argument("-f", type=int, default=None, help="crashes to tolerate (default 1)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete the namespace's existing data first and start a new deployment",
    )
    p.add_argument(
        "--gateway", action="store_true", help="also start the HTTP gateway on every node"
    )
    add_gateway_options(p, prefix="gateway-")
    p = sub.add_parser(
        "down",
        parents=[common],
        help="remove a deployment and delete its data (--keep-data to keep it)",
        description=(
            "Stop every actor of the deployment (and its HTTP gateways) and delete its data "
            "on every node. With --keep-data the data stays, and a later pmmc-ray up "
            "re-attaches to it. If no deployment of that namespace runs in the cluster, the "
            "data left in this node's data directory (per --config) is deleted."
        ),
    )
    p.add_argument("--keep-data", action="store_true", help="keep the data directory")
    p.add_argument("--config", help="deployment config file (for its data_dir)")
    p = sub.add_parser(
        "replace",
        parents=[common],
        help="replace a replica, leader or acceptor by a new actor, through the log",
    )
    p.add_argument("name", help="the member to replace, e.g. acceptor-2")
    p = sub.add_parser("status", parents=[common], help="show every role of a deployment")
    p.add_argument("--json", action="store_true")
    for name, nargs in KV_COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=f"KV {name} on a deployment")
        p.add_argument(
            "args", nargs=nargs, metavar={1: "KEY", 2: "KEY VALUE", 3: "KEY EXPECTED NEW"}[nargs]
        )


def _err(msg: str) -> int:
    print(f"pmmc-ray: {msg}", file=sys.stderr)
    return 2


def _load_config(path: str | None, **overrides: Any) -> Any:
    """The config file (if any) with command-line overrides (None: not given) on top."""
    from .runtime.config import DeploymentConfig

    if path:
        return DeploymentConfig.from_file(path, **overrides)
    return DeploymentConfig.model_validate({k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run_job(args)
    if args.command == "bench":
        return _bench(args)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        if args.command == "status":
            return _status(args)
        if args.command == "replace":
            return _replace(args)
        return _kv(args)
    except (ValueError, LookupError, TimeoutError, ConnectionError, RuntimeError) as e:
        return _err(str(e))


# --- the main job ---------------------------------------------------------------------------------


def _run_job(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.clients < 1 or args.keys < 1:
        return _err("--duration must be > 0, --clients and --keys >= 1")
    if args.chaos_every is not None and args.chaos_every <= 0:
        return _err("--chaos-every must be > 0")
    try:
        cfg = _load_config(args.config, namespace=f"run-{os.getpid()}")
    except ValueError as e:
        return _err(str(e))
    _ray_env_for_local_run()
    from .runtime import deploy
    from .runtime.deployment import start_local_ray, stop_ray
    from .runtime.workload import run_workload

    say = (lambda *a, **k: None) if args.json else print
    t0 = time.monotonic()
    say("starting a local Ray ...", flush=True)
    start_local_ray(cfg.namespace, args.num_cpus)
    try:
        say(
            f"deploying {cfg.replicas} replicas, {cfg.leaders} leaders (+ scouts, commanders), "
            f"{cfg.acceptors} acceptors in namespace {cfg.namespace} ...",
            flush=True,
        )
        dep = deploy(cfg)
        deploy_s = time.monotonic() - t0
        say(
            f"ready after {deploy_s:.1f}s; {args.clients} clients for {args.duration:g}s",
            flush=True,
        )
        tty = sys.stdout.isatty()

        def progress(p: dict[str, Any]) -> None:
            line = (
                f"  t={p['t']:5.1f}s  ok={p['ops_ok']:6d}  {p['ops_last_s']:4d} ops/s"
                f"  unknown={p['ops_unknown']}" + (f"  killed {p['killed']}" if p["killed"] else "")
            )
            say(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)

        try:
            res = run_workload(
                dep,
                clients=args.clients,
                duration_s=args.duration,
                keys=args.keys,
                kill_leader=not args.no_kill,
                chaos_every_s=args.chaos_every,
                progress=None if args.json else progress,
            )
        finally:
            dep.shutdown(delete_data=True)
    finally:
        stop_ray()
    if not args.json and sys.stdout.isatty():
        print()
    out = {"deploy_s": round(deploy_s, 2), **res.to_dict()}
    ok = (
        out["linearizable"] == "linearizable"
        and bool(out["replicas_consistent"])
        and res.ops_ok > 0
        and not res.client_errors
        and (res.killed is None or res.ops_ok_after_kill > 0)
    )
    out["ok"] = ok
    if args.out:
        _write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(report_lines(out)))
    return 0 if ok else 1


def report_lines(out: dict[str, Any]) -> list[str]:
    """The human-readable summary of a ``run`` result (the dict printed with --json)."""
    lat = out["latency_ms"]
    lines = [
        f"throughput {out['throughput_ops_per_s']} ops/s ({out['ops_ok']} ok, "
        f"{out['ops_unknown_outcome']} unknown outcome) with {out['clients']} clients",
        f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}"
        f"   (raw Ray actor round trip p50 {out['raw_ray_round_trip_ms_p50']} ms)",
    ]
    if out["killed"]:
        lines.append(
            f"killed active leader {out['killed']} at t={out['kill_at_s']}s: failover "
            f"{out['failover_s']}s (longest time with no completed operation after the "
            f"kill); {out['ops_ok_after_kill']} operations completed after it"
        )
    else:
        lines.append("no leader was killed")
    if out.get("chaos_kills"):
        kills = ", ".join(f"{n} at {t}s" for t, n in out["chaos_kills"])
        lines.append(f"chaos: killed {len(out['chaos_kills'])} actors: {kills}")
    lines += [f"client error: {e}" for e in out["client_errors"]]
    reps = out["replica_states"].values()
    states = sorted({str(v.get("state_sha256", "?"))[:12] for v in reps})
    slots = sorted({str(v.get("slot_out")) for v in reps})
    lines.append(f"replicas agree: {out['replicas_consistent']} (slot_out {slots}, state {states})")
    lines.append(f"history linearizable: {out['linearizable']} {out['linearizability_detail']}")
    lines.append("OK" if out["ok"] else "FAILED")
    return lines


def _write_json(path: str, data: dict[str, Any]) -> None:
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _bench(args: argparse.Namespace) -> int:
    try:
        clients = [int(x) for x in args.clients.split(",")]
        if not clients or min(clients) < 1 or args.duration <= 0:
            raise ValueError
    except ValueError:
        return _err("--clients must be a comma list of counts >= 1 and --duration > 0")
    try:
        outstanding = [int(x) for x in args.outstanding.split(",")]
        if min(outstanding) < 0:
            raise ValueError
        outstanding = [n for n in outstanding if n > 0]
    except ValueError:
        return _err("--outstanding must be a comma list of counts >= 0")
    if not 1 <= args.value_bytes <= 1 << 20:
        return _err("--value-bytes must be between 1 and 1048576")
    try:
        rates = [float(x) for x in args.rate.split(",") if x.strip()]
        if any(not 0 < r <= MAX_RATE for r in rates):
            raise ValueError
    except ValueError:
        return _err(f"--rate must be a comma list of rates > 0 and <= {MAX_RATE:g} per second")
    if not 0 <= args.open_clients <= MAX_POOL:
        return _err(f"--open-clients must be between 0 (auto) and {MAX_POOL}")
    if args.open_clients and not rates:
        return _err("--open-clients needs --rate")
    try:
        cfg = _load_config(args.config, namespace=f"bench-{os.getpid()}", f=args.f)
    except ValueError as e:
        return _err(str(e))
    open_runs = [(r, pool_size(r, args.open_clients)) for r in rates]
    _ray_env_for_local_run()
    from .runtime.bench import pmmc, raw_ray
    from .runtime.deployment import start_local_ray, stop_ray

    start_local_ray(cfg.namespace, args.num_cpus)
    try:
        print("raw Ray ...", flush=True)
        raw = raw_ray(cfg.namespace)
        print(json.dumps(raw), flush=True)
        print(f"pmmc-ray with clients {clients} ...", flush=True)
        ours = pmmc(
            cfg.model_dump(), clients, args.duration, outstanding, args.value_bytes, open_runs
        )
    finally:
        stop_ray()
    # After Ray has stopped, so the systems do not share the CPUs; the same counts of
    # operations in flight as both pmmc-ray closed loops, the same rates and pools.
    peers = _run_peers(args.peer, sorted({*clients, *outstanding}), args, open_runs)
    from .runtime.bench_peers import add_ratios

    add_ratios(ours, peers)
    out = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "raw_ray": raw,
        "pmmc_ray": ours,
        "peers": peers,
    }
    _write_json(args.out, out)
    print(json.dumps(ours, indent=2))
    for line in _open_loop_lines(ours) + _ratio_lines(ours, peers):
        print(line)
    print(f"wrote {args.out}")
    return 0


def _run_peers(
    names: list[str], in_flight: list[int], args: argparse.Namespace, open_runs: list
) -> dict[str, Any]:
    """Each peer of ``names``: its result, ``{"skipped": why}``, or ``{"error": what}``
    (a peer's failure is reported, not fatal: pmmc-ray's figures are kept)."""
    peers: dict[str, Any] = {}
    for name in names:
        rates = [r for r, _ in open_runs]
        print(f"{name} with {in_flight} in flight, rates {rates} ...", flush=True)
        try:
            if name == "pysyncobj":
                from .runtime.bench_peers import pysyncobj_bench

                peers[name] = pysyncobj_bench(in_flight, args.duration, rates=open_runs)
            else:
                from .runtime.bench_etcd import etcd_bench

                peers[name] = etcd_bench(
                    in_flight, args.duration, rates=open_runs, value_bytes=args.value_bytes
                )
        except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as e:
            peers[name] = {"error": f"{type(e).__name__}: {e}"}
    return peers


def _open_loop_lines(ours: dict[str, Any]) -> list[str]:
    """One line per pmmc-ray open-loop run."""
    lines = []
    for r in ours.get("open_loop", []):
        lat = r["latency_ms"]
        lines.append(
            f"open loop {r['offered_ops_per_s']:g}/s ({r['clients']} clients): pmmc-ray "
            f"{r['committed_ops_per_s']} committed ops/s, p50 {lat['p50']} p99 {lat['p99']} "
            f"p999 {lat['p999']} ms from the scheduled start; not started {r['not_started']}, "
            f"unknown {r['unknown']}, errors {r['errors'] or 0}; {r.get('linearizable')}, "
            f"replicas agree: {r.get('replicas_consistent')}"
        )
    return lines


def _ratio_lines(ours: dict[str, Any], peers: dict[str, Any]) -> list[str]:
    """One line per figure: pmmc-ray, the peer, and pmmc-ray / peer."""
    lines = []
    for name, peer in peers.items():
        if "skipped" in peer or "error" in peer:
            lines.append(f"{name}: {peer.get('skipped') or 'failed: ' + peer['error']}")
            continue
        key = f"ratio_vs_{name}"
        seq = ours.get("sequential_put_ms", {})
        if key in seq:
            ps = peer["sequential_put_ms"]
            lines.append(
                f"sequential put p50: pmmc-ray {seq['p50']} ms, {name} {ps['p50']} ms, "
                f"ratio {seq[key]['p50']}; p99: {seq['p99']} / {ps['p99']} ms, "
                f"ratio {seq[key]['p99']}"
            )
        theirs = {r["clients"]: r for r in peer.get("workload", [])}
        runs = [(r["clients"], "clients", r) for r in ours.get("workload", [])]
        runs += [(r["outstanding"], "outstanding (mux)", r) for r in ours.get("pipelined", [])]
        for n, what, run in runs:
            if key not in run:
                continue
            t = theirs[n]
            lines.append(
                f"{n} {what}: pmmc-ray {run['throughput_ops_per_s']} ops/s, "
                f"{name} {t['throughput_ops_per_s']} ops/s, ratio {run[key]['throughput']}; "
                f"p50 {run['latency_ms']['p50']} / {t['latency_ms']['p50']} ms, "
                f"ratio {run[key]['latency_p50']}"
            )
        theirs_open = {r["offered_ops_per_s"]: r for r in peer.get("open_loop", [])}
        for run in ours.get("open_loop", []):
            if key not in run:
                continue
            t = theirs_open[run["offered_ops_per_s"]]
            lines.append(
                f"open loop {run['offered_ops_per_s']:g}/s: pmmc-ray "
                f"{run['committed_ops_per_s']} ops/s, {name} {t['committed_ops_per_s']} ops/s "
                f"(not started {run['not_started']} / {t['not_started']}), ratio "
                f"{run[key]['throughput']}; p99 {run['latency_ms']['p99']} / "
                f"{t['latency_ms']['p99']} ms, ratio {run[key]['latency_p99']}"
            )
    return lines


# --- commands against a running deployment ----------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from .runtime import deploy

    cfg = _load_config(args.config, namespace=args.namespace, f=args.f)
    args.namespace = cfg.namespace
    dep = deploy(cfg, ray_address=args.address or "auto", fresh=args.fresh)
    what = "re-attached" if dep.reattached else "deployed"
    print(
        f"{what} {len(dep.names())} actors in namespace {cfg.namespace} "
        f"(deployment {dep.config.deployment_id}, data in {cfg.storage_dir()})"
    )
    for note in dep.notes:
        print(f"note: {note}")
    if args.gateway:
        from .gateway.server import start_gateways
        from .gateway_cli import print_gateways, settings_from

        print_gateways(start_gateways(cfg.namespace, settings_from(args, "gateway-")))
    return 0


def _down(args: argparse.Namespace) -> int:
    from .gateway.server import stop_gateways
    from .runtime import NotDeployedError, connect

    cfg = _load_config(args.config, namespace=args.namespace)
    args.namespace = cfg.namespace
    try:
        dep = connect(args.namespace, address=args.address)
    except NotDeployedError:
        return _down_data_only(cfg, args.keep_data)
    gateways = stop_gateways(args.namespace)
    dep.shutdown(delete_data=not args.keep_data)
    kept = f"; its data stays in {dep.config.storage_dir()}" if args.keep_data else ""
    also = f" and {gateways} gateway(s)" if gateways else ""
    print(f"removed deployment {args.namespace}{also}{kept}")
    return 0


def _down_data_only(cfg: Any, keep: bool) -> int:
    """No deployment of that namespace runs: delete the data it left on this node."""
    from .runtime.manifest import (
        deploy_lock,
        foreign_files,
        held_by,
        read_manifest,
        remove_empty,
        wipe,
    )

    sdir = cfg.storage_dir()
    man = read_manifest(sdir)
    if man is None:
        if foreign_files(sdir):
            return _err(f"{sdir} holds no pmmc-ray deployment manifest; not deleting it")
        return _err(f"no deployment named {cfg.namespace!r} is running, and {sdir} has no data")
    if keep:
        print(f"deployment {man.deployment_id} is not running; its data stays in {sdir}")
        return 0
    with deploy_lock(sdir, f"pmmc-ray down pid {os.getpid()}"):
        busy = held_by(sdir)
        if busy:
            return _err(f"{sdir} is in use by live processes: {'; '.join(busy[:3])}")
        wipe(sdir)
    remove_empty(sdir)
    print(
        f"deployment {man.deployment_id} was not running; deleted its data in {sdir} "
        "(other nodes' data directories are not reachable from here)"
    )
    return 0


def _replace(args: argparse.Namespace) -> int:
    from .runtime import connect

    dep = connect(args.namespace or "pmmc", address=args.address)
    new = dep.replace(args.name)
    cfg = dep.configurations()[-1]
    print(
        f"{args.name} replaced by {new}: configuration epoch {cfg['epoch']} from slot "
        f"{cfg['start_slot']}: replicas {cfg['replicas']}, leaders {cfg['leaders']}, "
        f"acceptors {cfg['acceptors']}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from .runtime import connect

    args.namespace = args.namespace or "pmmc"
    dep = connect(args.namespace, address=args.address)
    st = dep.status()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print(f"deployment {st['namespace']}")
    for note in st.get("notes", []):
        print(f"note: {note}")
    cols = f"{'name':<14} {'node':<15} {'pid':>7} {'rst':>3}  details"
    print(cols)
    for name, s in sorted(st["actors"].items()):
        if not isinstance(s, dict) or "error" in s:
            what = s.get("state", "unreachable") if isinstance(s, dict) else "unreachable"
            err = s.get("error", s) if isinstance(s, dict) else s
            print(f"{name:<14} {'?':<15} {'?':>7} {'?':>3}  {what.upper()}: {err}")
            continue
        node = f"{s.get('node_ip', '?')}/{str(s.get('node_id', '?'))[:4]}"
        print(
            f"{name:<14} {node:<15} {s.get('pid', '?'):>7} "
            f"{s.get('restarts') if s.get('restarts') is not None else '?':>3}  {_details(s)}"
        )
    rep = next(
        (
            s
            for n, s in sorted(st["actors"].items())
            if n.startswith("replica-") and isinstance(s, dict)
        ),
        None,
    )
    if rep and rep.get("configs"):
        c = rep["configs"][-1]
        print(
            f"configuration epoch {c['epoch']} from slot {c['start_slot']}: replicas {c['replicas']}, "
            f"leaders {c['leaders']}, acceptors {c['acceptors']}"
        )
    for line in action_lines(st):
        print(line)
    return 0


def action_lines(st: dict[str, Any]) -> list[str]:
    """What an operator should do about the deployment in ``st`` (a status() result)."""
    ns = st["namespace"]
    out = []
    for name, s in sorted(st["actors"].items()):
        if not isinstance(s, dict):
            continue
        if s.get("refusing", "").startswith("storage lost") and name.startswith("acceptor-"):
            out.append(
                f"ACTION: {name} lost its storage and will never vote again; replace it: "
                f"pmmc-ray replace {name} --namespace {ns}"
            )
        elif s.get("refusing"):
            out.append(f"ACTION: {name} refuses to run: {s['refusing']}")
        elif "error" in s and s.get("state") in ("dead", "missing"):
            out.append(f"ACTION: {name} is {s['state']}: {s['error']}")
    return out


def _details(s: dict[str, Any]) -> str:
    parts = []
    if s.get("refusing"):
        parts.append(f"REFUSING: {s['refusing']}")
    role = s.get("role")
    if role == "replica":
        parts.append(f"slot_in={s.get('slot_in')} slot_out={s.get('slot_out')}")
        if s.get("recovering"):
            parts.append("recovering")
    elif role == "leader":
        if s.get("storage_lost_at_start"):
            parts.append("lost its storage: leads under a fresh identity")
        for e, ep in (s.get("epochs") or {}).items():
            b = ep.get("ballot", ["?", "?"])
            state = (
                "active"
                if ep.get("active")
                else "scouting"
                if ep.get("scouting")
                else "stepped aside"
                if ep.get("stepped_aside")
                else "passive"
            )
            watching = f" watching {ep['watching']}" if ep.get("watching") else ""
            parts.append(f"epoch {e}: ballot {b[0]}.{b[1]} {state}{watching}")
    elif role == "acceptor":
        for e, ep in (s.get("epochs") or {}).items():
            parts.append(f"epoch {e}: {ep}")
    return "; ".join(parts)


def _kv(args: argparse.Namespace) -> int:
    from .runtime import connect
    from .runtime.client import OperationRejected, OutcomeUnknownError

    args.namespace = args.namespace or "pmmc"
    dep = connect(args.namespace, address=args.address)
    a = list(args.args)
    if args.command == "cas" and a[1] == "-":
        a[1] = None  # "-" means "expect the key to be absent"
    try:
        result = dep.client().execute((args.command, *a))
    except OperationRejected as e:
        return _err(f"rejected: {e}")
    except OutcomeUnknownError as e:
        return _err(str(e))
    if args.command == "get":
        if result is None:
            print("(absent)", file=sys.stderr)
            return 1
        print(result)
    elif args.command == "cas":
        print("ok" if result else "mismatch")
        return 0 if result else 1
    return 0
