"""A distributed Locust run that loses a worker must not pass as a complete history
(no Ray: the HTTP users load an in-memory gateway; Locust runs only in child
processes, so gevent never enters this one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pmmc_ray.ops.loadtest import free_port

LOADTEST = Path(__file__).resolve().parents[1] / "loadtest"

FAKE_GATEWAY = """
import sys
from aiohttp import web
from pmmc_ray.app import KVStore
from pmmc_ray.gateway.http import make_app

class Backend:
    def __init__(self):
        self.store = KVStore()
    def validate(self, op):
        self.store.validate(op)
    async def execute(self, op):
        return self.store.apply(op)
    async def health(self):
        return True, {}
    async def status(self):
        return {}

web.run_app(make_app(Backend()), host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def test_a_worker_lost_mid_run_makes_the_history_incomplete_and_fails_the_run(tmp_path):
    port, master_port = free_port(), free_port()
    locust = [sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py")]
    common = ["--kv-history-dir", str(tmp_path), "--kv-keys", "5", "HttpKVUser"]
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        with (tmp_path / log).open("w") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        start([sys.executable, "-c", FAKE_GATEWAY, str(port)], "gateway.log")
        _wait_http(f"http://127.0.0.1:{port}/v1/health")
        master = start(
            [
                *locust,
                "--headless",
                "--master",
                "--master-bind-host=127.0.0.1",
                f"--master-bind-port={master_port}",
                "--expect-workers=2",
                "--users=4",
                "--spawn-rate=4",
                "--run-time=8s",
                f"--host=http://127.0.0.1:{port}",
                "--kv-run-id=rlost",
                *common,
            ],
            "master.log",
        )
        worker = ["--worker", "--master-host=127.0.0.1", f"--master-port={master_port}"]
        start([*locust, *worker, *common], "worker-0.log")
        doomed = start([*locust, *worker, *common], "worker-1.log")
        history = tmp_path / "history-rlost.jsonl"
        deadline = time.monotonic() + 120
        while not history.exists() or history.stat().st_size == 0:  # the run is on
            assert time.monotonic() < deadline and master.poll() is None
            time.sleep(0.2)
        doomed.send_signal(signal.SIGKILL)  # its unsent operations are lost
        assert master.wait(180) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    meta = json.loads((tmp_path / "history-rlost.meta.json").read_text())
    assert meta["complete"] is False and meta["run"] == "rlost"
    assert len(meta["workers"]) == 2 and len(meta["missing"]) == 1
    log = (tmp_path / "master.log").read_text()
    assert "no complete history from worker(s)" in log
