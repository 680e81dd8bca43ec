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
  with K ``invalid`` (malformed, nothing sent; a line over 8 MiB is answered so, then
  the connection is closed), ``rejected`` (the state machine refused it, nothing
  changed), ``not_sent`` (the client could not open its session: nothing was sent) or
  ``unknown`` (no confirmation before the deadline, or the session expired: it may or
  may not have been applied).

Only a complete line (ending in a newline) is performed: a request cut off by a
broken connection never is. A connection keeps its client whatever the answer (the
next command gives up one in doubt; an expired client has a new session), unless
something unexpected happened. The replica list is re-read every 10 s; connections
move to clients of a new list between requests.

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

import ray

from ..runtime.client import AsyncClient, outcome_of
from ..runtime.deployment import Deployment, connect
from ..runtime.mux import SubmitMux

MAX_LINE = 8 * 1024 * 1024


class Sidecar:
    """Serves KV operations of local connections on one deployment."""

    def __init__(self, dep: Deployment, op_timeout_s: float) -> None:
        self.dep = dep
        self.op_timeout_s = op_timeout_s
        self.replicas: list[str] = []
        self.handles: dict[str, Any] = {}
        self.mux = SubmitMux()
        self.generation = 0
        self._n = 0

    async def refresh(self) -> None:
        """Re-read the replica list (and look up their handles), off the event loop."""
        names = await asyncio.to_thread(self.dep.replica_names)
        handles = await asyncio.to_thread(_lookup, names, self.dep.namespace)
        if names != self.replicas:
            self.replicas, self.generation = names, self.generation + 1
        self.handles = handles

    async def refresh_loop(self, interval_s: float = 10.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # keep the list we have
                pass

    def _client(self) -> tuple[int, AsyncClient]:
        self._n += 1
        return self.generation, AsyncClient(
            self.dep.config,
            timeout_s=self.op_timeout_s,
            client_id=f"sidecar-{os.getpid()}-{self._n}",
            replicas=list(self.replicas),
            handles=self.handles,
            mux=self.mux,  # the users' commands to a replica share one call per loop turn
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
        except Exception as e:
            kind = outcome_of(e)
            if kind == "error":  # unexpected, maybe after sending: unknown, and a new client
                return {"ok": False, "kind": "unknown", "message": f"{type(e).__name__}: {e}"}, True
            return {"ok": False, "kind": kind, "message": str(e)}, False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gen, client = self._client()
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over the stream's limit: we cannot find the next line
                    await _send(
                        writer, {"ok": False, "kind": "invalid", "message": "request line too long"}
                    )
                    break
                if not line.endswith(b"\n"):
                    break  # end of stream; a cut-off request is never performed
                if gen != self.generation:
                    gen, client = self._client()  # follow a new replica list
                resp, replace = await self.answer(client, line)
                if replace:
                    gen, client = self._client()
                await _send(writer, resp)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Shutting down with a request in flight: its user sees the connection
            # close, and records the outcome as unknown. End quietly (a cancelled
            # connection task makes asyncio's stream callback log a traceback).
            pass
        finally:
            writer.close()


async def _send(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def _lookup(names: list[str], namespace: str) -> dict[str, Any]:
    out = {}
    for n in names:
        try:
            out[n] = ray.get_actor(n, namespace=namespace)
        except ValueError:
            pass
    return out


async def _main(args: argparse.Namespace) -> None:
    dep = await asyncio.to_thread(connect, args.namespace, address=args.address)
    sidecar = Sidecar(dep, args.op_timeout)
    await sidecar.refresh()
    refresher = asyncio.get_running_loop().create_task(sidecar.refresh_loop())
    server = await asyncio.start_unix_server(sidecar.serve, path=args.socket, limit=MAX_LINE)
    print(f"sidecar {os.getpid()} serving {args.namespace} on {args.socket}", flush=True)
    try:
        # Until the parent closes our standard input (or dies).
        await asyncio.to_thread(sys.stdin.buffer.read)
    finally:
        refresher.cancel()
        server.close()
        try:
            os.unlink(args.socket)  # we made it
        except OSError:
            pass
        if args.remove_dir:  # only when the parent says the folder is ours
            try:
                os.rmdir(os.path.dirname(args.socket))
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pmmc_ray.ops.sidecar", description=__doc__)
    p.add_argument("--address", default="auto", help="Ray address (default auto)")
    p.add_argument("--namespace", required=True, help="the deployment's namespace")
    p.add_argument("--socket", required=True, help="Unix socket path to listen on")
    p.add_argument("--op-timeout", type=float, default=10.0, help="seconds per operation")
    p.add_argument(
        "--remove-dir",
        action="store_true",
        help="remove the socket's folder on exit (it is private to this sidecar)",
    )
    args = p.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
