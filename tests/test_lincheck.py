"""Tests for the linearizability checker (pmmc_ray.check)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pytest

from pmmc_ray.check import (
    CAS_REGISTER_MODEL,
    KV_MODEL,
    PORCUPINE_KV_MODEL,
    HistoryFormatError,
    Operation,
    check,
    dump_jsonl_lines,
    parse_jepsen,
    parse_jsonl,
    parse_porcupine_kv,
    write_jsonl,
)
from pmmc_ray.check.lincheck_cli import add_parser, guess_format, run

# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def op(client: str, call: float, ret: float | None, *inp: object, result: object = None):
    """Shorthand for an Operation: op("c1", 0, 1, "put", "k", "v")."""
    return Operation(client, call, ret, tuple(inp), result)


def verdict(ops: list[Operation], model=KV_MODEL) -> str:
    return check(ops, model, timeout=10).verdict


LIN, NOT_LIN, UNKNOWN = "linearizable", "not_linearizable", "unknown"


# --------------------------------------------------------------------------- #
# The public Porcupine test data
# --------------------------------------------------------------------------- #


def _data_dir() -> Path:
    override = os.environ.get("PMMC_PORCUPINE_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "porcupine-test-data"


DATA_DIR = _data_dir()


def _expected_verdicts() -> dict[str, bool]:
    try:
        return json.loads((DATA_DIR / "expected_verdicts.json").read_text())["expected"]
    except (OSError, ValueError, KeyError):
        return {}


EXPECTED = _expected_verdicts()


@pytest.mark.skipif(
    not EXPECTED,
    reason=f"porcupine test data not found at {DATA_DIR} (set PMMC_PORCUPINE_DATA)",
)
@pytest.mark.parametrize("name", sorted(EXPECTED) or ["missing"])
def test_porcupine_data_verdicts(name: str) -> None:
    path = DATA_DIR / name
    if name.startswith("jepsen/"):
        ops, model = parse_jepsen(path), CAS_REGISTER_MODEL
    else:
        ops, model = parse_porcupine_kv(path), PORCUPINE_KV_MODEL
    assert ops
    result = check(ops, model, timeout=120)
    assert result.verdict != UNKNOWN, f"timed out: {result.explanation}"
    assert result.verdict == (LIN if EXPECTED[name] else NOT_LIN), result.explanation


# --------------------------------------------------------------------------- #
# KV model: hand-written histories with exact verdicts
# --------------------------------------------------------------------------- #


def test_empty_history_is_linearizable() -> None:
    assert verdict([]) == LIN


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    history = [
        op("c1", 0, 1, "put", "k", "a"),
        op("c1", 2, 3, "put", "k", "b"),
        op("c2", 4, 5, "get", "k", result="a"),
    ]
    assert verdict(history) == NOT_LIN
    assert verdict([op("c1", 0, 1, "put", "k", "a"), op("c2", 2, 3, "get", "k")]) == NOT_LIN


def test_concurrent_operations_that_can_be_ordered_are_linearizable() -> None:
    history = [
        op("c1", 0, 5, "put", "k", "a"),
        op("c2", 1, 6, "put", "k", "b"),
        op("c3", 2, 3, "get", "k", result="b"),  # b first ...
        op("c3", 7, 8, "get", "k", result="a"),  # ... then a
    ]
    assert verdict(history) == LIN
    # A read concurrent with a put may see either value.
    assert verdict([op("c1", 0, 5, "put", "k", "a"), op("c2", 1, 2, "get", "k")]) == LIN
    seen = [op("c1", 0, 5, "put", "k", "a"), op("c2", 1, 2, "get", "k", result="a")]
    assert verdict(seen) == LIN
    # But two reads cannot see the write and then un-see it.
    flicker = [*seen, op("c2", 3, 4, "get", "k")]
    assert verdict(flicker) == NOT_LIN


def test_ties_between_return_and_call_count_as_concurrent() -> None:
    # The put returns at t=5 and the get is invoked at t=5: treated as concurrent,
    # so the get may be ordered first (conservative choice, documented).
    history = [op("c1", 0, 5, "put", "k", "a"), op("c2", 5, 6, "get", "k")]
    assert verdict(history) == LIN


def test_unknown_put_that_is_later_observed_is_linearizable() -> None:
    history = [
        op("c1", 0, None, "put", "k", "a"),
        op("c2", 5, 6, "get", "k"),
        op("c2", 7, 8, "get", "k", result="a"),  # took effect after the first get
    ]
    assert verdict(history) == LIN


def test_unknown_put_never_observed_is_linearizable() -> None:
    history = [
        op("c1", 0, None, "put", "k", "a"),
        op("c2", 5, 6, "get", "k"),
        op("c3", 7, 8, "put", "k", "b"),
        op("c2", 9, 10, "get", "k", result="b"),
    ]
    assert verdict(history) == LIN


def test_unknown_put_cannot_take_effect_before_its_call() -> None:
    history = [op("c2", 0, 1, "get", "k", result="a"), op("c1", 2, None, "put", "k", "a")]
    assert verdict(history) == NOT_LIN


def test_unknown_operation_results_are_ignored() -> None:
    history = [op("c1", 0, None, "get", "k", result="garbage"), op("c1", 1, 2, "get", "k")]
    assert verdict(history) == LIN


def test_duplicated_append_is_not_linearizable() -> None:
    once = [op("c1", 0, 1, "append", "k", "x"), op("c2", 2, 3, "get", "k", result="x")]
    assert verdict(once) == LIN
    twice = [op("c1", 0, 1, "append", "k", "x"), op("c2", 2, 3, "get", "k", result="xx")]
    assert verdict(twice) == NOT_LIN
    concurrent = [
        op("c1", 0, 4, "append", "k", "x"),
        op("c2", 1, 5, "append", "k", "y"),
    ]
    assert verdict([*concurrent, op("c3", 6, 7, "get", "k", result="yx")]) == LIN
    assert verdict([*concurrent, op("c3", 6, 7, "get", "k", result="xyx")]) == NOT_LIN


def test_cas_semantics() -> None:
    put_a = op("c1", 0, 1, "put", "k", "a")
    assert verdict([put_a, op("c2", 2, 3, "cas", "k", "a", "b", result=True)]) == LIN
    assert verdict([put_a, op("c2", 2, 3, "cas", "k", "a", "b", result=False)]) == NOT_LIN
    assert verdict([put_a, op("c2", 2, 3, "cas", "k", "z", "b", result=True)]) == NOT_LIN
    failed = [put_a, op("c2", 2, 3, "cas", "k", "z", "b", result=False)]
    assert verdict([*failed, op("c3", 4, 5, "get", "k", result="a")]) == LIN
    assert verdict([*failed, op("c3", 4, 5, "get", "k", result="b")]) == NOT_LIN
    # expected=None means "absent".
    assert verdict([op("c1", 0, 1, "cas", "k", None, "n", result=True)]) == LIN
    assert verdict([put_a, op("c2", 2, 3, "cas", "k", None, "n", result=True)]) == NOT_LIN
    swapped = [put_a, op("c2", 2, 3, "cas", "k", "a", "b", result=True)]
    assert verdict([*swapped, op("c3", 4, 5, "get", "k", result="b")]) == LIN
    assert verdict([*swapped, op("c3", 4, 5, "get", "k", result="a")]) == NOT_LIN


def test_delete_semantics() -> None:
    base = [op("c1", 0, 1, "put", "k", "a"), op("c1", 2, 3, "delete", "k")]
    assert verdict([*base, op("c2", 4, 5, "get", "k")]) == LIN
    assert verdict([*base, op("c2", 4, 5, "get", "k", result="a")]) == NOT_LIN
    # Append after delete starts from the empty string.
    appended = [*base, op("c1", 4, 5, "append", "k", "x")]
    assert verdict([*appended, op("c2", 6, 7, "get", "k", result="x")]) == LIN
    assert verdict([*appended, op("c2", 6, 7, "get", "k", result="ax")]) == NOT_LIN


def test_keys_are_independent_and_failure_names_the_key() -> None:
    history = [
        op("c1", 0, 10, "put", "a", "1"),
        op("c2", 1, 2, "get", "a", result="1"),
        op("c2", 3, 4, "get", "a", result="1"),
        op("c3", 0, 1, "put", "b", "2"),
        op("c3", 2, 3, "get", "b"),  # stale: b was written already
    ]
    result = check(history, KV_MODEL)
    assert result.verdict == NOT_LIN
    assert result.partitions == 2
    assert result.partition == "key 'b'"
    assert result.partition_ops == 2
    assert result.blocking_op == history[4]
    assert len(result.prefix) == 1 and "key 'b'" in result.explanation
    # Operations on another key do not constrain this one.
    assert verdict(history[:4]) == LIN


def test_linearizable_result_details() -> None:
    result = check([op("c1", 0, 1, "put", "k", "a")], KV_MODEL)
    assert result.linearizable and result.ops == 1 and result.partitions == 1
    assert result.elapsed >= 0 and "1 ops" in result.detail
    assert result.summary().startswith("linearizable: ")
    assert json.dumps(result.to_dict())


def test_unsupported_operation_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        check([op("c1", 0, 1, "frobnicate", "k")], KV_MODEL)
    with pytest.raises(ValueError, match="unsupported"):
        check([op("c1", 0, 1, "put", "k")], KV_MODEL)  # wrong arity
    with pytest.raises(ValueError, match="before it is called"):
        check([op("c1", 2, 1, "put", "k", "v")], KV_MODEL)


def test_porcupine_kv_model_starts_empty() -> None:
    history = [
        op("0", 0, 1, "get", "k", result=""),
        op("0", 2, 3, "append", "k", "x"),
        op("0", 4, 5, "get", "k", result="x"),
    ]
    assert verdict(history, PORCUPINE_KV_MODEL) == LIN
    assert verdict([op("0", 0, 1, "get", "k")], PORCUPINE_KV_MODEL) == NOT_LIN


def test_cas_register_model() -> None:
    history = [
        op("0", 0, 1, "read", result=None),
        op("0", 2, 3, "write", 1),
        op("1", 4, 5, "cas", 1, 2, result=True),
        op("1", 6, 7, "cas", 1, 3, result=False),
        op("0", 8, 9, "read", result=2),
    ]
    assert verdict(history, CAS_REGISTER_MODEL) == LIN
    history[3] = op("1", 6, 7, "cas", 2, 3, result=False)
    assert verdict(history, CAS_REGISTER_MODEL) == NOT_LIN


# --------------------------------------------------------------------------- #
# Time budget
# --------------------------------------------------------------------------- #


def _hard_history(n: int = 20) -> list[Operation]:
    """n concurrent puts of "0" and "1", then reads of "0" and "1" one after the other:
    not linearizable, and no lookahead tells before every subset of the puts was
    tried (about 2**n configurations)."""
    puts = [op(f"c{i}", 0, 100, "put", "k", str(i % 2)) for i in range(n)]
    reads = [op("r", 200, 201, "get", "k", result="0"), op("r", 202, 203, "get", "k", result="1")]
    return [*puts, *reads]


def test_zero_timeout_is_unknown() -> None:
    result = check([op("c1", 0, 1, "put", "k", "a")], KV_MODEL, timeout=0)
    assert result.verdict == UNKNOWN
    assert "budget" in result.explanation


def test_small_budget_on_hard_history_is_unknown_not_a_guess() -> None:
    started = time.monotonic()
    result = check(_hard_history(), KV_MODEL, timeout=0.2)
    assert result.verdict == UNKNOWN
    assert time.monotonic() - started < 5


def test_an_undecided_key_does_not_hide_a_violation_on_another() -> None:
    """The budget runs out on key k (the hard history); key z, checked after it, has a
    stale read: the verdict is the violation, not "unknown"."""
    stale = [
        op("w", 300, 301, "put", "z", "new"),
        op("r", 302, 303, "get", "z", result="old"),
    ]
    result = check([*_hard_history(), *stale], KV_MODEL, timeout=0.2)
    assert result.verdict == NOT_LIN, result.explanation
    assert "'z'" in result.explanation or "z" in result.partition
    # without the violation, the same history is undecided (never a guess)
    fine = [op("w", 300, 301, "put", "z", "new"), op("r", 302, 303, "get", "z", result="new")]
    assert check([*_hard_history(), *fine], KV_MODEL, timeout=0.2).verdict == UNKNOWN


# --------------------------------------------------------------------------- #
# Parsers
# --------------------------------------------------------------------------- #


def test_jsonl_round_trip(tmp_path: Path) -> None:
    history = [
        op("client-0", 12.5, 15.0, "put", "k", "v"),
        op("client-1", 13, None, "append", "k", "w"),
        op("client-2", 14, 16, "cas", "k", None, "x", result=False),
        op("client-0", 16, 17, "get", "k", result="v"),
    ]
    path = tmp_path / "history.jsonl"
    write_jsonl(history, path)
    assert parse_jsonl(path) == history
    assert len(dump_jsonl_lines(history).splitlines()) == len(history)
    assert isinstance(parse_jsonl(path)[0].op, tuple)


def test_jsonl_accepts_absent_return_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('\n{"client": "c", "call": 1, "op": ["get", "k"]}\n\n')
    assert parse_jsonl(path) == [op("c", 1.0, None, "get", "k")]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"client": "c", "return": 2, "op": ["get", "k"]}', "call"),
        ('{"client": "c", "call": 1, "return": 2, "op": "get"}', "op"),
        ('{"client": "c", "call": 3, "return": 2, "op": ["get", "k"]}', "before"),
        ("[1, 2]", "object"),
    ],
)
def test_malformed_jsonl_reports_line_number(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"client": "c", "call": 0, "return": 1, "op": ["put", "k", "v"], "result": null}'
    path.write_text(f"{good}\n\n{bad_line}\n")
    with pytest.raises(HistoryFormatError, match=reason) as info:
        parse_jsonl(path)
    assert info.value.line == 3
    assert "bad.jsonl:3" in str(info.value)


def test_parse_jepsen(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    path.write_text(
        "INFO  jepsen.util - 0\t:invoke\t:write\t1\n"
        "INFO  jepsen.util - 1\t:invoke\t:cas\t[1 2]\n"
        "INFO  jepsen.util - 0\t:ok\t:write\t1\n"
        "some other log line\n"
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
        "INFO  jepsen.util - 1    :fail   :cas    [1 2]\n"
        "INFO  jepsen.util - 2\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 2\t:fail\t:read\t:timed-out\n"
        "INFO  jepsen.util - 3\t:invoke\t:write\t4\n"
        "INFO  jepsen.util - 3\t:info\t:write\t:timed-out\n"
        "INFO  jepsen.util - 4\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 4\t:ok\t:read\t1\n"
        "INFO  jepsen.util - 5\t:invoke\t:cas\t[1 3]\n"
    )
    assert parse_jepsen(path) == [
        Operation("0", 1.0, 3.0, ("write", 1), None),
        Operation("1", 2.0, 6.0, ("cas", 1, 2), False),
        Operation("2", 7.0, None, ("read",), None),
        Operation("3", 9.0, None, ("write", 4), None),
        Operation("4", 11.0, 12.0, ("read",), 1),
        Operation("5", 13.0, None, ("cas", 1, 3), None),  # still open at the end
    ]
    path.write_text("INFO  jepsen.util - 0\t:ok\t:write\t1\n")
    with pytest.raises(HistoryFormatError, match="h.log:1: completion without invocation"):
        parse_jepsen(path)


def test_parse_porcupine_kv(tmp_path: Path) -> None:
    path = tmp_path / "h.txt"
    path.write_text(
        '{:process 0, :type :invoke, :f :put, :key "k", :value "a b"}\n'
        '{:process 1, :type :invoke, :f :get, :key "k", :value nil}\n'
        '{:process 0, :type :ok, :f :put, :key "k", :value "a b"}\n'
        '{:process 1, :type :ok, :f :get, :key "k", :value "a b"}\n'
        '{:process 2, :type :invoke, :f :append, :key "j", :value "x"}\n'
    )
    assert parse_porcupine_kv(path) == [
        Operation("0", 1.0, 3.0, ("put", "k", "a b"), None),
        Operation("1", 2.0, 4.0, ("get", "k"), "a b"),
        Operation("2", 5.0, None, ("append", "j", "x"), None),
    ]
    path.write_text("garbage\n")
    with pytest.raises(HistoryFormatError, match="h.txt:1"):
        parse_porcupine_kv(path)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pmmc-ray")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["lincheck", *argv]))


def _write_history(tmp_path: Path, ops: list[Operation], name: str = "h.jsonl") -> str:
    path = tmp_path / name
    write_jsonl(ops, path)
    return str(path)


def test_guess_format() -> None:
    assert guess_format("a/etcd_000.log") == "jepsen"
    assert guess_format("c01-ok.txt") == "kv"
    assert guess_format("run.jsonl") == "jsonl" and guess_format("run.json") == "jsonl"
    assert guess_format("README.md") is None


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_history(tmp_path, [op("c", 0, 1, "put", "k", "v")], "good.jsonl")
    stale = [op("c", 0, 1, "put", "k", "v"), op("c", 2, 3, "get", "k")]
    bad = _write_history(tmp_path, stale, "bad.jsonl")
    assert _cli(good) == 0
    assert "linearizable" in capsys.readouterr().out
    assert _cli(bad) == 1
    assert "not linearizable" in capsys.readouterr().out
    assert _cli(good, "--timeout", "0") == 2
    assert "unknown" in capsys.readouterr().out


def test_cli_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = [op("c", 0, 1, "put", "k", "v"), op("c", 2, 3, "get", "k")]
    path = tmp_path / "bad.history"
    write_jsonl(stale, path)
    assert _cli(str(path), "--format", "jsonl", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == NOT_LIN and report["partition"] == "key 'k'"
    assert report["format"] == "jsonl" and report["ops"] == 2


def test_cli_unreadable_or_malformed_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(str(tmp_path / "missing.jsonl")) == 2
    assert "cannot read" in capsys.readouterr().err
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text("{oops\n")
    assert _cli(str(malformed)) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    unknown_ext = tmp_path / "history.dat"
    unknown_ext.write_text("")
    assert _cli(str(unknown_ext)) == 2
    assert "--format" in capsys.readouterr().err
    unsupported = _write_history(tmp_path, [op("c", 0, 1, "frob", "k")], "frob.jsonl")
    assert _cli(unsupported) == 2
    assert "unsupported" in capsys.readouterr().err
