"""``pmmc-ray``: the command line. The only module that parses argv and prints."""

from __future__ import annotations

import argparse
import sys

from . import gateway_cli, loadtest_cli, ray_cli
from .check import lincheck_cli
from .ops import chaos_cli, nodeloss_cli, soak_cli
from .sim import cli as sim_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pmmc-ray",
        description="Paxos Made Moderately Complex: a replicated state machine on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ray_cli.add_parsers(sub)
    sim_cli.add_parser(sub)
    lincheck_cli.add_parser(sub)
    gateway_cli.add_parser(sub)
    loadtest_cli.add_parser(sub)
    soak_cli.add_parser(sub)
    nodeloss_cli.add_parser(sub)
    chaos_cli.add_parser(sub)
    return parser


_COMMANDS = {
    "sim": sim_cli.run,
    "lincheck": lincheck_cli.run,
    "gateway": gateway_cli.run,
    "loadtest": loadtest_cli.run,
    "soak": soak_cli.run,
    "nodeloss": nodeloss_cli.run,
    "chaos": chaos_cli.run,
}
_COMMANDS.update(
    {
        name: ray_cli.run
        for name in ("run", "bench", "up", "down", "replace", "status", *ray_cli.KV_COMMANDS)
    }
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
