"""The HTTP gateway on a real deployment: every operation, malformed input changing
nothing in the replicated state, requests of web pages refused, many requests in
flight, 504 for an unknown outcome and for an evicted session, 503 when no replica
answers, gateways that cannot start left behind by nothing, and the ``pmmc-ray
gateway`` commands."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pmmc_ray.app.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES

pytestmark = pytest.mark.ray


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
):
    """(status, JSON answer, headers) of one HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


@pytest.fixture(scope="module")
def dep(make_deployment):
    return make_deployment("gateway")


@pytest.fixture(scope="module")
def url(dep):
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways

    infos = start_gateways(dep.namespace, GatewaySettings(port=0, op_timeout_s=3.0))
    assert len(infos) == 1 and infos[0]["error"] is None
    assert infos[0]["url"].startswith("http://127.0.0.1:")
    yield infos[0]["url"]
    assert stop_gateways(dep.namespace) == 1


def test_every_operation_over_http(url):
    assert request(f"{url}/v1/get", "POST", {"key": "k"})[:2] == (
        404,
        {"error": "not_found", "message": "the key is absent", "value": None},
    )
    assert request(f"{url}/v1/put", "POST", {"key": "k", "value": "v1"})[:2] == (200, {"ok": True})
    assert request(f"{url}/v1/append", "POST", {"key": "k", "value": "+2"})[:2] == (
        200,
        {"ok": True},
    )
    assert request(f"{url}/v1/get", "POST", {"key": "k"})[:2] == (200, {"value": "v1+2"})
    cas = {"key": "k", "expected": "nope", "new": "x"}
    assert request(f"{url}/v1/cas", "POST", cas)[:2] == (200, {"swapped": False})
    cas = {"key": "k", "expected": "v1+2", "new": "v3"}
    assert request(f"{url}/v1/cas", "POST", cas)[:2] == (200, {"swapped": True})
    assert request(f"{url}/v1/delete", "POST", {"key": "k"})[:2] == (200, {"ok": True})
    cas = {"key": "k", "expected": None, "new": "fresh"}
    assert request(f"{url}/v1/cas", "POST", cas)[:2] == (200, {"swapped": True})
    assert request(f"{url}/v1/execute", "POST", {"op": ["get", "k"]})[:2] == (
        200,
        {"result": "fresh"},
    )
    status, health, _ = request(f"{url}/v1/health")
    assert status == 200 and health["replicas_answering"] == ["replica-0", "replica-1"]
    status, st, _ = request(f"{url}/v1/status")
    assert status == 200 and st["responses"]["put 200"] == 1 and st["outcomes"]["ok"] >= 9


def _replica_state(dep) -> dict[str, tuple]:
    """slot_out and state hash of every replica, once they agree."""
    deadline = time.monotonic() + 20
    while True:
        st = dep._gather("state_hash", 10.0, names=list(dep.config.replica_ids()))
        got = {r: (st[r]["slot_out"], st[r]["state_sha256"]) for r in dep.config.replica_ids()}
        if len(set(got.values())) == 1:
            return got
        assert time.monotonic() < deadline, f"replicas do not converge: {got}"
        time.sleep(0.1)


BIG = "v" * (MAX_VALUE_BYTES + 1)
MALFORMED = [
    ("/v1/put", b'{"key": "bad", "value": '),  # bad JSON
    ("/v1/put", b"\xff\xfe"),  # not UTF-8
    ("/v1/put", json.dumps({"key": "bad", "value": 7}).encode()),  # wrong type
    ("/v1/put", json.dumps({"key": 7, "value": "v"}).encode()),
    ("/v1/cas", json.dumps({"key": "bad", "expected": None, "new": None}).encode()),
    ("/v1/put", json.dumps({"key": "bad"}).encode()),  # missing field
    ("/v1/put", json.dumps({"key": "bad", "value": "v", "x": 1}).encode()),  # unknown field
    ("/v1/put", json.dumps({"key": "k" * (MAX_KEY_BYTES + 1), "value": "v"}).encode()),
    ("/v1/put", json.dumps({"key": "bad", "value": BIG}).encode()),  # oversize value
    ("/v1/frobnicate", json.dumps({"key": "bad"}).encode()),  # unknown op
    ("/v1/execute", json.dumps({"op": ["frobnicate", "bad"]}).encode()),
    ("/v1/put", b'{"key": "bad", "value": "' + b"v" * (3 * MAX_VALUE_BYTES) + b'"}'),  # huge
]


def test_malformed_requests_get_4xx_and_change_nothing(dep, url):
    request(f"{url}/v1/put", "POST", {"key": "bad", "value": "untouched"})
    before = _replica_state(dep)
    answers = [request(f"{url}{path}", "POST", raw=raw) for path, raw in MALFORMED]
    for (path, _), (status, body, _) in zip(MALFORMED, answers, strict=True):
        assert 400 <= status < 500, (path, status, body)
        assert body["error"] in ("bad_request", "unknown_op", "body_too_large"), body
        assert body["message"]
    assert [a[0] for a in answers[-3:]] == [404, 400, 413]
    # Nothing reached the log: same slot and the same state on every replica.
    assert _replica_state(dep) == before
    assert request(f"{url}/v1/get", "POST", {"key": "bad"})[:2] == (200, {"value": "untouched"})


def test_a_request_a_web_page_could_send_is_forbidden_and_changes_nothing(url):
    # A page on evil.example whose name was rebound to 127.0.0.1 (the reviewer's request).
    status, body, _ = request(
        f"{url}/v1/put",
        "POST",
        raw=b'{"key": "csrf", "value": "pwned"}',
        headers={
            "Content-Type": "text/plain",
            "Origin": "http://evil.example",
            "Host": "evil.example:8080",
        },
    )
    assert (status, body["error"]) == (403, "forbidden"), body
    status, body, _ = request(f"{url}/v1/status", headers={"Host": "evil.example:8080"})
    assert (status, body["error"]) == (403, "forbidden")
    assert request(f"{url}/v1/get", "POST", {"key": "csrf"})[:2] == (
        404,
        {"error": "not_found", "message": "the key is absent", "value": None},
    )
    assert request(f"{url}/v1/health", "POST", {})[0] == 405


def test_many_requests_in_flight_use_distinct_clients(url):
    n = 32

    def put(i: int):
        return request(f"{url}/v1/put", "POST", {"key": "conc", "value": f"v{i}"})[0]

    with ThreadPoolExecutor(n) as pool:
        assert list(pool.map(put, range(n))) == [200] * n
    status, body, _ = request(f"{url}/v1/get", "POST", {"key": "conc"})
    assert status == 200 and body["value"] in {f"v{i}" for i in range(n)}
    pool_st = request(f"{url}/v1/status")[1]["pool"]
    assert 1 < pool_st["created"] <= 32  # concurrent requests got their own clients


def test_no_confirmation_before_the_deadline_is_504_outcome_unknown(dep, url):
    cut = [[r, ldr] for r in dep.config.replica_ids() for ldr in dep.config.leader_ids()]
    dep.set_faults(blocked=cut)  # proposals never reach a leader
    try:
        status, body, _ = request(f"{url}/v1/put", "POST", {"key": "u", "value": "maybe"})
    finally:
        dep.set_faults()
    assert (status, body["error"]) == (504, "outcome_unknown")
    assert "may or may not have been applied" in body["message"]
    # The replicas re-propose once the cut heals: the put may take effect later, and
    # the store keeps serving.
    assert request(f"{url}/v1/put", "POST", {"key": "u", "value": "after"})[0] == 200


@pytest.fixture(scope="module")
def small(make_deployment):
    """A deployment whose client table holds one session; these tests start and stop
    its gateways themselves."""
    return make_deployment("gateway-sessions", max_sessions=1)


def test_an_evicted_session_is_504_then_the_same_pooled_client_goes_on(small):
    """max_sessions=1: a direct client's session evicts the gateway client's. The next
    request through the gateway is refused by the replicas (session expired): 504,
    outcome unknown. The pool keeps that client, which has a new session: 200."""
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways

    (info,) = start_gateways(small.namespace, GatewaySettings(port=0, op_timeout_s=5.0))
    u = info["url"]
    try:
        assert request(f"{u}/v1/put", "POST", {"key": "k", "value": "gw"})[0] == 200
        small.client(timeout_s=30).put("k", "direct")  # evicts the gateway client's session
        status, body, _ = request(f"{u}/v1/put", "POST", {"key": "k", "value": "gw2"})
        assert (status, body["error"]) == (504, "outcome_unknown"), body
        assert "evicted the session" in body["message"] and "retry()" not in body["message"]
        assert request(f"{u}/v1/put", "POST", {"key": "k", "value": "gw3"})[:2] == (
            200,
            {"ok": True},
        )
        assert request(f"{u}/v1/get", "POST", {"key": "k"})[:2] == (200, {"value": "gw3"})
        st = request(f"{u}/v1/status")[1]
        assert st["pool"]["created"] == 1  # one pooled client throughout: no churn
        assert st["outcomes"]["session_expired"] == 1
    finally:
        stop_gateways(small.namespace)


def _gone(namespace: str, timeout_s: float = 30.0) -> bool:
    from pmmc_ray.gateway.server import list_gateways

    deadline = time.monotonic() + timeout_s
    while list_gateways(namespace):  # ray.kill is asynchronous
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_failed_start_leaves_no_gateway_behind(small, ray_session):
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways

    dep = small
    assert _gone(dep.namespace)
    with pytest.raises(ray_session.exceptions.GetTimeoutError):
        start_gateways(dep.namespace, GatewaySettings(port=0), timeout_s=0.001)
    assert _gone(dep.namespace)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start"):
            start_gateways(dep.namespace, GatewaySettings(port=port))
    assert _gone(dep.namespace)


def test_a_broken_gateway_is_replaced(small, ray_session):
    """A gateway that reports an error (here: its port was taken when it started) no
    longer blocks ``gateway start``: it is replaced."""
    from dataclasses import asdict

    from pmmc_ray.gateway.server import (
        GatewaySettings,
        _actor_name,
        _GatewayActor,
        gateway_namespace,
        list_gateways,
        start_gateways,
        stop_gateways,
    )

    dep = small
    assert _gone(dep.namespace)
    node = ray_session.get_runtime_context().get_node_id()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bad = GatewaySettings(port=taken.getsockname()[1])
        h = _GatewayActor.options(
            name=_actor_name(node), namespace=gateway_namespace(dep.namespace), lifetime="detached"
        ).remote(dep.namespace, asdict(bad))
        assert "Error" in ray_session.get(h.info.remote(), timeout=120)["error"]
    try:
        (info,) = start_gateways(dep.namespace, GatewaySettings(port=0))
        assert info["error"] is None and info["settings"]["port"] == 0
        assert request(f"{info['url']}/v1/health")[0] == 200
        assert [g["url"] for g in list_gateways(dep.namespace)] == [info["url"]]
    finally:
        stop_gateways(dep.namespace)


def test_the_gateway_commands(dep, url, capsys):
    from pmmc_ray.cli import main
    from pmmc_ray.gateway.server import list_gateways

    common = ["--namespace", dep.namespace]
    # start keeps the gateway already running on this node
    assert main(["gateway", "start", *common, "--port", "0"]) == 0
    assert url in capsys.readouterr().out
    assert main(["gateway", "status", *common]) == 0
    out = capsys.readouterr().out
    assert url in out and "answers" in out
    assert [g["url"] for g in list_gateways(dep.namespace)] == [url]
    assert main(["gateway", "start", "--namespace", "no-such-deployment"]) == 2
    assert "no deployment named 'no-such-deployment'" in capsys.readouterr().err
    assert main(["gateway", "start", *common, "--port", "70000"]) == 2
    assert "port must be 0..65535" in capsys.readouterr().err


def test_up_with_gateway_then_down(data_dir, tmp_path, capsys):
    from pmmc_ray.cli import main
    from pmmc_ray.gateway.server import list_gateways

    ns = f"t-gwcli-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "dep.json"
    cfg.write_text(json.dumps({"data_dir": data_dir, "timeout_initial": 300}))
    up = ["up", "--namespace", ns, "--config", str(cfg), "--gateway", "--gateway-port", "0"]
    assert main(up) == 0
    try:
        out = capsys.readouterr().out
        (u,) = re.findall(r"http://127\.0\.0\.1:\d+", out)
        assert request(f"{u}/v1/put", "POST", {"key": "a", "value": "1"})[:2] == (200, {"ok": True})
        assert request(f"{u}/v1/get", "POST", {"key": "a"})[:2] == (200, {"value": "1"})
    finally:
        assert main(["down", "--namespace", ns]) == 0
    assert "and 1 gateway(s)" in capsys.readouterr().out
    assert list_gateways(ns) == []


def test_503_with_retry_after_when_no_replica_answers(make_deployment):
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways

    dead = make_deployment("gateway-down")
    (info,) = start_gateways(dead.namespace, GatewaySettings(port=0, op_timeout_s=3.0))
    u = info["url"]
    try:
        assert request(f"{u}/v1/put", "POST", {"key": "a", "value": "1"})[0] == 200
        for r in dead.config.replica_ids():
            dead.kill(r, restart=False)
        deadline = time.monotonic() + 15
        while (health := request(f"{u}/v1/health"))[0] != 503:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health[2]["Retry-After"] == "1"
        assert health[1]["replicas_answering"] == []
        status, body, headers = request(f"{u}/v1/put", "POST", {"key": "a", "value": "2"})
        assert (status, body["error"], headers["Retry-After"]) == (503, "unavailable", "1")
        assert "nothing was sent" in body["message"]
    finally:
        stop_gateways(dead.namespace)


def test_a_gateway_that_needs_the_token_refuses_without_it(make_deployment, capsys):
    """A gateway told to require the deployment's bearer token (as one listening beyond
    loopback always does) answers 401 without it; `pmmc-ray gateway token` prints it."""
    from pmmc_ray.cli import main
    from pmmc_ray.gateway.server import GatewaySettings, start_gateways, stop_gateways

    dep = make_deployment("gw-token")
    (info,) = start_gateways(dep.namespace, GatewaySettings(port=0, require_token=True))
    try:
        url = info["url"]
        status, data, _ = request(f"{url}/v1/put", "POST", {"key": "t", "value": "1"})
        assert (status, data["error"]) == (401, "unauthorized")
        assert main(["gateway", "token", "--namespace", dep.namespace]) == 0
        # The token is the command's last line (this test process's Ray may print
        # raylet warnings to the same captured stdout meanwhile).
        token = capsys.readouterr().out.strip().splitlines()[-1]
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", token), token
        auth = {"Authorization": f"Bearer {token}"}
        assert request(f"{url}/v1/put", "POST", {"key": "t", "value": "1"}, headers=auth)[0] == 200
        assert request(f"{url}/v1/get", "POST", {"key": "t"}, headers=auth)[:2] == (
            200,
            {"value": "1"},
        )
    finally:
        stop_gateways(dep.namespace)
