"""The Locust users' workload and history recording (pure Python, no Locust, no Ray)."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from pmmc_ray.app import KVStore
from pmmc_ray.ops.loadgen import (
    DISCARDED,
    MIXES,
    RETURNED,
    UNKNOWN,
    HistoryLog,
    KeyChooser,
    OpGenerator,
    check_histories,
    http_outcome,
    load_histories,
    read_locust_stats,
    sidecar_outcome,
)


def gen(mix: str = "mixed", dist: str = "uniform", size: int = 16, seed: int = 1) -> OpGenerator:
    return OpGenerator("u1", "run", MIXES[mix], KeyChooser(100, dist), value_size=size, seed=seed)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_a_mix_gives_valid_operations_in_its_shares(mix):
    g = gen(mix)
    ops = [g.next() for _ in range(20_000)]
    for op in ops:
        KVStore().validate(op)
    shares = Counter(op[0] for op in ops)
    for name, share in MIXES[mix].items():
        assert abs(shares[name] / len(ops) - share) < 0.02, (name, shares)
    assert set(shares) == set(MIXES[mix])


def test_writes_are_unique_and_sized():
    g = gen("put", size=200)
    values = [g.next()[2] for _ in range(1000)]
    assert len(set(values)) == 1000
    assert {len(v) for v in values} == {200}


def test_uniform_and_zipf_keys():
    rng = random.Random(3)
    uni = Counter(KeyChooser(100, "uniform").draw(rng) for _ in range(50_000))
    zipf = Counter(KeyChooser(100, "zipf", 0.99).draw(rng) for _ in range(50_000))
    assert max(uni.values()) / 50_000 < 0.02
    # Zipf(0.99) over 100 keys: the hottest key gets 1/H(100, 0.99), about 19%.
    assert 0.17 < zipf[0] / 50_000 < 0.21
    assert zipf[0] > zipf[1] > zipf[10] > zipf[99]
    with pytest.raises(ValueError):
        KeyChooser(10, "pareto")


def test_cas_expects_what_the_user_saw_last():
    g = gen("cas")
    g.observe(("get", "run-k1"), "seen")
    for _ in range(500):
        op = g.next()
        if op[0] == "cas" and op[1] == "run-k1":
            assert op[2] == "seen"
            break
    else:
        pytest.fail("no cas on run-k1")
    g.observe(("put", "run-k1", "mine"), None)
    g.observe(("delete", "run-k2"), None)
    assert g._seen == {"run-k1": "mine", "run-k2": None}


def test_history_log_outcomes():
    log = HistoryLog()
    a = log.begin("c1", ("put", "k", "1"))
    b = log.begin("c2", ("get", "k"))
    c = log.begin("c3", ("put", "k", "bad"))
    d = log.begin("c4", ("append", "k", "x"))
    log.returned(a, None)
    log.discard(c)  # refused: changed nothing, not recorded
    first = [json.loads(x) for x in log.drain()]
    assert [(r["client"], r["op"]) for r in first] == [("c1", ["put", "k", "1"])]
    assert first[0]["return"] >= first[0]["call"]
    log.unknown(d)
    rest = [json.loads(x) for x in log.drain(final=True)]  # b still open: unknown
    assert sorted((r["client"], r["return"]) for r in rest) == [("c2", None), ("c4", None)]
    log.returned(b, "1")  # too late: already written as unknown
    assert log.drain(final=True) == []


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_check_histories_merges_files(tmp_path):
    a = _write(
        tmp_path / "a.jsonl",
        [{"client": "a", "call": 1.0, "return": 2.0, "op": ["put", "k", "1"], "result": None}],
    )
    b = _write(
        tmp_path / "b.jsonl",
        [{"client": "b", "call": 3.0, "return": 4.0, "op": ["get", "k"], "result": "1"}],
    )
    res = check_histories([a, b])
    assert (res["verdict"], res["ops"], res["clients"]) == ("linearizable", 2, 2)
    assert check_histories([b])["verdict"] == "not_linearizable"


def test_clock_skew_widening_keeps_the_check_sound(tmp_path):
    # Node B's clock runs 5 ms behind: its get of the value written on node A at
    # [1.000, 1.002] appears to return at 0.999, before the write began.
    h = _write(
        tmp_path / "h.jsonl",
        [
            {
                "client": "a",
                "call": 1.000,
                "return": 1.002,
                "op": ["put", "k", "1"],
                "result": None,
            },
            {"client": "b", "call": 0.997, "return": 0.999, "op": ["get", "k"], "result": "1"},
        ],
    )
    assert check_histories([h])["verdict"] == "not_linearizable"  # a false alarm
    assert check_histories([h], skew_s=0.005)["verdict"] == "linearizable"
    ops, clock = load_histories([h], skew_s=0.005)
    assert clock == "wall"  # no monotonic times in these records
    assert ops[0].call == pytest.approx(0.995) and ops[0].ret == pytest.approx(1.007)


def test_read_locust_stats(tmp_path):
    (tmp_path / "x_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Requests/s,50%,99%\n"
        "POST,put,10,0,12,5.0,12,30\n"
        ",Aggregated,10,0,12,5.0,12,30\n"
    )
    rows = read_locust_stats(tmp_path / "x")
    assert rows["Aggregated"]["Request Count"] == "10"
    assert rows["POST put"]["99%"] == "30"


def test_loadgen_and_sidecar_client_import_neither_ray_nor_gevent():
    # They are imported by gevent-patched Locust processes.
    import subprocess

    code = (
        "import sys, pmmc_ray.ops.loadgen, pmmc_ray.ops.sidecar_client, pmmc_ray.gateway.schema;"
        "bad = [m for m in ('ray', 'gevent', 'aiohttp') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loadtest_command_checks_history_files(tmp_path, capsys):
    from pmmc_ray.cli import main

    good = _write(
        tmp_path / "good.jsonl",
        [{"client": "a", "call": 1.0, "return": 2.0, "op": ["put", "k", "1"], "result": None}],
    )
    bad = _write(
        tmp_path / "bad.jsonl",
        [{"client": "b", "call": 3.0, "return": 4.0, "op": ["get", "k"], "result": "2"}],
    )
    assert main(["loadtest", "--check", str(good)]) == 0
    assert "history: linearizable (1 operations" in capsys.readouterr().out
    assert main(["loadtest", "--check", str(good), str(bad)]) == 1
    assert "not_linearizable" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,words",
    [
        (["--users", "0"], "--users must be >= 1"),
        (["--client", "grpc"], "--client must be"),
        (["--address", "127.0.0.1:1"], "--address needs --namespace"),
        (["--value-size", "0"], "--value-size"),
        (["--locust-dir", "/nonexistent"], "no Locust files"),
    ],
)
def test_loadtest_command_rejects_bad_arguments_before_starting_anything(args, words, capsys):
    from pmmc_ray.cli import main

    assert main(["loadtest", *args]) == 2
    assert words in capsys.readouterr().err


def test_locust_command_lines_for_a_master_and_its_workers(tmp_path):
    from pmmc_ray.ops.loadtest import LoadTestPlan, locust_commands

    plan = LoadTestPlan(
        users=10, duration_s=20, workers=2, clients=("http", "native"), shape="step"
    )
    c = locust_commands(
        plan, tmp_path, "r1", "http://127.0.0.1:8080", "10.0.0.5:6379", "ns", "10.0.0.5"
    )
    assert [f.name for f in c.files] == ["locustfile.py", "native.py"]
    assert c.main[4].endswith("shape_step.py") and "shape_step.py" not in str(c.worker_command())
    for arg in ("--headless", "--master", "--master-bind-host=10.0.0.5", "--expect-workers=2"):
        assert arg in c.main
    assert "--host=http://127.0.0.1:8080" in c.main and f"--csv={tmp_path / 'locust'}" in c.main
    assert c.worker_args[:2] == ["--worker", "--master-host=10.0.0.5"]
    for args in (c.main, c.worker_args):
        assert "--kv-run-id=r1" in args and "--kv-ray-address=10.0.0.5:6379" in args
        assert args[-2:] == ["HttpKVUser", "NativeKVUser"]


@pytest.mark.parametrize(
    "name,status,answer,outcome",
    [
        ("put", 200, {"ok": True}, RETURNED),
        ("get", 404, {"error": "not_found", "value": None}, RETURNED),
        ("put", 400, {"error": "bad_request"}, DISCARDED),
        ("put", 403, {"error": "forbidden"}, DISCARDED),
        ("put", 404, {"error": "unknown_op"}, DISCARDED),
        ("put", 405, {"error": "method_not_allowed"}, DISCARDED),
        ("append", 409, {"error": "rejected"}, DISCARDED),
        ("put", 413, {"error": "body_too_large"}, DISCARDED),
        ("put", 503, {"error": "unavailable"}, DISCARDED),
        ("put", 503, {"error": "overloaded"}, DISCARDED),
        ("put", 504, {"error": "outcome_unknown"}, UNKNOWN),
        ("put", 500, {"error": "internal"}, UNKNOWN),
        ("put", 503, None, UNKNOWN),  # not the gateway's 503 (a proxy's?): may have been sent
        ("put", 404, {"error": "not_found"}, UNKNOWN),  # not an answer to a put
        ("put", 200, None, UNKNOWN),  # an answer the gateway does not give
        ("put", None, None, UNKNOWN),  # no answer at all
    ],
)
def test_what_an_http_answer_means_for_the_history(name, status, answer, outcome):
    assert http_outcome(name, status, answer) == outcome
    log = HistoryLog()
    e = log.begin("c", (name, "k", "v") if name != "get" else ("get", "k"))
    log.settle(e, outcome, None)
    kept = log.drain(final=True)
    assert len(kept) == (0 if outcome == DISCARDED else 1)  # 4xx and 503: left out
    if outcome == UNKNOWN:
        assert json.loads(kept[0])["return"] is None


@pytest.mark.parametrize(
    "answer,outcome",
    [
        ({"ok": True, "result": None}, RETURNED),
        ({"ok": False, "kind": "invalid"}, DISCARDED),
        ({"ok": False, "kind": "rejected"}, DISCARDED),
        ({"ok": False, "kind": "not_sent"}, DISCARDED),
        ({"ok": False, "kind": "unknown"}, UNKNOWN),
        ({"ok": False, "kind": "something new"}, UNKNOWN),
    ],
)
def test_what_a_sidecar_answer_means_for_the_history(answer, outcome):
    assert sidecar_outcome(answer) == outcome


def test_records_carry_both_clocks_and_the_machine(monkeypatch):
    log = HistoryLog()
    e = log.begin("c", ("put", "k", "v"))
    log.returned(e, None)
    (r,) = [json.loads(x) for x in log.drain()]
    assert r["return_mono"] >= r["call_mono"] and r["return"] >= r["call"]
    assert r["boot"] == log.boot


def _rec(client, call, ret, op, result, mono, boot="b1"):
    return {
        "client": client,
        "call": call,
        "return": ret,
        "op": op,
        "result": result,
        "call_mono": mono[0],
        "return_mono": mono[1],
        "boot": boot,
    }


def test_one_machine_is_checked_on_the_monotonic_clock(tmp_path):
    # The wall clock was stepped back 10 s between the put and the get (NTP): on wall
    # times the get seems to return before the put began. The monotonic times, one
    # clock for every process of the machine, show the real order.
    records = [
        _rec("a", 100.0, 100.5, ["put", "k", "1"], None, (5.0, 5.5)),
        _rec("b", 90.6, 90.7, ["get", "k"], "1", (5.6, 5.7)),
    ]
    h = _write(tmp_path / "h.jsonl", records)
    res = check_histories([h])
    assert (res["verdict"], res["clock"]) == ("linearizable", "monotonic")
    assert check_histories([h], clock="wall")["verdict"] == "not_linearizable"
    # Two machines (two boot ids): their monotonic clocks are unrelated; wall times.
    records[1]["boot"] = "b2"
    h2 = _write(tmp_path / "h2.jsonl", records)
    assert check_histories([h2])["clock"] == "wall"
    with pytest.raises(ValueError, match="one boot of one machine"):
        check_histories([h2], clock="monotonic")


def test_the_cpu_meter_counts_sampled_and_child_locust_processes(monkeypatch):
    from pmmc_ray.ops.loadtest import _CpuMeter

    cpu = {1: 0.0, 2: 0.0, 3: 0.0}  # 1: a Ray-placed worker, 2: its sidecar, 3: our sidecar
    children = [0.0]
    monkeypatch.setattr(_CpuMeter, "_cpu", staticmethod(lambda pid: cpu[pid]))
    monkeypatch.setattr(_CpuMeter, "_children", staticmethod(lambda: children[0]))
    m = _CpuMeter()
    m.start()
    m.add("locust", 1)
    m.add("sidecars", 2)
    m.add("sidecars", 3, in_children=True)
    cpu.update({1: 4.0, 2: 2.0, 3: 1.0})
    children[0] = 6.0  # our Locust processes: 5 s, plus 1 s of their reaped sidecar
    used = m.stop()["cpu_s"]
    assert used["locust"] == 9.0  # 4 sampled + (6 - 1) from RUSAGE_CHILDREN
    assert used["sidecars"] == 3.0


def test_stop_locust_kills_every_process_left():
    import subprocess

    from pmmc_ray.ops.loadtest import _stop_locust

    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)
    ]
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    _stop_locust([*procs, done], [])
    assert all(p.poll() is not None for p in procs)
