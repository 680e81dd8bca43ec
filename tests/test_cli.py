"""The command line: exit codes, JSON output, bad arguments rejected clearly."""

from __future__ import annotations

import json

import pytest

from pmmc_ray.cli import main


def test_sim_json_summary(capsys):
    assert main(["sim", "--seeds", "4", "--start", "50", "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 4 and out["invariant_violations"] == 0
    assert out["operations_completed"] == out["operations"] > 0
    assert out["failing_seeds"] == []


def test_sim_failing_seed_exits_1_and_writes_a_replayable_trace(capsys, tmp_path):
    code = main(
        [
            "sim",
            "--seeds",
            "6",
            "--workers",
            "1",
            "--bug",
            "acceptor-amnesia",
            "--failures-dir",
            str(tmp_path),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["failing_seeds"]
    first = out["failing_seeds"][0]
    trace = (tmp_path / f"seed-{first['seed']}.trace").read_text()
    assert first["problems"][0] in trace


def test_sim_single_seed_trace(capsys):
    assert main(["sim", "--seed", "2", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "start acceptor-0" in out and "trace_sha256=" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sim", "--faults", "meteor"], "unknown fault kind"),
        (["sim", "--seeds", "0"], "--seeds must be >= 1"),
        (["sim", "--ops", "0"], "--ops must be >= 1"),
        (["run", "--clients", "0"], "--clients and --keys >= 1"),
        (["run", "--duration", "-1"], "--duration must be > 0"),
        (["run", "--chaos-every", "0"], "--chaos-every must be > 0"),
        (["run", "--config", "/nonexistent/x.toml"], "cannot read"),
        (["run", "--config", "/etc/hostname"], "unsupported config format"),
        (["bench", "--clients", "1,zero"], "--clients must be a comma list"),
        (["bench", "--outstanding", "64,-1"], "--outstanding must be a comma list"),
        (["bench", "--outstanding", "x"], "--outstanding must be a comma list"),
        (["bench", "--value-bytes", "0"], "--value-bytes must be between"),
        (["bench", "--f", "-1"], "greater than or equal to 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_lincheck_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"client": "a", "call": 0, "return": 1, "op": ["put", "k", "v"], "result": null}\n'
        '{"client": "b", "call": 2, "return": 3, "op": ["get", "k"], "result": "v"}\n'
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"client": "a", "call": 0, "return": 1, "op": ["put", "k", "v"], "result": null}\n'
        '{"client": "b", "call": 2, "return": 3, "op": ["get", "k"], "result": null}\n'
    )
    assert main(["lincheck", str(good)]) == 0
    assert main(["lincheck", str(bad)]) == 1
    assert main(["lincheck", str(tmp_path / "missing.jsonl")]) == 2


def test_bad_config_file_is_rejected_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('namespace = "UPPER"\nwindow = 0\n')
    assert main(["up", "--config", str(bad)]) == 2  # fails before touching Ray
    err = capsys.readouterr().err
    assert "bad.toml" in err and "namespace" in err and "window" in err


def _run_result(**over):
    out = {
        "clients": 4,
        "ops_ok": 10,
        "ops_unknown_outcome": 0,
        "throughput_ops_per_s": 5.0,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "raw_ray_round_trip_ms_p50": 0.5,
        "killed": "leader-1",
        "kill_at_s": 2.0,
        "failover_s": 0.7,
        "ops_ok_after_kill": 4,
        "client_errors": [],
        "replica_states": {"replica-0": {"slot_out": 9, "state_sha256": "ab" * 32}},
        "replicas_consistent": True,
        "linearizable": "linearizable",
        "linearizability_detail": "",
        "ok": True,
    }
    out.update(over)
    return out


def test_run_report_lines():
    from pmmc_ray.ray_cli import report_lines

    lines = report_lines(_run_result())
    assert any("killed active leader leader-1" in x and "failover 0.7s" in x for x in lines)
    assert not any("no leader was killed" in x for x in lines)
    assert lines[-1] == "OK"
    lines = report_lines(_run_result(killed=None, client_errors=["boom"], ok=False))
    assert "no leader was killed" in lines and "client error: boom" in lines
    assert lines[-1] == "FAILED"


def test_gateway_token_output_is_only_the_token(capfd):
    """`pmmc-ray gateway token` (for TOKEN=$(...)) and `pmmc-ray chaos --json`: while
    they talk to Ray, both sys.stdout and file descriptor 1 (Ray's threads and processes
    write to either) point at standard error; the result goes to the real stdout."""
    import os
    import sys

    from pmmc_ray.stdio import stdout_to_stderr, write_to

    with stdout_to_stderr() as real_stdout:
        print("from python")
        os.write(1, b"from fd 1\n")
        write_to(real_stdout, "the summary\n")
    print("the token")
    sys.stdout.flush()
    out, err = capfd.readouterr()
    assert out == "the summary\nthe token\n"
    assert "from python" in err and "from fd 1" in err
