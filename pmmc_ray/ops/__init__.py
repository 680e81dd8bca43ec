"""Operator tools that run on top of a deployment (they use the runtime, never inside it).

- :mod:`.soak`: a long run at load; memory, disk and failover times over time;
- :mod:`.loadgen`: workload mixes, key distributions, values, and the per-user
  history log of the Locust users (pure Python: safe to import under gevent);
- :mod:`.sidecar` and :mod:`.sidecar_client`: how a gevent-patched Locust worker
  reaches the cluster with the native Python client, through a child process;
- :mod:`.loadtest`: the ``pmmc-ray loadtest`` launcher.

Nothing is imported here: Locust processes import :mod:`.loadgen` and
:mod:`.sidecar_client` only, never Ray. Modules here print nothing (their command-line
modules do).
"""
