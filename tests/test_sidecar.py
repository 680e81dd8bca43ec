"""The sidecar with fake replica handles (no Ray): what each client outcome becomes on
the wire, requests that are never performed (a line over the limit, a line cut off),
new clients after a new replica list; and its gevent side: a failed start leaves
nothing behind, a request that cannot be sent is NotSent."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

import pytest
from fake_replicas import FakeReplica, expired, is_open, performs, silent_on

from pmmc_ray.core.messages import Response
from pmmc_ray.ops.sidecar import Sidecar
from pmmc_ray.ops.sidecar_client import NotSent, SidecarConnection, SidecarProcess
from pmmc_ray.runtime import DeploymentConfig

CONFIG = DeploymentConfig(namespace="t-sidecar", f=1)


class FakeDeployment:
    config = CONFIG
    namespace = CONFIG.namespace

    def __init__(self) -> None:
        self.replicas = list(CONFIG.replica_ids())

    def replica_names(self) -> list[str]:
        return list(self.replicas)


@pytest.fixture
def replica(monkeypatch) -> FakeReplica:
    import ray

    r = FakeReplica()
    monkeypatch.setattr(ray, "get_actor", lambda name, namespace: r)
    return r


def sidecar_of(op_timeout_s: float = 0.3) -> Sidecar:
    sc = Sidecar(FakeDeployment(), op_timeout_s)  # type: ignore[arg-type]
    asyncio.run(sc.refresh())
    return sc


def refuse(cmd):
    if is_open(cmd):
        return performs(cmd)
    return Response(cmd.client_id, cmd.command_id, None, "append would exceed")


def broken(cmd):
    if is_open(cmd):
        return performs(cmd)
    raise AssertionError("a bug in the replica")  # not retryable: outcome unknown


@pytest.mark.parametrize(
    "answer,line,kind",
    [
        (performs, b'{"op": ["get", "k"]}\n', None),
        (performs, b"not json\n", "invalid"),
        (performs, b'{"op": "get"}\n', "invalid"),
        (performs, b'{"op": ["get", 7]}\n', "invalid"),
        (performs, b'{"op": ["put", "k", "\\ud800"]}\n', "invalid"),
        (refuse, b'{"op": ["append", "k", "v"]}\n', "rejected"),
        (silent_on(is_open), b'{"op": ["put", "k", "v"]}\n', "not_sent"),
        (silent_on(lambda c: c.command_id == 1), b'{"op": ["put", "k", "v"]}\n', "unknown"),
        (expired, b'{"op": ["put", "k", "v"]}\n', "unknown"),
        (broken, b'{"op": ["put", "k", "v"]}\n', "unknown"),
    ],
)
def test_every_outcome_on_the_wire_and_the_client_is_kept(replica, answer, line, kind):
    replica.answer = answer
    sc = sidecar_of()

    async def go() -> tuple[dict[str, Any], bool]:
        _, client = sc._client()
        return await sc.answer(client, line)

    resp, replace = asyncio.run(go())
    if kind is None:
        assert resp == {"ok": True, "result": "v"}
    else:
        assert (resp["ok"], resp["kind"]) == (False, kind), resp
    assert replace is False  # whatever the outcome, the client goes on (no session churn)
    if kind == "not_sent":
        assert {c.command_id for c in replica.submitted} == {0}


def test_an_unexpected_error_is_unknown_and_replaces_the_client(replica):
    class Buggy:
        async def execute(self, op: tuple) -> Any:
            raise KeyError("a bug in the client")

    resp, replace = asyncio.run(sidecar_of().answer(Buggy(), b'{"op": ["get", "k"]}\n'))  # type: ignore[arg-type]
    assert (resp["kind"], replace) == ("unknown", True)


async def _session(sc: Sidecar, path: str, limit: int, talk: Any) -> Any:
    server = await asyncio.start_unix_server(sc.serve, path=path, limit=limit)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            return await talk(reader, writer)
        finally:
            writer.close()
    finally:
        server.close()


def test_a_line_over_the_limit_is_invalid_then_the_connection_closes(replica, tmp_path):
    sc = sidecar_of()

    async def talk(reader, writer):
        writer.write(b'{"op": ["put", "k", "' + b"v" * 5000 + b'"]}\n')
        await writer.drain()
        answer = json.loads(await reader.readline())
        return answer, await reader.read()  # then the end of the stream

    answer, rest = asyncio.run(_session(sc, str(tmp_path / "s"), 1024, talk))
    assert (answer["kind"], answer["message"]) == ("invalid", "request line too long")
    assert rest == b""
    assert replica.submitted == []  # nothing was performed


def test_a_request_cut_off_is_never_performed(replica, tmp_path):
    sc = sidecar_of()

    async def talk(reader, writer):
        writer.write(b'{"op": ["put", "k", "v"]}')  # complete JSON, but no newline
        await writer.drain()
        writer.write_eof()
        return await reader.read()

    assert asyncio.run(_session(sc, str(tmp_path / "s"), 1024, talk)) == b""
    assert replica.submitted == []


def test_connections_move_to_clients_of_a_new_replica_list(replica, tmp_path):
    sc = sidecar_of()

    async def talk(reader, writer):
        async def ask() -> str:
            writer.write(b'{"op": ["put", "k", "v"]}\n')
            await writer.drain()
            assert json.loads(await reader.readline())["ok"]
            return replica.submitted[-1].client_id

        first = await ask()
        again = await ask()
        sc.dep.replicas = ["replica-0", "replica-1", "replica-2"]  # reconfigured
        await sc.refresh()
        return first, again, await ask()

    first, again, after = asyncio.run(_session(sc, str(tmp_path / "s"), 1024, talk))
    assert first == again != after


def test_a_sidecar_that_exits_at_once_leaves_no_folder(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits with status 1
    sc = SidecarProcess("t-none")
    with pytest.raises(RuntimeError, match="exited with status 1 before serving"):
        sc.start(timeout_s=10)
    assert sc.socket_path is not None and not os.path.exists(os.path.dirname(sc.socket_path))
    assert sc.proc is None


def test_a_request_to_a_gone_sidecar_is_not_sent(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen()
        conn = SidecarConnection(path, 5.0)
        peer, _ = srv.accept()
        peer.close()  # the sidecar died
        try:
            with pytest.raises(NotSent):
                conn.execute(("put", "k", "v" * 100_000))
        finally:
            conn.close()
