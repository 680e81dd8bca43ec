"""The ``lincheck`` CLI subcommand: check a history file for linearizability.

Formats and the model each is checked against:

* ``jepsen`` (``.log``): Jepsen compare-and-set register log -> `CAS_REGISTER_MODEL`
* ``kv`` (``.txt``): Porcupine key/value log -> `PORCUPINE_KV_MODEL`
* ``jsonl`` (``.jsonl``/``.json``): the project's own history -> `KV_MODEL`

Exit codes: 0 linearizable, 1 not linearizable, 2 unknown (time budget
exhausted) or the file could not be read or parsed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pmmc_ray.check.history import (
    HistoryFormatError,
    Operation,
    parse_jepsen,
    parse_jsonl,
    parse_porcupine_kv,
)
from pmmc_ray.check.linearizability import (
    CAS_REGISTER_MODEL,
    KV_MODEL,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    PORCUPINE_KV_MODEL,
    Model,
    check,
)

__all__ = [
    "EXIT_LINEARIZABLE",
    "EXIT_NOT_LINEARIZABLE",
    "EXIT_UNKNOWN",
    "FORMATS",
    "add_parser",
    "guess_format",
    "main",
    "run",
]

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2  # also: unreadable or malformed input

#: format name -> (parser, model)
FORMATS: dict[str, tuple[Callable[[Path], list[Operation]], Model]] = {
    "jepsen": (parse_jepsen, CAS_REGISTER_MODEL),
    "kv": (parse_porcupine_kv, PORCUPINE_KV_MODEL),
    "jsonl": (parse_jsonl, KV_MODEL),
}

_EXTENSIONS = {".log": "jepsen", ".txt": "kv", ".jsonl": "jsonl", ".json": "jsonl"}


_DESCRIPTION = "Check a recorded history for linearizability (WGL search)."
_EPILOG = """\
formats and models:
  jepsen  Jepsen compare-and-set register log (.log)   -> cas-register
  kv      Porcupine key/value log (.txt)               -> porcupine-kv
  jsonl   pmmc-ray JSON-lines history (.jsonl, .json)  -> kv

exit codes: 0 linearizable, 1 not linearizable, 2 unknown (time budget
exhausted) or unreadable/malformed file"""


def guess_format(path: str | Path) -> str | None:
    """Guess the format from the file extension; None if it is not recognised."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``lincheck`` arguments to ``parser`` (shared by `add_parser` and `main`)."""
    parser.add_argument("file", metavar="FILE", help="history file to check")
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default=None,
        help="history format (default: from the extension: .log jepsen, .txt kv, "
        ".jsonl/.json jsonl)",
    )
    parser.add_argument(
        "--timeout",
        type=_non_negative_seconds,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock budget for the check; when exceeded the verdict is unknown (default: 60)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as a JSON object")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``lincheck`` subcommand on an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "lincheck",
        help="check a recorded history for linearizability",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(parser)


def _error(message: str) -> int:
    print(f"lincheck: error: {message}", file=sys.stderr)
    return EXIT_UNKNOWN


def _exit_code(verdict: str) -> int:
    if verdict == LINEARIZABLE:
        return EXIT_LINEARIZABLE
    if verdict == NOT_LINEARIZABLE:
        return EXIT_NOT_LINEARIZABLE
    return EXIT_UNKNOWN


def run(args: argparse.Namespace) -> int:
    """Run ``lincheck`` for parsed ``args``; print the verdict and return the exit code."""
    path = Path(args.file)
    fmt = args.format or guess_format(path)
    if fmt is None:
        return _error(f"cannot guess the format of {path} from its extension; use --format")
    parse, model = FORMATS[fmt]
    try:
        ops = parse(path)
        result = check(ops, model, timeout=args.timeout)
    except OSError as exc:
        return _error(f"cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _error(f"cannot read {path}: not UTF-8 text ({exc.reason})")
    except HistoryFormatError as exc:
        return _error(f"malformed history: {exc}")
    except ValueError as exc:
        return _error(f"invalid history {path}: {exc}")

    if args.json:
        print(json.dumps({"file": str(path), "format": fmt, **result.to_dict()}))
    else:
        print(f"{path}: {result.summary()}")
    return _exit_code(result.verdict)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m pmmc_ray.check.lincheck_cli FILE ...``."""
    parser = configure_parser(
        argparse.ArgumentParser(
            prog="lincheck",
            description=_DESCRIPTION,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
