"""Ray integration tests (DESIGN 6, rung 5): one local Ray for the whole session.

Deselect them with ``-m "not ray"``. Each test module creates its own deployment in
its own namespace and shuts it down; all data lives under a temporary directory.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a local Ray instance (slow; real actors)")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    # Keep Ray on 127.0.0.1 on these machines, and run a private test cluster without
    # token authentication (Ray 2.59+ enables it by default for new local clusters).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    if ray.is_initialized():
        pytest.fail("Ray is already initialized in this process; the ray tests need their own")
    with socket.socket() as sock:  # a free loopback port for the Prometheus exporter
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    # address="local": always a new private instance, never a Ray found through
    # RAY_ADDRESS or /tmp/ray/ray_current_cluster (a cluster another job left running).
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="pmmc-tests",
        log_to_driver=False,
        _metrics_export_port=metrics_port,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("pmmc-data"))


# Faster failure detection than the defaults, still far above this machine's latencies.
TEST_TIMING = {
    "replica_tick": 100,
    "retry": 50,
    "ping_interval": 50,
    "timeout_initial": 300,
    "timeout_min": 200,
    "timeout_max": 2000,
    "scout_retry": 300,
}


@pytest.fixture(scope="module")
def make_deployment(ray_session: Any, data_dir: str) -> Iterator[Callable[..., Any]]:
    """Factory: ``make_deployment("name", **config)``; shut down at module end."""
    from pmmc_ray.runtime import deploy

    made: list[Any] = []

    def make(name: str, *, fresh: bool = False, **overrides: Any) -> Any:
        cfg = {
            "namespace": f"t-{name}-{uuid.uuid4().hex[:6]}",
            "data_dir": data_dir,
            **TEST_TIMING,
            **overrides,
        }
        dep = deploy(cfg, fresh=fresh)
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.shutdown(delete_data=True)
