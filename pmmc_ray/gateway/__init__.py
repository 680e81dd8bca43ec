"""The HTTP API of a deployment, for clients that are not Python/Ray (and for Locust).

- :mod:`.http`: the aiohttp application: routes, input checks, status codes (no Ray);
- :mod:`.pool`: its backend on a live deployment, a pool of async clients;
- :mod:`.server`: the per-node gateway actor and ``start_gateways`` /
  ``list_gateways`` / ``stop_gateways``.

Nothing is imported here, so ``pmmc_ray.gateway.http`` can be used without Ray.
"""
