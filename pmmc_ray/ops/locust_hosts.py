"""Locust workers placed by Ray: one actor per worker runs ``locust --worker`` on its node.

On a ``ray up`` cluster only the head is at hand (``ray exec`` runs there); Ray itself
can put a process on every other node. :func:`start_locust_workers` creates one
:class:`LocustWorkerHost` per requested worker, spread round-robin over the alive
nodes (soft node affinity), ships it the Locust files as text (the nodes need
pmmc-ray and Locust installed, not a copy of the checkout), and has it start a Locust
worker that connects to the master. The hosts report the worker's exit code and log;
:func:`stop_hosts` ends them, their workers and their folders, whatever state they are
in.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["LocustWorkerHost", "master_host", "start_locust_workers", "stop_hosts"]


class LocustWorkerHost:
    """Runs one Locust worker process on this actor's node."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pmmc-locust-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "locust-worker.log"

    def start(self, files: dict[str, str], load: list[str], args: list[str]) -> dict[str, Any]:
        """Write ``files`` (name -> text), then run ``locust -f <load> <args>``."""
        for name, text in files.items():
            (self.dir / Path(name).name).write_text(text)
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            ",".join(str(self.dir / Path(n).name) for n in load),
            *args,
        ]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": self.proc.pid,
            "dir": str(self.dir),
        }

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker to exit (then kill it); its exit code and log."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        log = self.log_path.read_text(errors="replace")
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"returncode": code, "log": log}

    def stop(self) -> None:
        """Kill the worker if it still runs, and remove this host's folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_Host = ray.remote(num_cpus=0)(LocustWorkerHost)


def start_locust_workers(
    n: int, files: dict[str, str], load: list[str], args: list[str]
) -> list[tuple[Any, dict[str, Any]]]:
    """Start ``n`` Locust workers spread over the alive nodes; (actor, info) each."""
    nodes = sorted(x["NodeID"] for x in ray.nodes() if x.get("Alive"))
    hosts = [
        _Host.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)
        ).remote()
        for i in range(n)
    ]
    try:
        infos = ray.get([h.start.remote(files, load, args) for h in hosts], timeout=120)
    except BaseException:
        stop_hosts(hosts)
        raise
    return list(zip(hosts, infos, strict=True))


def stop_hosts(hosts: list[Any], timeout_s: float = 30.0) -> None:
    """Stop every host's worker and remove its folder, then end the actors. (Killing
    an actor alone would leave its worker process running.)"""
    try:
        ray.get([h.stop.remote() for h in hosts], timeout=timeout_s)
    except Exception:
        pass  # a host that cannot answer: its worker loses its master and quits
    for h in hosts:
        try:
            ray.kill(h)
        except Exception:
            pass


def master_host() -> str:
    """The address Locust workers on other nodes reach this node at."""
    return os.environ.get("PMMC_LOCUST_MASTER_HOST") or ray.util.get_node_ip_address()
