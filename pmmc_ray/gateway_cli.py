"""``pmmc-ray gateway start | stop | status | token``: the HTTP gateways of a deployment."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .gateway.schema import DEFAULT_MAX_BODY_BYTES, ESCAPED_MAX_BODY_BYTES
from .stdio import stdout_to_stderr


def add_gateway_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--host/--port/...`` (or ``--gateway-host/...`` with ``prefix="gateway-"``)."""
    p.add_argument(
        f"--{prefix}host",
        default="127.0.0.1",
        help=(
            "address to bind on every node: 127.0.0.1 (default; this node's programs only), "
            "'node' (each node's own address) or 0.0.0.0 (every interface); a specific IP "
            "exists on one node only"
        ),
    )
    p.add_argument(
        f"--{prefix}port", type=int, default=8080, help="port, the same on every node (8080)"
    )
    p.add_argument(
        f"--{prefix}max-clients",
        type=int,
        default=256,
        help="concurrent operations per gateway (default 256)",
    )
    p.add_argument(
        f"--{prefix}op-timeout",
        type=float,
        default=10.0,
        help="seconds before an operation's outcome is unknown (HTTP 504; default 10)",
    )
    p.add_argument(
        f"--{prefix}max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=(
            f"largest request body (default {DEFAULT_MAX_BODY_BYTES}: a full-size cas sent as "
            f"UTF-8; {ESCAPED_MAX_BODY_BYTES} admits every legal operation however escaped)"
        ),
    )
    p.add_argument(
        f"--{prefix}allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "a host name clients use to reach the gateway, besides loopback names and the "
            "bind address (repeatable; '*': any). Other Host headers are refused (403)"
        ),
    )
    p.add_argument(
        f"--{prefix}allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help=(
            "a web page origin (e.g. https://app.example) allowed to use the gateway "
            "(repeatable; '*': any). By default every request of a web page is refused (403)"
        ),
    )
    p.add_argument(
        f"--{prefix}require-token",
        action="store_true",
        help=(
            "require the deployment's bearer token even on loopback (it is always required "
            "when the gateway listens beyond loopback; see pmmc-ray gateway token)"
        ),
    )


def settings_from(args: argparse.Namespace, prefix: str = "") -> Any:
    from .gateway.server import GatewaySettings

    p = prefix.replace("-", "_")
    return GatewaySettings(
        host=getattr(args, f"{p}host"),
        port=getattr(args, f"{p}port"),
        max_clients=getattr(args, f"{p}max_clients"),
        op_timeout_s=getattr(args, f"{p}op_timeout"),
        max_body_bytes=getattr(args, f"{p}max_body_bytes"),
        allow_hosts=tuple(getattr(args, f"{p}allow_host")),
        allow_origins=tuple(getattr(args, f"{p}allow_origin")),
        require_token=getattr(args, f"{p}require_token"),
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway",
        help="start, stop or list the HTTP gateways of a deployment (one per node)",
        description=(
            "The HTTP API of a deployment runs in one gateway actor per Ray node. 'start' "
            "starts one on every alive node that has none, 'stop' removes them, 'status' "
            "lists them with their counters, 'token' prints the bearer token a gateway "
            "listening beyond loopback requires (Authorization: Bearer <token>)."
        ),
    )
    p.add_argument("action", choices=["start", "stop", "status", "token"])
    p.add_argument("--address", default=None, help="Ray address (default: auto)")
    p.add_argument("--namespace", default="pmmc", help="deployment namespace (default pmmc)")
    p.add_argument("--json", action="store_true")
    add_gateway_options(p)


def _err(msg: str) -> int:
    print(f"pmmc-ray: {msg}", file=sys.stderr)
    return 2


def print_gateways(infos: list[dict[str, Any]]) -> None:
    for g in infos:
        where = g.get("url") or f"ERROR {g.get('error')}"
        print(
            f"gateway on node {str(g.get('node_id', '?'))[:12]} ({g.get('hostname', '?')}): {where}"
        )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except (ValueError, TypeError) as e:
        return _err(str(e))
    from .gateway.server import (
        gateway_namespace,
        gateway_token,
        list_gateways,
        start_gateways,
        stop_gateways,
    )
    from .runtime.deployment import _ensure_ray

    try:
        if args.action == "start":
            infos = start_gateways(args.namespace, settings, address=args.address)
            if args.json:
                print(json.dumps(infos, indent=2))
            else:
                print_gateways(infos)
            return 0
        if args.action == "token":
            # Only the token goes to standard output (for TOKEN=$(pmmc-ray gateway token)):
            # whatever Ray prints while connected goes to standard error.
            with stdout_to_stderr():
                _ensure_ray(gateway_namespace(args.namespace), args.address, start_local=False)
                token = gateway_token(args.namespace)
            if token is None:
                return _err(
                    f"{args.namespace} has no gateway token: it is made when a gateway that "
                    "needs one starts (--host beyond loopback, or --require-token)"
                )
            print(token)
            return 0
        _ensure_ray(gateway_namespace(args.namespace), args.address, start_local=False)
        if args.action == "stop":
            n = stop_gateways(args.namespace)
            print(f"stopped {n} gateway(s) of {args.namespace}")
            return 0
        infos = list_gateways(args.namespace, with_stats=True)
        if args.json:
            print(json.dumps(infos, indent=2))
        elif not infos:
            print(f"no gateway for {args.namespace}")
        else:
            print_gateways(infos)
            for g in infos:
                st = g.get("stats") or {}
                if st.get("responses") is not None:
                    print(
                        f"  {str(g.get('node_id'))[:12]}: in flight {st.get('in_flight')}, "
                        f"answers {st.get('responses')}, pool {st.get('pool')}"
                    )
        return 0
    except (ValueError, LookupError, TimeoutError, ConnectionError, RuntimeError) as e:
        return _err(str(e))
