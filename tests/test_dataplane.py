"""The data plane without Ray: the wire codec, the handshake, and links between two
:class:`DataPlane` objects in one event loop (addresses resolved from a dict)."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct

import pytest

from pmmc_ray.core import Batch, Command, Config
from pmmc_ray.core.messages import Propose
from pmmc_ray.runtime import wire
from pmmc_ray.runtime.dataplane import DataPlane

CFG = Config(0, 1, ("replica-0",), ("leader-0",), ("acceptor-0",))


def _propose(i: int) -> Propose:
    return Propose("replica-0", CFG, 1, ((i, Batch((Command("c1", i, ("put", "k", str(i))),))),))


# --- codec -------------------------------------------------------------------------------------


def test_codec_round_trips_protocol_messages():
    msgs = [_propose(1), _propose(2)]
    assert wire.decode(wire.encode(msgs)) == msgs


class _Custom:
    pass


def test_encoder_refuses_objects_the_decoder_would_refuse():
    cmd = Command("c1", 1, ("put", "k", _Custom()))
    with pytest.raises(wire.NotWireSafe):
        wire.encode([Propose("replica-0", CFG, 1, ((1, Batch((cmd,))),))])


def test_decoder_refuses_any_other_global_before_calling_it():
    for evil in (pickle.dumps([os.system]), pickle.dumps(_Custom()), pickle.dumps([_Custom()])):
        with pytest.raises(wire.WireError):
            wire.decode(evil)


def test_decoder_refuses_garbage_and_non_message_payloads():
    for bad in (b"", b"\x80\x05garbage", pickle.dumps({"a": 1}), pickle.dumps(["text"])):
        with pytest.raises(wire.WireError):
            wire.decode(bad)


def test_frame_length_is_capped():
    with pytest.raises(wire.WireError):
        wire.frame_length(struct.pack(">I", wire.MAX_FRAME + 1))
    assert wire.frame_length(struct.pack(">I", 10)) == 10


def test_proofs_bind_secret_names_and_direction():
    h = {"deployment": "d", "src": "a", "dst": "b", "nonce": "n1"}
    p = wire.proof(b"s" * 32, "opener", h, "n2")
    assert wire.same(p, wire.proof(b"s" * 32, "opener", h, "n2"))
    assert not wire.same(p, wire.proof(b"t" * 32, "opener", h, "n2"))
    assert not wire.same(p, wire.proof(b"s" * 32, "acceptor", h, "n2"))
    assert not wire.same(p, wire.proof(b"s" * 32, "opener", {**h, "src": "x"}, "n2"))


# --- two planes in one loop ----------------------------------------------------------------------


class _Net:
    """Two or more planes; ``resolve`` reads the address book, as Ray does for actors."""

    def __init__(self) -> None:
        self.planes: dict[str, DataPlane] = {}
        self.got: dict[str, list[tuple[str, list]]] = {}

    async def add(self, name: str, secret: bytes = b"k" * 32, deployment: str = "d1") -> DataPlane:
        self.got.setdefault(name, [])

        async def resolve(dst: str) -> tuple[str, int]:
            if dst not in self.planes:
                raise LookupError(dst)
            return await self.planes[dst].address()

        p = DataPlane(
            name,
            deployment,
            secret,
            lambda src, msgs: self.got[name].append((src, msgs)),
            resolve,
            host="127.0.0.1",
            max_buffer=1 << 20,
        )
        await p.start()
        self.planes[name] = p
        return p

    def close(self) -> None:
        for p in self.planes.values():
            p.close()


async def _until(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def _send_until_up(p: DataPlane, dst: str, msgs: list) -> None:
    """What the host does: a False means 'use a Ray call'; here, try again."""
    deadline = asyncio.get_running_loop().time() + 5
    while p.send(dst, msgs) is None:
        assert asyncio.get_running_loop().time() < deadline, p.stats()
        await asyncio.sleep(0.01)


def test_messages_flow_in_order_once_the_link_is_up():
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        await net.add("b")
        try:
            assert a.send("b", [_propose(0)]) is None  # no link yet: the caller uses Ray
            await _send_until_up(a, "b", [_propose(1)])
            for i in range(2, 50):
                assert a.send("b", [_propose(i)]) is not None
            await _until(lambda: len(net.got["b"]) >= 49)
            got = [m.entries[0][0] for _, msgs in net.got["b"] for m in msgs]
            assert got == list(range(1, 50))
            assert {src for src, _ in net.got["b"]} == {"a"}
            assert a.stats()["links_up"] == ["b"]
        finally:
            net.close()

    asyncio.run(main())


def test_a_wrong_secret_or_deployment_never_delivers():
    async def main() -> None:
        net = _Net()
        await net.add("b", secret=b"k" * 32)
        intruder = await net.add("x", secret=b"z" * 32)
        stranger = await net.add("y", deployment="d2")
        try:
            for p in (intruder, stranger):
                for _ in range(30):
                    p.send("b", [_propose(1)])
                    await asyncio.sleep(0.01)
            await _until(lambda: net.planes["b"].refused_connections >= 2)
            assert net.got["b"] == []
            assert intruder.stats()["links_up"] == [] and stranger.stats()["links_up"] == []
        finally:
            net.close()

    asyncio.run(main())


def test_a_raw_socket_cannot_inject_frames():
    async def main() -> None:
        net = _Net()
        b = await net.add("b")
        try:
            host, port = await b.address()
            r, w = await asyncio.open_connection(host, port)
            payload = wire.encode([_propose(1)])
            w.write(wire.frame_header(len(payload)) + payload)  # no handshake
            await w.drain()
            await _until(lambda: b.refused_connections == 1)
            assert net.got["b"] == []
            w.close()
        finally:
            net.close()

    asyncio.run(main())


def test_a_restarted_peer_is_found_again_on_its_new_port():
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        old = await net.add("b")
        try:
            await _send_until_up(a, "b", [_propose(1)])
            await _until(lambda: len(net.got["b"]) == 1)
            old.close()  # the actor died; Ray restarts it on another port
            new = await net.add("b")
            assert (await new.address()) != (await old.address())
            await _until(lambda: "b" not in a.stats()["links_up"])
            await _send_until_up(a, "b", [_propose(2)])
            await _until(lambda: len(net.got["b"]) == 2)
            assert net.got["b"][-1][1][0].entries[0][0] == 2
        finally:
            net.close()

    asyncio.run(main())


def test_cutting_streams_resets_them_both_ways_and_they_come_back():
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        b = await net.add("b")
        await net.add("c")
        try:
            await _send_until_up(a, "b", [_propose(1)])
            await _send_until_up(b, "a", [_propose(2)])
            await _send_until_up(a, "c", [_propose(3)])
            await _until(lambda: len(net.got["b"]) == 1 and len(net.got["a"]) == 1)
            # a cuts its streams with b: its own link to b, and b's link to it
            assert a.cut(["b"]) == ["b"]
            assert a.stats()["links_up"] == ["c"] and a.stats()["cuts"] == 1
            await _until(lambda: "a" not in b.stats()["links_up"])
            assert a.send("b", [_propose(9)]) is None  # down: the host would use Ray
            # both come back by themselves, and frames flow again
            await _send_until_up(a, "b", [_propose(4)])
            await _send_until_up(b, "a", [_propose(5)])
            await _until(lambda: len(net.got["b"]) == 2 and len(net.got["a"]) == 2)
            assert [m.entries[0][0] for _, ms in net.got["b"] for m in ms] == [1, 4]
            # the stream to c was never touched; cutting everything cuts it too
            assert a.cut() == ["b", "c"]
        finally:
            net.close()

    asyncio.run(main())


class _DeafPeer:
    """Completes the handshake, then never reads: a hung process."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.server: asyncio.AbstractServer | None = None
        self.conns: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = wire.frame_length(await reader.readexactly(4))
        h = wire.parse_hello(await reader.readexactly(n))
        writer.write(wire.frame_header(2) + b"nn")
        await reader.readexactly(32)
        writer.write(wire.proof(self.secret, "acceptor", h, "nn"))
        writer.transport.pause_reading()
        self.conns.append(writer)

    def close(self) -> None:
        for w in self.conns:
            w.transport.abort()
        self.server.close()


def test_a_peer_that_does_not_read_costs_at_most_the_buffer():
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        deaf = _DeafPeer(b"k" * 32)
        await deaf.start()
        net.planes["b"] = deaf
        try:
            a.stuck_after_s = 3600.0
            await _send_until_up(a, "b", [_propose(0)])
            batch = [_propose(i) for i in range(2000)]
            for _ in range(300):
                assert a.send("b", batch) is not None  # sent or dropped: never a Ray call
                await asyncio.sleep(0)
            assert a.dropped_full > 0
            assert a.links["b"].writer.transport.get_write_buffer_size() <= a.max_buffer
            # Full for longer than stuck_after_s: the link is closed and reopened.
            a.stuck_after_s = 0.05
            for _ in range(500):
                a.send("b", batch)
                if a.links["b"].connects >= 2:
                    break
                await asyncio.sleep(0.02)
            assert a.links["b"].connects >= 2
        finally:
            deaf.close()
            net.close()

    asyncio.run(main())


def _foreign_global(link):
    # Even with a valid MAC (an authenticated but malicious peer), the decoder refuses
    # a frame naming a foreign global.
    evil = pickle.dumps([os.system])
    return evil, wire.frame_mac(link.key, link.seq + 1, evil)


def _injected(link):
    # A relay that passed the handshake through, then writes its own frames: it does
    # not have the connection's key.
    forged = wire.encode([_propose(666)])
    return forged, wire.frame_mac(b"x" * 32, link.seq + 1, forged)


def _replayed(link):
    # The right key, but an earlier sequence number.
    payload = wire.encode([_propose(1)])
    return payload, wire.frame_mac(link.key, link.seq, payload)


@pytest.mark.parametrize("bad_frame", [_foreign_global, _injected, _replayed])
def test_a_bad_frame_closes_the_stream_undelivered(bad_frame):
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        b = await net.add("b")
        try:
            await _send_until_up(a, "b", [_propose(0)])
            await _until(lambda: len(net.got["b"]) == 1)
            link = a.links["b"]
            payload, mac = bad_frame(link)
            link.writer.write(wire.frame_header(len(payload)) + payload + mac)
            await _until(lambda: b.bad_frames == 1)
            assert [m.entries[0][0] for _, ms in net.got["b"] for m in ms] == [0]
        finally:
            net.close()

    asyncio.run(main())


def test_a_frame_too_big_for_the_buffer_goes_by_ray_instead():
    async def main() -> None:
        net = _Net()
        a = await net.add("a")
        await net.add("b")
        try:
            await _send_until_up(a, "b", [_propose(0)])
            big = Propose(
                "replica-0",
                CFG,
                1,
                ((1, Batch((Command("c1", 1, ("put", "k", "x" * (a.max_buffer // 2))),))),),
            )
            assert a.send("b", [big]) is None  # the caller sends it through Ray
            assert a.send("b", [_propose(1)]) > 0  # the link is still fine
        finally:
            net.close()

    asyncio.run(main())


def test_only_protocol_messages_are_framed():
    from pmmc_ray.core.messages import Persist

    with pytest.raises(wire.NotWireSafe):
        wire.encode([Persist(None)])
    payload = pickle.dumps([Persist(None)])
    with pytest.raises(wire.WireError):
        wire.decode(payload)
