"""Metrics recorded with ray.util.metrics reach Ray's Prometheus endpoint."""

from __future__ import annotations

import time
import urllib.request

import pytest

pytestmark = pytest.mark.ray


def test_replica_metrics_are_exported(ray_session, make_deployment):
    port = ray_session._private.worker.global_worker.node.metrics_export_port
    assert port and port > 0
    dep = make_deployment("metrics")
    c = dep.client()
    for i in range(20):
        c.put("k", str(i))
    wanted = {
        "ray_pmmc_replica_commands_decided_total",
        "ray_pmmc_replica_batch_size_count",
        "ray_pmmc_replica_client_latency_ms_count",
    }
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not wanted <= seen:
        time.sleep(2)
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            continue
        seen = {
            line.split("{")[0].split(" ")[0]
            for line in body.decode().splitlines()
            if line.startswith("ray_pmmc_")
        }
    assert wanted <= seen, sorted(seen)
