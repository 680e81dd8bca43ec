"""pmmc-ray: "Paxos Made Moderately Complex" as a replicated state machine on Ray.

``import pmmc_ray`` stays cheap and does not import ray: ``deploy``, ``connect`` and
``DeploymentConfig`` are loaded from :mod:`pmmc_ray.runtime` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeploymentConfig", "connect", "deploy"]

# --- lazy runtime exports (the runtime is the only layer that imports ray) ---
_RUNTIME_EXPORTS = {
    "deploy": "pmmc_ray.runtime.deployment",
    "connect": "pmmc_ray.runtime.deployment",
    "DeploymentConfig": "pmmc_ray.runtime.config",
}


def __getattr__(name: str) -> Any:
    module = _RUNTIME_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pmmc_ray' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
