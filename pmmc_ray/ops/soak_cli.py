"""``pmmc-ray soak``: a long run at load that prints memory, disk and failover over time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak",
        help="a long run at load: memory, disk and failover times over time",
        description=(
            "Start an embedded local Ray, deploy f=1, and drive it with clients that "
            "overwrite a fixed set of keys (the history grows, the live state does not). "
            "Every --sample-every seconds print each role's largest RSS, the largest log "
            "and the data directory's size; every --kill-every seconds kill the active "
            "leader and print the time to the next committed write. At the end check that "
            "the replicas agree and the history is linearizable, and write JSON to --out. "
            "Exit status 0 when both hold."
        ),
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--keys", type=int, default=100, help="keys overwritten (default 100)")
    p.add_argument("--value-bytes", type=int, default=1024, help="value size (default 1024)")
    p.add_argument(
        "--kill-every", type=float, default=60.0, help="seconds between leader kills (default 60)"
    )
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--config", help="deployment config file (.json or .toml)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    p.add_argument("--out", default="results/soak.json", help="(default results/soak.json)")
    p.add_argument("--json", action="store_true", help="print the JSON result at the end")


def _err(msg: str) -> int:
    print(f"pmmc-ray soak: {msg}", file=sys.stderr)
    return 2


def _line(kind: str, item: Any) -> str:
    if kind == "sample":
        rss = " ".join(f"{r}={v:.0f}" for r, v in sorted(item.rss_mb.items()))
        logs = " ".join(f"{r}={v:.1f}" for r, v in sorted(item.storage_mb.items()))
        return (
            f"t={item.t:6.0f}s  {item.ops_per_s:6.1f} ops/s  data dir {item.data_dir_mb:7.2f} MB"
            f"  RSS MB: {rss}  logs MB: {logs}"
        )
    return (
        f"t={item.t:6.0f}s  killed {item.leader}: next committed write after "
        f"{item.seconds:.2f}s (largest p1b {item.largest_p1b_bytes} B)"
    )


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.clients < 1 or args.keys < 1 or args.value_bytes < 1:
        return _err("--duration must be > 0; --clients, --keys, --value-bytes >= 1")
    if args.kill_every <= 0 or args.sample_every <= 0:
        return _err("--kill-every and --sample-every must be > 0")
    from ..ray_cli import _load_config, _ray_env_for_local_run, _write_json

    try:
        cfg = _load_config(args.config, namespace=f"soak-{os.getpid()}")
    except ValueError as e:
        return _err(str(e))
    _ray_env_for_local_run()
    from ..runtime import deploy
    from ..runtime.deployment import start_local_ray, stop_ray
    from .soak import run_soak

    say = (lambda *a, **k: None) if args.json else print
    say(f"starting a local Ray and deploying namespace {cfg.namespace} ...", flush=True)
    t0 = time.monotonic()
    start_local_ray(cfg.namespace, args.num_cpus)
    try:
        dep = deploy(cfg)
        say(f"ready after {time.monotonic() - t0:.1f}s; soaking for {args.duration:g}s", flush=True)
        try:
            res = run_soak(
                dep,
                duration_s=args.duration,
                clients=args.clients,
                keys=args.keys,
                value_bytes=args.value_bytes,
                kill_every_s=args.kill_every,
                sample_every_s=args.sample_every,
                progress=lambda kind, item: say(_line(kind, item), flush=True),
            )
        finally:
            dep.shutdown(delete_data=True)
    finally:
        stop_ray()
    out = res.to_dict()
    _write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{res.ops} operations ({res.ops_unknown} unknown outcome) in {res.duration_s}s")
        for k, v in out["growth"].items():
            print(f"  {k}: {v}")
        for e in res.errors[:5]:
            print(f"client error: {e}")
        print(f"replicas agree: {res.replicas_agree}")
        print(f"history linearizable: {res.linearizable} {res.lin_detail}")
        print(f"wrote {args.out}")
        print("OK" if res.ok else "FAILED")
    return 0 if res.ok else 1
