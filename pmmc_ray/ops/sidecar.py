"""A client process for a gevent-patched program: ``python -m pmmc_ray.ops.sidecar``.

Locust patches the standard library with gevent when it is imported, and Ray does not
work in such a process (its gRPC threads and the event loop of its core worker block
or deadlock). So a Locust worker that wants the native Python client starts one of
these as a child process: a plain Python process that connects to the Ray cluster and
serves operations over a Unix socket. Each connection is one paper client (one
:class:`~pmmc_ray.runtime.AsyncClient`, one command in flight); a Locust user holds
one connection. The protocol is one JSON object per line:

- request ``{"op": ["put", "k", "v"]}``;
- answer ``{"ok": true, "result": ...}`` or ``{"ok": false, "kind": K, "message": ...}``
  with K ``invalid`` (malformed, nothing sent), ``rejected`` (the state machine
  refused it, nothing changed) or ``unknown`` (no confirmation before the deadline:
  it may or may not have been applied; the connection then uses a fresh client id).

The process exits when its standard input closes, so it never outlives its parent.
The side the gevent program uses is :mod:`pmmc_ray.ops.sidecar_client`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ..app import InvalidOperation
from ..runtime.client import AsyncClient, OperationRejected, OutcomeUnknownError
from ..runtime.deployment import Deployment, connect

MAX_LINE = 8 * 1024 * 1024


class Sidecar:
    """Serves KV operations of local connections on one deployment."""

    def __init__(self, dep: Deployment, op_timeout_s: float) -> None:
        self.dep = dep
        self.op_timeout_s = op_timeout_s
        self.replicas = dep.replica_names()
        self._n = 0

    def _client(self) -> AsyncClient:
        self._n += 1
        return AsyncClient(
            self.dep.config,
            timeout_s=self.op_timeout_s,
            client_id=f"sidecar-{os.getpid()}-{self._n}",
            replicas=list(self.replicas),
        )

    async def answer(self, client: AsyncClient, line: bytes) -> tuple[dict[str, Any], bool]:
        """The answer to one request line, and whether the client must be replaced."""
        try:
            req = json.loads(line)
            op = req["op"]
            if not isinstance(op, list):
                raise TypeError("op must be a list")
        except (ValueError, KeyError, TypeError) as e:
            return {"ok": False, "kind": "invalid", "message": f"bad request: {e}"}, False
        try:
            return {"ok": True, "result": await client.execute(tuple(op))}, False
        except InvalidOperation as e:
            return {"ok": False, "kind": "invalid", "message": str(e)}, False
        except OperationRejected as e:
            return {"ok": False, "kind": "rejected", "message": str(e)}, False
        except OutcomeUnknownError as e:
            return {"ok": False, "kind": "unknown", "message": str(e)}, True
        except Exception as e:  # anything else after sending: the outcome is unknown
            return {"ok": False, "kind": "unknown", "message": f"{type(e).__name__}: {e}"}, True

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = self._client()
        try:
            while line := await reader.readline():
                resp, replace = await self.answer(client, line)
                if replace:
                    client = self._client()
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Shutting down with a request in flight: its user sees the connection
            # close, and records the outcome as unknown. End quietly (a cancelled
            # connection task makes asyncio's stream callback log a traceback).
            pass
        finally:
            writer.close()


async def _main(args: argparse.Namespace) -> None:
    dep = await asyncio.to_thread(connect, args.namespace, address=args.address)
    sidecar = Sidecar(dep, args.op_timeout)
    server = await asyncio.start_unix_server(sidecar.serve, path=args.socket, limit=MAX_LINE)
    print(f"sidecar {os.getpid()} serving {args.namespace} on {args.socket}", flush=True)
    try:
        # Until the parent closes our standard input (or dies).
        await asyncio.to_thread(sys.stdin.buffer.read)
    finally:
        server.close()
        # Our socket and its private folder go with us, whoever started us.
        for remove in (os.unlink, os.rmdir):
            try:
                remove(args.socket if remove is os.unlink else os.path.dirname(args.socket))
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pmmc_ray.ops.sidecar", description=__doc__)
    p.add_argument("--address", default="auto", help="Ray address (default auto)")
    p.add_argument("--namespace", required=True, help="the deployment's namespace")
    p.add_argument("--socket", required=True, help="Unix socket path to listen on")
    p.add_argument("--op-timeout", type=float, default=10.0, help="seconds per operation")
    args = p.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
