"""Benchmark the checker: ``python -m pmmc_ray.check.bench [--out FILE]``.

Times `check` on
* the public Porcupine histories (``--porcupine DIR``, default
  ``../shared/porcupine-test-data``; skipped when absent), against their known verdicts;
* generated hard histories (`pmmc_ray.check.generate.hard_history`), each seed
  linearizable and corrupted: "lab" (50 clients, 10 keys, 2000 get/put/append, like
  Porcupine's c50 histories), "all-ops" (the same with cas and delete and 1% unknown
  outcomes) and "one-key" (all operations on one key, 3% unknown outcomes);
* one large chaos-like history (``--chaos-ops``, 1,000,000 by default) written to and
  parsed back from the JSON-lines format, as ``pmmc-ray lincheck FILE`` would.

Prints one line per case and writes all figures to a JSON file.  Wall and CPU seconds
are both reported: the machine may be shared.  Exit status 1 if any verdict is wrong
or unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pmmc_ray.check.generate import GeneratedHistory, chaos_history, hard_history
from pmmc_ray.check.history import (
    Operation,
    parse_jepsen,
    parse_jsonl,
    parse_porcupine_kv,
    write_jsonl,
)
from pmmc_ray.check.linearizability import (
    CAS_REGISTER_MODEL,
    KV_MODEL,
    PORCUPINE_KV_MODEL,
    Model,
    check,
)

FAMILIES = {
    "lab": {"clients": 50, "ops": 2000, "keys": 10, "unknown": 0.0, "lab": True},
    "all-ops": {"clients": 50, "ops": 2000, "keys": 10, "unknown": 0.01},
    "one-key": {"clients": 6, "ops": 300, "keys": 1, "unknown": 0.03},
}


def _timed(
    name: str, ops: list[Operation], model: Model, linearizable: bool, timeout: float
) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    result = check(ops, model, timeout=timeout)
    expected = "linearizable" if linearizable else "not_linearizable"
    return {
        "case": name,
        "ops": len(ops),
        "expected": expected,
        "verdict": result.verdict,
        "correct": result.verdict == expected,
        "wall_s": round(time.perf_counter() - wall, 4),
        "cpu_s": round(time.process_time() - cpu, 4),
    }


def _porcupine(data: Path, timeout: float) -> list[dict]:
    try:
        expected = json.loads((data / "expected_verdicts.json").read_text())["expected"]
    except (OSError, ValueError, KeyError):
        return []
    rows = []
    for name, verdict in sorted(expected.items()):
        if name.startswith("kv/"):
            ops, model = parse_porcupine_kv(data / name), PORCUPINE_KV_MODEL
        else:
            ops, model = parse_jepsen(data / name), CAS_REGISTER_MODEL
        rows.append(_timed("porcupine/" + name, ops, model, verdict, timeout))
    return rows


def _generated(generated: GeneratedHistory, timeout: float) -> dict:
    return _timed(generated.name, generated.ops, KV_MODEL, generated.linearizable, timeout)


def _chaos(ops: int, keys: int, timeout: float) -> dict:
    generated = chaos_history(0, ops=ops, clients=32, keys=keys, unknown=0.001)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chaos.jsonl"
        write_jsonl(generated.ops, path)
        wall, cpu = time.perf_counter(), time.process_time()
        parsed = parse_jsonl(path)
        parse_wall = time.perf_counter() - wall
    result = check(parsed, KV_MODEL, timeout=timeout)
    return {
        "case": generated.name,
        "ops": len(parsed),
        "expected": "linearizable",
        "verdict": result.verdict,
        "correct": result.verdict == "linearizable",
        "parse_wall_s": round(parse_wall, 3),
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
    }


def _summary(rows: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        group = row["case"].split("/")[0] if "/" in row["case"] else row["case"].split("-s")[0]
        groups.setdefault(group, []).append(row)
    return {
        group: {
            "cases": len(items),
            "correct": sum(row["correct"] for row in items),
            "max_wall_s": max(row["wall_s"] for row in items),
            "over_1s": sum(row["wall_s"] > 1.0 for row in items),
        }
        for group, items in groups.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 if any verdict is wrong or unknown."""
    parser = argparse.ArgumentParser(prog="python -m pmmc_ray.check.bench")
    parser.add_argument("--out", default="lincheck-bench.json", help="JSON file for the figures")
    parser.add_argument(
        "--porcupine",
        default=str(Path.cwd().parent / "shared" / "porcupine-test-data"),
        help="directory of the Porcupine histories (skipped when absent)",
    )
    parser.add_argument("--seeds", type=int, default=8, help="seeds per family (each twice)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument("--chaos-ops", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--chaos-keys", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="budget per check")
    args = parser.parse_args(argv)
    families = [name for name in args.families.split(",") if name]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {sorted(FAMILIES)}")
    rows = _porcupine(Path(args.porcupine), args.timeout)
    for row in rows:
        print(json.dumps(row), flush=True)
    for family in families:
        for seed in range(args.seeds):
            for corrupt in (False, True):
                try:
                    generated = hard_history(seed, corrupt=corrupt, **FAMILIES[family])
                except ValueError:  # no read to corrupt provably: skip the seed
                    continue
                rows.append(_generated(generated, args.timeout))
                print(json.dumps(rows[-1]), flush=True)
    if args.chaos_ops:
        rows.append(_chaos(args.chaos_ops, args.chaos_keys, args.timeout))
        print(json.dumps(rows[-1]), flush=True)
    summary = _summary(rows)
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")
    return 0 if all(row["correct"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
