"""The Ray runtime: the only layer of pmmc_ray that imports ray.

It interprets the core's effects with real actors (:mod:`.actors`), keeps durable
records in SQLite (:mod:`.storage`), creates and finds deployments (:mod:`.deployment`)
and provides clients (:mod:`.client`, :mod:`.threaded`). See ``/work/shared/DESIGN.md``
section 4.

Names are imported lazily, so ``pmmc_ray.runtime.config`` (pure pydantic) can be used
without importing ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlreadyDeployedError": "deployment",
    "AsyncClient": "client",
    "Client": "client",
    "ClientClosedError": "threaded",
    "ConfigFileError": "config",
    "DataDirError": "manifest",
    "Deployment": "deployment",
    "DeploymentConfig": "config",
    "HistoryRecorder": "client",
    "NotDeployedError": "deployment",
    "OperationRejected": "client",
    "OutcomeUnknownError": "client",
    "SessionExpiredError": "client",
    "SessionNotOpenedError": "client",
    "SubmitMux": "mux",
    "ThreadedClient": "threaded",
    "connect": "deployment",
    "deploy": "deployment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pmmc_ray.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
