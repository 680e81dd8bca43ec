"""The PySyncObj peer of ``pmmc-ray bench``: a short real run (closed and open loop), the
skip, the ratios, and the bench's peer and open-loop options."""

from __future__ import annotations

import builtins
import os

import pytest

from pmmc_ray import ray_cli
from pmmc_ray.cli import build_parser, main
from pmmc_ray.ray_cli import _open_loop_lines, _ratio_lines
from pmmc_ray.runtime.bench_peers import SKIPPED, add_ratios, pysyncobj_bench


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_short_real_run_measures_and_leaves_no_child_alive():
    pytest.importorskip("pysyncobj")
    pids: list[int] = []
    r = pysyncobj_bench([1, 4], 1.0, samples=20, spawned=pids, rates=[(100.0, 8)])
    assert len(pids) == 4  # three nodes and the driver
    assert not [p for p in pids if _alive(p)]
    assert r["version"] == "0.3.17"
    assert 0 < r["sequential_put_ms"]["p50"] <= r["sequential_put_ms"]["p99"]
    assert [w["clients"] for w in r["workload"]] == [1, 4]
    for w in r["workload"]:
        assert w["ops_ok"] > 0 and w["throughput_ops_per_s"] > 0
        assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"]
    (o,) = r["open_loop"]  # open loop at 100 puts/s on 8 slots
    assert o["offered_ops_per_s"] == 100.0 and o["clients"] == 8 and o["scheduled"] == 100
    assert o["started"] + o["not_started"] == 100
    assert o["ok"] + o["unknown"] + sum(o["errors"].values()) == o["started"]
    assert o["ok"] > 0 and o["latency_ms"]["p50"] <= o["latency_ms"]["p999"]


def test_without_pysyncobj_the_result_says_skipped(monkeypatch):
    real_import = builtins.__import__

    def no_pysyncobj(name, *args, **kwargs):
        if name == "pysyncobj" or name.startswith("pysyncobj."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pysyncobj)
    pids: list[int] = []
    assert pysyncobj_bench([1], 1.0, spawned=pids) == SKIPPED
    assert SKIPPED["skipped"] == "pysyncobj not installed (pip install 'pmmc-ray[bench]')"
    assert pids == []


def _pmmc() -> dict:
    return {
        "sequential_put_ms": {"p50": 30.0, "p99": 60.0},
        "workload": [
            {"clients": 1, "throughput_ops_per_s": 30.0, "latency_ms": {"p50": 32.0}},
            {"clients": 4, "throughput_ops_per_s": 70.0, "latency_ms": {"p50": 56.0}},
        ],
    }


def test_ratios_are_pmmc_over_peer_next_to_each_figure():
    ours = _pmmc()
    peer = {
        "sequential_put_ms": {"p50": 1.0, "p99": 4.0},
        "workload": [
            {"clients": 1, "throughput_ops_per_s": 600.0, "latency_ms": {"p50": 0.8}},
            {"clients": 4, "throughput_ops_per_s": 1400.0, "latency_ms": {"p50": 2.8}},
        ],
    }
    add_ratios(ours, {"pysyncobj": peer})
    assert ours["sequential_put_ms"]["ratio_vs_pysyncobj"] == {"p50": 30.0, "p99": 15.0}
    assert ours["workload"][0]["ratio_vs_pysyncobj"] == {"throughput": 0.05, "latency_p50": 40.0}
    assert ours["workload"][1]["ratio_vs_pysyncobj"] == {"throughput": 0.05, "latency_p50": 20.0}


def test_pipelined_runs_are_compared_with_as_many_outstanding():
    ours = {
        **_pmmc(),
        "pipelined": [
            {"outstanding": 64, "throughput_ops_per_s": 3000.0, "latency_ms": {"p50": 20.0}}
        ],
    }
    peer = {
        "sequential_put_ms": {"p50": 1.0, "p99": 4.0},
        "workload": [
            {"clients": 1, "throughput_ops_per_s": 600.0, "latency_ms": {"p50": 0.8}},
            {"clients": 64, "throughput_ops_per_s": 2000.0, "latency_ms": {"p50": 10.0}},
        ],
    }
    add_ratios(ours, {"pysyncobj": peer})
    assert ours["pipelined"][0]["ratio_vs_pysyncobj"] == {"throughput": 1.5, "latency_p50": 2.0}
    assert "ratio_vs_pysyncobj" not in ours["workload"][1]  # no 4-client peer run
    lines = _ratio_lines(ours, {"pysyncobj": peer})
    assert any(line.startswith("64 outstanding (mux): pmmc-ray 3000.0 ops/s") for line in lines)


def _open(rate: float, committed: float, p50: float, p99: float, not_started: int = 0) -> dict:
    return {
        "offered_ops_per_s": rate,
        "clients": 500,
        "not_started": not_started,
        "committed_ops_per_s": committed,
        "latency_ms": {"p50": p50, "p99": p99, "p999": p99},
    }


def test_open_loop_runs_are_compared_at_the_same_offered_rate():
    ours = {
        **_pmmc(),
        "open_loop": [_open(1000.0, 900.0, 20.0, 80.0, 100), _open(5000.0, 1.0, 1, 1)],
    }
    peer = {
        "sequential_put_ms": {"p50": 1.0, "p99": 4.0},
        "workload": [],
        "open_loop": [_open(1000.0, 1000.0, 2.0, 10.0), _open(2000.0, 2000.0, 2.0, 10.0)],
    }
    add_ratios(ours, {"etcd": peer})
    assert ours["open_loop"][0]["ratio_vs_etcd"] == {
        "throughput": 0.9,
        "latency_p50": 10.0,
        "latency_p99": 8.0,
    }
    assert "ratio_vs_etcd" not in ours["open_loop"][1]  # the peer ran no 5000/s
    lines = _ratio_lines(ours, {"etcd": peer})
    assert (
        "open loop 1000/s: pmmc-ray 900.0 ops/s, etcd 1000.0 ops/s (not started 100 / 0), "
        "ratio 0.9; p99 80.0 / 10.0 ms, ratio 8.0"
    ) in lines


@pytest.mark.parametrize("peer", [dict(SKIPPED), {"error": "RuntimeError: boom"}])
def test_a_skipped_or_failed_peer_gets_no_ratios(peer):
    ours = _pmmc()
    add_ratios(ours, {"pysyncobj": peer})
    assert ours == _pmmc()


def test_printed_lines_for_a_skipped_peer_say_so():
    assert _ratio_lines(_pmmc(), {"pysyncobj": dict(SKIPPED)}) == [
        "pysyncobj: pysyncobj not installed (pip install 'pmmc-ray[bench]')"
    ]


@pytest.mark.parametrize("arg", ["zookeeper", "etcd,raft", ",", "none,etcd"])
def test_bad_peer_is_argparse_error(arg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--peer", arg])
    assert e.value.code == 2
    assert "argument --peer: invalid choice" in capsys.readouterr().err


def test_peer_lists_parse():
    parse = build_parser().parse_args
    assert parse(["bench"]).peer == ["pysyncobj", "etcd"]
    assert parse(["bench", "--peer", "etcd"]).peer == ["etcd"]
    assert parse(["bench", "--peer", "etcd, pysyncobj,etcd"]).peer == ["etcd", "pysyncobj"]
    assert parse(["bench", "--peer", "none"]).peer == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "0"], "--rate must be a comma list of rates > 0"),
        (["--rate", "1000,-5"], "--rate must be a comma list of rates > 0"),
        (["--rate", "fast"], "--rate must be a comma list of rates > 0"),
        (["--rate", "nan"], "--rate must be a comma list of rates > 0"),
        (["--rate", "2e6"], "--rate must be a comma list of rates > 0"),
        (["--rate", "1000", "--open-clients", "-1"], "--open-clients must be between 0"),
        (["--rate", "1000", "--open-clients", "60000"], "--open-clients must be between 0"),
        (["--open-clients", "64"], "--open-clients needs --rate"),
    ],
)
def test_bad_open_loop_options_exit_2_before_anything_starts(argv, message, capsys, monkeypatch):
    def started():
        raise AssertionError("the bench started something")

    monkeypatch.setattr(ray_cli, "_ray_env_for_local_run", started)
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_open_loop_report_line():
    ours = {
        "open_loop": [
            {
                **_open(1000.0, 990.5, 3.0, 9.0, 4),
                "unknown": 1,
                "errors": {},
                "linearizable": "linearizable",
                "replicas_consistent": True,
            }
        ]
    }
    assert _open_loop_lines(ours) == [
        "open loop 1000/s (500 clients): pmmc-ray 990.5 committed ops/s, p50 3.0 p99 9.0 "
        "p999 9.0 ms from the scheduled start; not started 4, unknown 1, errors 0; "
        "linearizable, replicas agree: True"
    ]
