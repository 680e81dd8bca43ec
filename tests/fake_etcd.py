"""A fake etcd member: the two gateway calls the etcd bench makes, over aiohttp.

``POST /v3/kv/put`` stores the base64-decoded key and value; ``POST
/v3/maintenance/status`` says which member id leads. Used in-process by the tests
(:func:`start`), and as a stand-in ``etcd`` binary (run as a script with etcd's flags),
so the bench's start, measure and stop path runs without a real etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import sys
from urllib.parse import urlparse

from aiohttp import web

FAKE_VERSION = "0.0-fake"


class FakeMember:
    """One member. ``fail_after``: after that many puts, every ``fail_every``-th put
    answers HTTP 500 (nothing stored)."""

    def __init__(
        self, member_id: int, leader_id: int, fail_after: int = 0, fail_every: int = 0
    ) -> None:
        self.member_id, self.leader_id = member_id, leader_id
        self.fail_after, self.fail_every = fail_after, fail_every
        self.puts: list[tuple[str, str]] = []
        self.seen = 0
        self.app = web.Application()
        self.app.router.add_post("/v3/kv/put", self.put)
        self.app.router.add_post("/v3/maintenance/status", self.status)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def put(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen += 1
        if self.fail_every and self.seen > self.fail_after and self.seen % self.fail_every == 0:
            return web.json_response({"error": "injected", "code": 14}, status=500)
        key = base64.b64decode(body["key"]).decode()
        value = base64.b64decode(body["value"]).decode()
        self.puts.append((key, value))
        return web.json_response({"header": {"member_id": str(self.member_id), "revision": "1"}})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "header": {"member_id": str(self.member_id)},
                "leader": str(self.leader_id),
                "version": FAKE_VERSION,
            }
        )

    async def start(self, sock: socket.socket | None = None) -> str:
        if sock is None:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _serve(args: argparse.Namespace) -> None:
    names = [kv.split("=", 1)[0] for kv in args.initial_cluster.split(",")]
    me = names.index(args.name) + 1
    os.makedirs(args.data_dir, exist_ok=True)
    with open(os.path.join(args.data_dir, "member"), "w") as f:
        f.write(args.name)
    url = urlparse(args.listen_client_urls.split(",")[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((url.hostname, url.port))
    # The first member leads. FAKE_ETCD_PUT_FAIL: every put after the first fails.
    fail = bool(os.environ.get("FAKE_ETCD_PUT_FAIL"))
    member = FakeMember(me, leader_id=1, fail_after=1 if fail else 0, fail_every=1 if fail else 0)
    await member.start(sock)
    print(f"fake etcd {args.name} serving {member.url}", flush=True)
    await asyncio.Event().wait()  # until killed


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(f"etcd Version: {FAKE_VERSION}\nGit SHA: fake")
        return
    if os.environ.get("FAKE_ETCD_FAIL"):
        print("fake etcd: told to fail", flush=True)
        sys.exit(3)
    ap = argparse.ArgumentParser()
    for flag in (
        "--name",
        "--data-dir",
        "--listen-client-urls",
        "--advertise-client-urls",
        "--listen-peer-urls",
        "--initial-advertise-peer-urls",
        "--initial-cluster",
        "--initial-cluster-token",
        "--initial-cluster-state",
    ):
        ap.add_argument(flag, required=True)
    asyncio.run(_serve(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
