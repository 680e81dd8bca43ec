"""The PySyncObj peer of ``pmmc-ray bench``: a short real run, the skip, and the ratios."""

from __future__ import annotations

import builtins
import os

import pytest

from pmmc_ray.cli import main
from pmmc_ray.ray_cli import _ratio_lines
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
    r = pysyncobj_bench([1, 4], 1.0, samples=20, spawned=pids)
    assert len(pids) == 4  # three nodes and the driver
    assert not [p for p in pids if _alive(p)]
    assert r["version"] == "0.3.17"
    assert 0 < r["sequential_put_ms"]["p50"] <= r["sequential_put_ms"]["p99"]
    assert [w["clients"] for w in r["workload"]] == [1, 4]
    for w in r["workload"]:
        assert w["ops_ok"] > 0 and w["throughput_ops_per_s"] > 0
        assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"]


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


@pytest.mark.parametrize("peer", [dict(SKIPPED), {"error": "RuntimeError: boom"}])
def test_a_skipped_or_failed_peer_gets_no_ratios(peer):
    ours = _pmmc()
    add_ratios(ours, {"pysyncobj": peer})
    assert ours == _pmmc()


def test_printed_lines_for_a_skipped_peer_say_so():
    assert _ratio_lines(_pmmc(), {"pysyncobj": dict(SKIPPED)}) == [
        "pysyncobj: pysyncobj not installed (pip install 'pmmc-ray[bench]')"
    ]


def test_bad_peer_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--peer", "etcd"])
    assert e.value.code == 2
    assert "invalid choice: 'etcd'" in capsys.readouterr().err
