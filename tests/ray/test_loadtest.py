"""Locust against a real deployment, in separate processes (gevent never enters pytest):
HTTP users in distributed mode (a master and two local worker processes) with a step
shape; native-client users through their sidecars, with two workers placed by Ray and
a spike shape. Locust's CSV and HTML reports are written and the recorded history is
checked for linearizability."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("locust")


@pytest.fixture(scope="module")
def gateway(dep):
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways

    (info,) = start_gateways(dep.namespace, GatewaySettings(port=0))
    yield info["url"]
    stop_gateways(dep.namespace)


def loadtest(ray_session, dep, out: Path, *args: str) -> dict:
    addr = ray_session.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "pmmc_ray",
        "loadtest",
        "--address",
        addr,
        "--namespace",
        dep.namespace,
        "--results",
        str(out),
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "OK" in run.stdout.splitlines()[-1]
    assert "history: linearizable" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert (out / "report.html").stat().st_size > 10_000
    with (out / "locust_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    return summary


def history(summary: dict) -> list[dict]:
    lines = Path(summary["history_file"]).read_text().splitlines()
    ops = [json.loads(x) for x in lines]
    # Every request Locust counted is in the history with its result; the others
    # there were cut off in flight when the test stopped (outcome unknown).
    assert summary["locust"]["requests"] == sum(1 for r in ops if r["return"] is not None)
    return ops


def test_http_users_master_and_two_workers_step_shape(ray_session, dep, gateway, tmp_path):
    out = tmp_path / "http"
    s = loadtest(
        ray_session,
        dep,
        out,
        *("--gateway-url", gateway, "--users", "6", "--duration", "10", "--workers", "2"),
        *("--shape", "step", "--mix", "all", "--key-dist", "zipf", "--keys", "20"),
    )
    assert s["worker_exit_codes"] == [0, 0] and s["history_complete"]
    assert s["history_meta"]["missing"] == [] and len(s["history_meta"]["workers"]) == 2
    ops = history(s)
    # Users of both worker processes recorded their operations into the master's file.
    pids = {r["client"].split("-u")[0] for r in ops}
    assert len(pids) == 2, pids
    assert {r["op"][0] for r in ops} == {"get", "put", "append", "cas", "delete"}
    assert s["linearizability"]["ops"] == len(ops)
    log = (out / "locust-master.log").read_text()
    targets = [int(x) for x in re.findall(r"Shape test updating to (\d+) users", log)]
    assert targets == sorted(targets) and len(targets) >= 3, targets  # steps up
    assert "complete from 2 worker(s)" in log


def test_native_users_workers_placed_by_ray_spike_shape(ray_session, dep, tmp_path):
    out = tmp_path / "native"
    s = loadtest(
        ray_session,
        dep,
        out,
        *("--client", "native", "--users", "5", "--duration", "9", "--shape", "spike"),
        *("--mix", "write-heavy", "--value-size", "1000", "--workers", "2", "--workers-via-ray"),
    )
    assert len(s["ray_placed_workers"]) == 2 and s["worker_exit_codes"] == [0, 0]
    assert s["history_complete"] and s["linearizability"]["clock"] == "monotonic"
    # The hosts' folders (the shipped Locust files, the worker's log) are gone.
    assert not any(Path(w["dir"]).exists() for w in s["ray_placed_workers"])
    log = (out / "locust-master.log").read_text()
    targets = [int(x) for x in re.findall(r"Shape test updating to (\d+) users", log)]
    assert targets == [1, 5, 1], targets  # base, spike, base
    rows = s["locust"]["by_operation"]
    assert set(rows) == {"native get", "native put", "native append"}
    puts = [r for r in history(s) if r["op"][0] == "put"]
    assert puts and all(len(r["op"][2]) == 1000 for r in puts)
    # A sidecar per Locust worker process with native users; all gone once Locust quit.
    logs = list(out.glob("sidecar-*.log"))
    assert logs and all(f"serving {dep.namespace}" in f.read_text() for f in logs)
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "pmmc_ray.ops.sidecar" in (cmd := " ".join(p.info["cmdline"] or []))
        and dep.namespace in cmd
    ]
    assert left == []


def test_gevent_stayed_out_of_this_process():
    assert "gevent" not in sys.modules and "locust" not in sys.modules
    assert os.environ.get("GEVENT_SUPPORT") is None
