"""Helpers shared by the Ray integration tests."""

from __future__ import annotations

import time
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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for lid in dep.config.leader_ids():
            try:
                st = status_of(dep, lid)
            except Exception:
                continue
            if st.get("epochs", {}).get("0", {}).get("active"):
                return lid
        time.sleep(0.1)
    raise AssertionError("no active leader")
