"""The HTTP layer of the gateway with a fake backend (no Ray): every malformed request
gets a clear 4xx with a JSON error and never reaches the backend; every backend
outcome maps to its status code."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pmmc_ray.app import KVStore
from pmmc_ray.app.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES
from pmmc_ray.gateway.http import (
    DEFAULT_MAX_BODY_BYTES,
    ESCAPED_MAX_BODY_BYTES,
    AccessPolicy,
    OutcomeUnknown,
    Overloaded,
    Rejected,
    Unavailable,
    make_app,
)
from pmmc_ray.gateway.schema import KV_FIELDS, body_of, result_of


class FakeBackend:
    """Validates like the real one; records what reaches it; answers from a dict."""

    def __init__(self) -> None:
        self.app = KVStore()
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.healthy = True

    def validate(self, op: Any) -> None:
        self.app.validate(op)

    async def execute(self, op: Any) -> Any:
        self.calls.append(op)
        if self.fail is not None:
            raise self.fail
        return self.app.apply(op)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        return self.healthy, {"replicas_answering": ["replica-0"] if self.healthy else []}

    async def status(self) -> dict[str, Any]:
        return {"fake": True}


def call(
    backend: FakeBackend, method: str, path: str, app_kw: dict | None = None, **kw: Any
) -> tuple[int, Any, dict]:
    """One request against a fresh server (``make_app(backend, **app_kw)``); (status,
    JSON body or None, headers)."""

    async def go() -> tuple[int, Any, dict]:
        async with TestClient(TestServer(make_app(backend, **(app_kw or {})))) as client:
            resp = await client.request(method, path, **kw)
            text = await resp.text()
            return resp.status, json.loads(text) if text else None, dict(resp.headers)

    return asyncio.run(go())


def post(backend: FakeBackend, path: str, body: Any, **kw: Any) -> tuple[int, Any, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(backend, "POST", path, data=data, **kw)


def test_every_operation_and_its_answer():
    b = FakeBackend()
    assert post(b, "/v1/get", {"key": "a"})[:2] == (
        404,
        {"error": "not_found", "message": "the key is absent", "value": None},
    )
    assert post(b, "/v1/put", {"key": "a", "value": "1"})[:2] == (200, {"ok": True})
    assert post(b, "/v1/get", {"key": "a"})[:2] == (200, {"value": "1"})
    assert post(b, "/v1/append", {"key": "a", "value": "2"})[:2] == (200, {"ok": True})
    assert post(b, "/v1/cas", {"key": "a", "expected": "x", "new": "3"})[:2] == (
        200,
        {"swapped": False},
    )
    assert post(b, "/v1/cas", {"key": "a", "expected": "12", "new": "3"})[:2] == (
        200,
        {"swapped": True},
    )
    assert post(b, "/v1/cas", {"key": "n", "expected": None, "new": "v"})[:2] == (
        200,
        {"swapped": True},
    )
    assert post(b, "/v1/delete", {"key": "a"})[:2] == (200, {"ok": True})
    assert post(b, "/v1/execute", {"op": ["get", "n"]})[:2] == (200, {"result": "v"})
    assert b.calls == [
        ("get", "a"),
        ("put", "a", "1"),
        ("get", "a"),
        ("append", "a", "2"),
        ("cas", "a", "x", "3"),
        ("cas", "a", "12", "3"),
        ("cas", "n", None, "v"),
        ("delete", "a"),
        ("get", "n"),
    ]


KEY = "k" * (MAX_KEY_BYTES + 1)
VALUE = "v" * (MAX_VALUE_BYTES + 1)
NESTED = b"[" * 100_000 + b"]" * 100_000

MALFORMED = [
    # (path, body, status, error code, words the message must contain)
    ("/v1/put", b'{"key": "a", "value": ', 400, "bad_request", "not valid JSON"),
    ("/v1/put", b"\xff\xfe{}", 400, "bad_request", "not UTF-8"),
    ("/v1/put", b"", 400, "bad_request", "empty"),
    ("/v1/put", b"   ", 400, "bad_request", "empty"),
    ("/v1/put", [["key", "a"]], 400, "bad_request", "JSON object"),
    ("/v1/put", "a string", 400, "bad_request", "JSON object"),
    ("/v1/put", {"key": "a", "value": 1}, 400, "bad_request", "value must be a string"),
    ("/v1/put", {"key": 1, "value": "v"}, 400, "bad_request", "key must be a string"),
    ("/v1/put", {"key": None, "value": "v"}, 400, "bad_request", "key must be a string"),
    ("/v1/put", {"key": ["a"], "value": "v"}, 400, "bad_request", "not an array"),
    ("/v1/put", {"key": "a", "value": True}, 400, "bad_request", "not a boolean"),
    ("/v1/put", {"key": "a"}, 400, "bad_request", "missing field"),
    ("/v1/put", {"key": "a", "value": "v", "ttl": 5}, 400, "bad_request", "unknown field"),
    ("/v1/get", {"key": "a", "value": "v"}, 400, "bad_request", "unknown field"),
    ("/v1/cas", {"key": "a", "expected": "x", "new": None}, 400, "bad_request", "new must be"),
    ("/v1/cas", {"key": "a", "new": "v"}, 400, "bad_request", "missing field"),
    ("/v1/put", {"key": KEY, "value": "v"}, 400, "bad_request", "key is 1025 bytes"),
    ("/v1/put", {"key": "a", "value": VALUE}, 400, "bad_request", "value is 1048577 bytes"),
    ("/v1/append", {"key": "a", "value": VALUE}, 400, "bad_request", "the limit is"),
    ("/v1/cas", {"key": "a", "expected": VALUE, "new": "v"}, 400, "bad_request", "limit"),
    ("/v1/put", b'{"key": "a\\ud800", "value": "v"}', 400, "bad_request", "lone surrogate"),
    ("/v1/cas", b'{"key": "a", "expected": null, "new": "\\udfff"}', 400, "bad_request", "lone"),
    ("/v1/put", NESTED, 400, "bad_request", "not valid JSON"),
    ("/v1/put", b'{"key": "a", "value": ' + b"9" * 5000 + b"}", 400, "bad_request", "JSON"),
    ("/v1/frobnicate", {"key": "a"}, 404, "unknown_op", "unknown operation 'frobnicate'"),
    ("/v1/execute", {"op": ["frobnicate", "a"]}, 400, "bad_request", "unknown operation"),
    ("/v1/execute", {"op": ["put", "a"]}, 400, "bad_request", "put takes 2 arguments"),
    ("/v1/execute", {"op": "put"}, 400, "bad_request", "non-empty array"),
    ("/v1/execute", {"op": []}, 400, "bad_request", "non-empty array"),
    ("/v1/execute", {"op": ["get", "a"], "x": 1}, 400, "bad_request", "nothing else"),
    ("/v2/put", {"key": "a", "value": "v"}, 404, "unknown_op", "no such endpoint"),
    ("/v1/put/extra", {"key": "a", "value": "v"}, 404, "unknown_op", "no such endpoint"),
]


@pytest.mark.parametrize(
    "path,body,status,code,words", MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_request_gets_a_clear_4xx_and_reaches_nothing(path, body, status, code, words):
    b = FakeBackend()
    got, data, _ = post(b, path, body)
    assert (got, data["error"]) == (status, code), data
    assert words in data["message"], data["message"]
    assert b.calls == []  # nothing was sent to the cluster


def test_a_huge_body_is_refused_without_reading_it():
    b = FakeBackend()
    huge = b'{"key": "a", "value": "' + b"v" * DEFAULT_MAX_BODY_BYTES + b'"}'
    status, data, _ = post(b, "/v1/put", huge)
    assert (status, data["error"]) == (413, "body_too_large")
    assert str(DEFAULT_MAX_BODY_BYTES) in data["message"]
    assert b.calls == []


def test_a_huge_chunked_body_is_refused_too():
    b = FakeBackend()

    async def chunks():
        for _ in range(DEFAULT_MAX_BODY_BYTES // 65536 + 2):
            yield b"v" * 65536

    status, data, _ = call(b, "POST", "/v1/put", data=chunks())
    assert (status, data["error"]) == (413, "body_too_large")
    assert b.calls == []


def test_the_largest_legal_cas_fits_under_the_body_cap():
    b = FakeBackend()
    big = "v" * MAX_VALUE_BYTES
    b.app.data["k"] = big
    status, data, _ = post(b, "/v1/cas", {"key": "k" * MAX_KEY_BYTES, "expected": big, "new": big})
    assert status == 200


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("GET", "/v1/put", "POST"),
        ("GET", "/v1/execute", "POST"),
        ("POST", "/v1/health", "GET,HEAD"),
        ("POST", "/v1/status", "GET,HEAD"),
        ("DELETE", "/v1/health", "GET,HEAD"),
        ("PUT", "/v1/status", "GET,HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(method, path, allow):
    b = FakeBackend()
    status, data, headers = call(b, method, path, data=b'{"key": "a"}')
    assert (status, data["error"]) == (405, "method_not_allowed"), data
    assert headers["Allow"] == allow
    assert b.calls == []


def test_a_legal_put_needs_the_escaped_cap_when_every_character_is_escaped():
    # 1 MiB of control characters is a legal value; JSON writes each as \u0001 (6 bytes).
    value = "\x01" * MAX_VALUE_BYTES
    body = json.dumps({"key": "k", "value": value}).encode()
    assert DEFAULT_MAX_BODY_BYTES < len(body) < ESCAPED_MAX_BODY_BYTES
    b = FakeBackend()
    assert post(b, "/v1/put", body)[0] == 413
    status, _, _ = post(b, "/v1/put", body, app_kw={"max_body_bytes": ESCAPED_MAX_BODY_BYTES})
    assert status == 200 and b.app.data["k"] == value


def test_the_escaped_cap_holds_the_worst_legal_cas():
    worst = "\x01" * MAX_VALUE_BYTES
    body = json.dumps({"key": "\x01" * MAX_KEY_BYTES, "expected": worst, "new": worst})
    assert len(body) <= ESCAPED_MAX_BODY_BYTES


@pytest.mark.parametrize(
    "exc,status,code",
    [
        (Rejected("append would make the value exceed"), 409, "rejected"),
        (Unavailable("no replica answered"), 503, "unavailable"),
        (Overloaded("all clients busy"), 503, "overloaded"),
        (OutcomeUnknown("may or may not have been applied"), 504, "outcome_unknown"),
    ],
)
def test_backend_outcomes_map_to_status_codes(exc, status, code):
    b = FakeBackend()
    b.fail = exc
    got, data, headers = post(b, "/v1/put", {"key": "a", "value": "v"})
    assert (got, data["error"]) == (status, code)
    assert str(exc) in data["message"]
    if status == 503:
        assert headers["Retry-After"] == "1"
        assert "nothing was sent" in data["message"]


def test_an_unexpected_error_is_a_json_500():
    b = FakeBackend()
    b.fail = RuntimeError("boom")
    status, data, _ = post(b, "/v1/put", {"key": "a", "value": "v"})
    assert (status, data["error"]) == (500, "internal")
    assert "outcome is unknown" in data["message"]


def test_health_and_status():
    b = FakeBackend()
    status, data, _ = call(b, "GET", "/v1/health")
    assert (status, data["status"]) == (200, "ok")
    b.healthy = False
    status, data, headers = call(b, "GET", "/v1/health")
    assert (status, data["status"], headers["Retry-After"]) == (503, "unavailable", "1")
    status, data, _ = call(b, "GET", "/v1/status")
    assert status == 200 and data["fake"] is True and data["in_flight"] == 0


# --- requests of web pages (CSRF, DNS rebinding) --------------------------------------

PUT = json.dumps({"key": "a", "value": "1"}).encode()


@pytest.mark.parametrize(
    "headers,words",
    [
        # The reviewer's request: a page on evil.example rebound to 127.0.0.1.
        (
            {
                "Content-Type": "text/plain",
                "Origin": "http://evil.example",
                "Host": "evil.example:8080",
            },
            "Origin 'http://evil.example'",
        ),
        ({"Origin": "http://evil.example"}, "requests from web pages are refused"),
        ({"Origin": "null"}, "requests from web pages are refused"),
        ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site 'cross-site'"),
        ({"Sec-Fetch-Site": "same-origin"}, "requests from web pages are refused"),
        ({"Host": "evil.example:8080"}, "DNS rebinding"),
        ({"Host": "evil.example"}, "DNS rebinding"),
        ({"Host": "127.0.0.1.evil.example"}, "DNS rebinding"),
        ({"Host": "localhost:80x"}, "DNS rebinding"),
        ({"Host": "[::1"}, "DNS rebinding"),
    ],
)
def test_a_request_from_a_web_page_is_forbidden_and_reaches_nothing(headers, words):
    b = FakeBackend()
    for method, path in (("POST", "/v1/put"), ("GET", "/v1/status"), ("GET", "/v1/health")):
        status, data, _ = call(
            b, method, path, data=PUT if method == "POST" else None, headers=headers
        )
        assert (status, data["error"]) == (403, "forbidden"), data
        assert words in data["message"]
    assert b.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # what curl, Locust and the Python clients send (Host: 127.0.0.1:port)
        {"Host": "localhost"},
        {"Host": "LOCALHOST:8080"},
        {"Host": "localhost.:8080"},
        {"Host": "127.0.0.1"},
        {"Host": "[::1]:8080"},
        {"Sec-Fetch-Site": "none"},  # the user typed the address into the browser
    ],
)
def test_programs_on_this_host_are_served(headers):
    b = FakeBackend()
    status, data, _ = call(b, "POST", "/v1/put", data=PUT, headers=headers)
    assert (status, data) == (200, {"ok": True})


def test_the_bind_address_and_allowed_hosts_are_served():
    policy = AccessPolicy(bind_host="10.1.2.3", allowed_hosts=("gw.internal", "[fd00::5]"))
    for host in ("10.1.2.3:8080", "gw.internal", "GW.internal:9", "[fd00::5]:80"):
        b = FakeBackend()
        status, _, _ = call(
            b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers={"Host": host}
        )
        assert status == 200, host
    status, _, _ = call(
        b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers={"Host": "10.1.2.4"}
    )
    assert status == 403
    wildcard = AccessPolicy(bind_host="0.0.0.0", allowed_hosts=("*",))
    status, _, _ = call(
        b, "POST", "/v1/put", {"policy": wildcard}, data=PUT, headers={"Host": "any.example"}
    )
    assert status == 200


def test_an_allowed_origin_is_served_with_cors_headers():
    policy = AccessPolicy(allowed_origins=("https://app.example",))
    b = FakeBackend()
    ok = {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
    status, data, headers = call(b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers=ok)
    assert (status, data) == (200, {"ok": True})
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    pre = {
        **ok,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, _, headers = call(b, "OPTIONS", "/v1/put", {"policy": policy}, headers=pre)
    assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = {"Origin": "https://other.example"}
    status, _, headers = call(b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers=other)
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    assert b.calls == [("put", "a", "1")]


def test_schema_round_trip():
    for name, fields in KV_FIELDS.items():
        op = (name, *(f"{f}-value" for f in fields))
        assert tuple(body_of(op).values()) == op[1:]
    assert result_of(("get", "k"), {"value": "v"}) == "v"
    assert result_of(("cas", "k", None, "v"), {"swapped": True}) is True
    assert result_of(("put", "k", "v"), {"ok": True}) is None


def test_a_gateway_beyond_loopback_requires_the_bearer_token():
    """Anything the project listens on beyond loopback is authenticated."""
    policy = AccessPolicy(bind_host="10.1.2.3", token="s3cret-token")
    for auth in (None, "Bearer wrong", "Basic s3cret-token", "Bearer"):
        b = FakeBackend()
        headers = {"Host": "10.1.2.3"} | ({"Authorization": auth} if auth else {})
        status, data, got = call(
            b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers=headers
        )
        assert (status, data["error"]) == (401, "unauthorized"), auth
        assert "pmmc-ray gateway token" in data["message"]
        assert got["WWW-Authenticate"].startswith("Bearer")
        assert b.calls == []
    b = FakeBackend()
    headers = {"Host": "10.1.2.3", "Authorization": "Bearer s3cret-token"}
    status, data, _ = call(b, "POST", "/v1/put", {"policy": policy}, data=PUT, headers=headers)
    assert (status, data) == (200, {"ok": True})


def test_which_bind_addresses_need_the_token():
    from pmmc_ray.gateway.server import GatewaySettings

    for host, needs in (
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("node", True),
        ("10.0.0.5", True),
    ):
        assert GatewaySettings(host=host).needs_token() is needs, host
    assert GatewaySettings(require_token=True).needs_token()
