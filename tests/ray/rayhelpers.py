"""Helpers shared by the Ray integration tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def wait_restarted(dep: Any, name: str, old_pid: int, timeout_s: float = 60.0) -> dict:
    """Wait until ``name`` runs in a new process after a restart; return its status."""
    import ray

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            st = ray.get(dep.handle(name).status.remote(), timeout=5)
            if st["pid"] != old_pid and st["reconstructed"]:
                return st
            last = st
        except Exception as e:  # restarting: calls fail until it is back
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{name} did not come back after a restart: {last!r}")


def status_of(dep: Any, name: str) -> dict:
    import ray

    return ray.get(dep.handle(name).status.remote(), timeout=10)


def active_leader(dep: Any, timeout_s: float = 20.0) -> str:
    """The active leader's name, waiting for an election in progress."""
    from pmmc_ray.runtime.workload import active_leader as find

    lid = find(dep, wait_s=timeout_s)
    assert lid is not None, "no active leader"
    return lid


def delete_storage(path: Path) -> None:
    """Delete an actor's SQLite files, as a lost disk would."""
    assert path.exists()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass
