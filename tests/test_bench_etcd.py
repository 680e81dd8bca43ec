"""The etcd peer of ``pmmc-ray bench``: the driver against fake members (in-process and
as a stand-in ``etcd`` binary), the skip without etcd, and a short real run when an
etcd binary is on PATH. No wall-clock figure is asserted."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from fake_etcd import FAKE_VERSION, FakeMember

from pmmc_ray.runtime.bench_etcd import NOT_FOUND, drive, error_kind, etcd_bench
from pmmc_ray.runtime.openloop import UNKNOWN

FAKE = Path(__file__).with_name("fake_etcd.py")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _with_members(members: list[FakeMember], body):
    urls = [await m.start() for m in members]
    try:
        return await body(urls)
    finally:
        for m in members:
            await m.stop()


def test_drive_puts_to_the_leader_and_accounts_for_every_put():
    members = [FakeMember(i, leader_id=2) for i in (1, 2, 3)]

    async def body(urls):
        return await drive(
            urls, [1, 4], 0.3, rates=[(100.0, 8)], value_bytes=32, samples=5, ready_timeout_s=10
        )

    r = asyncio.run(_with_members(members, body))
    leader = members[1]
    assert r["leader"] == leader.url
    assert members[0].puts == [] and members[2].puts == []  # only the leader is driven
    assert leader.puts[0] == ("warm", "up")
    assert all(k.startswith("k") and len(v) == 32 for k, v in leader.puts[1:])
    assert [w["clients"] for w in r["workload"]] == [1, 4]
    assert all(w["errors"] == {} for w in r["workload"])
    (o,) = r["open_loop"]
    assert o["offered_ops_per_s"] == 100.0 and o["clients"] == 8 and o["scheduled"] == 30
    assert o["started"] + o["not_started"] == 30
    assert o["ok"] + o["unknown"] + sum(o["errors"].values()) == o["started"]
    # Every put the fake stored is one the driver counted, and the other way round.
    counted = 1 + 5 + sum(w["ops_ok"] for w in r["workload"]) + o["ok"]
    assert len(leader.puts) == counted
    seq = r["sequential_put_ms"]
    assert seq["p50"] is not None and seq["p50"] <= seq["p99"]


def test_http_errors_are_counted_not_fatal():
    # The warm-up and 3 sequential puts succeed; then every 2nd put answers HTTP 500.
    leader = FakeMember(1, leader_id=1, fail_after=4, fail_every=2)

    async def body(urls):
        return await drive(urls, [2], 0.2, rates=[(50.0, 4)], samples=3, ready_timeout_s=10)

    r = asyncio.run(_with_members([leader], body))
    (w,) = r["workload"]
    (o,) = r["open_loop"]
    failed = w["errors"].get("http_500", 0) + o["errors"].get("http_500", 0)
    assert failed >= 1
    assert set(w["errors"]) <= {"http_500"} and set(o["errors"]) <= {"http_500"}
    assert len(leader.puts) == 1 + 3 + w["ops_ok"] + o["ok"]
    assert leader.seen == len(leader.puts) + failed


def test_no_leader_times_out_and_a_dead_member_is_reported():
    no_leader = [FakeMember(1, leader_id=0)]

    async def body(urls):
        return await drive(urls, [1], 0.1, samples=1, ready_timeout_s=0.3)

    with pytest.raises(TimeoutError, match="not ready"):
        asyncio.run(_with_members(no_leader, body))

    def dead():
        raise RuntimeError("etcd member pid 1 exited 3")

    async def body2(urls):
        return await drive(urls, [1], 0.1, samples=1, alive=dead)

    with pytest.raises(RuntimeError, match="exited 3"):
        asyncio.run(_with_members([FakeMember(1, leader_id=1)], body2))


def test_error_kinds():
    from pmmc_ray.runtime.bench_etcd import EtcdError

    assert error_kind(EtcdError(503, b"x")) == "http_503"
    assert error_kind(TimeoutError()) == UNKNOWN
    assert error_kind(ConnectionResetError()) == UNKNOWN
    assert error_kind(KeyError("bug")) == "error"


def _fake_binary(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "etcd"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_whole_bench_on_a_fake_etcd_binary_stops_members_and_removes_data(tmp_path, monkeypatch):
    exe = _fake_binary(tmp_path)
    monkeypatch.setenv("PATH", str(exe.parent))  # found on PATH, like a real etcd
    work = tmp_path / "tmp"
    work.mkdir()
    pids: list[int] = []
    r = etcd_bench([1, 2], 0.2, rates=[(40.0, 4)], samples=3, spawned=pids, tmp_parent=str(work))
    assert r["version"] == FAKE_VERSION and r["binary"] == str(exe)
    assert len(pids) == 3 and not [p for p in pids if _alive(p)]
    assert list(work.iterdir()) == []  # the data dirs and logs are gone
    assert [w["clients"] for w in r["workload"]] == [1, 2]
    assert r["open_loop"][0]["scheduled"] == 8
    assert r["ops"] == "put, 16-byte values, 50 keys"


def test_a_member_that_exits_fails_the_bench_cleanly(tmp_path, monkeypatch):
    exe = _fake_binary(tmp_path)
    monkeypatch.setenv("FAKE_ETCD_FAIL", "1")
    work = tmp_path / "tmp"
    work.mkdir()
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="told to fail"):
        etcd_bench([1], 0.2, samples=1, binary=str(exe), spawned=pids, tmp_parent=str(work))
    assert len(pids) == 3 and not [p for p in pids if _alive(p)]
    assert list(work.iterdir()) == []


def test_a_failing_put_outside_the_loops_is_a_runtime_error(tmp_path, monkeypatch):
    # The warm-up put commits, the first sequential put answers HTTP 500: the bench
    # reports it as an error the CLI catches, and still stops everything.
    exe = _fake_binary(tmp_path)
    monkeypatch.setenv("FAKE_ETCD_PUT_FAIL", "1")
    work = tmp_path / "tmp"
    work.mkdir()
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="EtcdError: HTTP 500"):
        etcd_bench([1], 0.2, samples=1, binary=str(exe), spawned=pids, tmp_parent=str(work))
    assert len(pids) == 3 and not [p for p in pids if _alive(p)]
    assert list(work.iterdir()) == []


def test_without_etcd_on_path_the_result_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    pids: list[int] = []
    assert etcd_bench([1], 1.0, spawned=pids) == NOT_FOUND
    assert NOT_FOUND["skipped"].startswith("not found on PATH")
    assert pids == []


@pytest.mark.skipif(shutil.which("etcd") is None, reason="no etcd binary on PATH")
def test_short_real_run_measures_and_leaves_nothing_behind(tmp_path):
    work = tmp_path / "tmp"
    work.mkdir()
    pids: list[int] = []
    r = etcd_bench([1, 4], 1.0, rates=[(100.0, 16)], samples=20, spawned=pids, tmp_parent=str(work))
    assert len(pids) == 3 and not [p for p in pids if _alive(p)]
    assert list(work.iterdir()) == []
    assert r["version"]
    assert 0 < r["sequential_put_ms"]["p50"] <= r["sequential_put_ms"]["p99"]
    for w in r["workload"]:
        assert w["ops_ok"] > 0 and w["errors"] == {}
    (o,) = r["open_loop"]
    assert o["ok"] > 0 and o["unknown"] == 0 and o["errors"] == {}
