"""The open-loop bench on real actors: it measures, checks the history and the replicas,
and accounts for every scheduled operation. No figure is asserted."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray


def test_the_open_loop_bench_measures_and_checks(make_deployment):
    from pmmc_ray.runtime.bench import open_loop

    dep = make_deployment("openloop")
    r = open_loop(dep, 100.0, 1.0, 16)
    assert r["offered_ops_per_s"] == 100.0 and r["clients"] == 16 and r["scheduled"] == 100
    assert r["started"] + r["not_started"] == 100
    assert r["ok"] + r["unknown"] + sum(r["errors"].values()) == r["started"]
    assert r["ok"] > 0 and r["latency_ms"]["p50"] <= r["latency_ms"]["p999"]
    assert r["linearizable"] == "linearizable" and r["replicas_consistent"] is True
    assert r["ops"] == "put and get alternately" and r["value_bytes"] == 16
