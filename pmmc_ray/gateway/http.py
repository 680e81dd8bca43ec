"""The HTTP API of the replicated store: routing, input checks and status codes.

Theory of operation. Every request is one of:

- ``POST /v1/get|put|delete|append|cas`` with a JSON object body naming the fields of
  that KV operation (``key``, ``value``, ``expected``, ``new``), nothing else;
- ``POST /v1/execute`` with ``{"op": [...]}``, any operation of the deployment's
  application (for applications other than the KV store);
- ``GET /v1/health`` and ``GET /v1/status``.

Before anything else, a request must not come from a web page (see
:class:`AccessPolicy`): any other is answered 403 and not even read.

A request is checked completely before anything is sent to the cluster: the body size
(capped while it is read, so a huge body costs nothing), strict UTF-8, JSON, an object
with exactly the expected fields of the expected types, then the application's own
``validate`` (key 1 KiB, value 1 MiB for the KV store). Anything wrong is a 4xx with a
JSON error and nothing reaches the log. Only a well-formed operation goes to the
:class:`Backend`, whose answers map to status codes like this:

====================================  ======  =========================================
outcome                               status  body
====================================  ======  =========================================
done                                  200     ``{"value": v}`` (get), ``{"ok": true}``,
                                              ``{"swapped": b}`` (cas), ``{"result": r}``
get of an absent key                  404     ``{"error": "not_found", "value": null}``
malformed input                       400     ``{"error": "bad_request", "message": m}``
from a web page, or a foreign Host    403     ``{"error": "forbidden", ...}``
unknown path (an unknown op)          404     ``{"error": "unknown_op", ...}``
wrong method                          405     ``{"error": "method_not_allowed", ...}``
body over the cap                     413     ``{"error": "body_too_large", ...}``
the state machine refused it          409     ``{"error": "rejected", ...}`` (changed nothing)
no replica answers / gateway full     503     ``{"error": "unavailable"|"overloaded"}``,
                                              ``Retry-After``; nothing was sent
no confirmation before the deadline   504     ``{"error": "outcome_unknown", ...}``: it
                                              may or may not have been applied
a bug in the gateway                  500     ``{"error": "internal", ...}``: unknown too
====================================  ======  =========================================

This module does no Ray calls itself: the backend (:class:`pmmc_ray.gateway.pool.ClientPool`
in production, a fake in unit tests) does.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from ..app import InvalidOperation
from .schema import DEFAULT_MAX_BODY_BYTES, ESCAPED_MAX_BODY_BYTES, KV_FIELDS, NULLABLE

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY_BYTES",
    "ESCAPED_MAX_BODY_BYTES",
    "KV_FIELDS",
    "AccessPolicy",
    "Backend",
    "BadRequest",
    "OutcomeUnknown",
    "Overloaded",
    "Rejected",
    "Unavailable",
    "make_app",
    "parse_execute",
    "parse_kv",
]

log = logging.getLogger("pmmc_ray.gateway")

API_PREFIX = "/v1"


#: Host names a gateway always answers to, with any port (IPv6 without brackets).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class BadRequest(ValueError):
    """The request is malformed (the client's fault); nothing was sent."""


class Rejected(Exception):
    """The replicated state machine refused the operation; it changed nothing."""


class Unavailable(Exception):
    """Nothing was sent: no replica answers, or the gateway's client could not open its
    session. Safe to retry after ``retry_after_s``."""

    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(Unavailable):
    """Nothing was sent: every client of the gateway's pool stayed busy too long."""

    code = "overloaded"


class OutcomeUnknown(Exception):
    """Sent, but not confirmed (the deadline passed, or the replicas had evicted the
    session of the gateway's client): it may or may not have been applied."""


class Backend(Protocol):
    """What the HTTP layer needs from the cluster side."""

    def validate(self, op: Any) -> None:
        """Raise :class:`~pmmc_ray.app.InvalidOperation` if ``op`` is malformed."""

    async def execute(self, op: Any) -> Any:
        """Perform ``op``; raise Rejected, Unavailable or OutcomeUnknown otherwise."""

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """(serving, details): False when no replica answers."""

    async def status(self) -> dict[str, Any]:
        """A JSON-able description of the backend (pool, replicas, counters)."""


# --- who may ask ------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessPolicy:
    """Which requests the gateway serves at all, checked before a body is read.

    Binding to 127.0.0.1 does not keep web pages out: a browser lets any page send a
    request to any address, so a page can POST to ``http://127.0.0.1:8080`` (CSRF), or
    point a name it controls at 127.0.0.1 and then also read the answers (DNS
    rebinding). Two checks stop both and cost programs nothing (curl, Locust and the
    Python clients send neither header, and name the address they connect to):

    - a request carrying ``Origin``, or ``Sec-Fetch-Site`` other than ``none`` (which a
      browser sends when the user typed the address), comes from a web page: refused,
      unless its origin is in ``allowed_origins`` (``"*"``: every origin), which then
      also gets CORS headers so the page can read the answer;
    - the ``Host`` header must name a loopback host (localhost, 127.0.0.1, [::1]), the
      ``bind_host`` or one of ``allowed_hosts`` (``"*"``: any), with any port: a
      rebinding page's requests name the page's own host.

    And when ``token`` is set (the gateway listens beyond loopback, or was told to
    require it), every request must carry ``Authorization: Bearer <token>``: anyone who
    can reach the port could otherwise read and change the store.
    """

    bind_host: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    token: str | None = None

    def unauthenticated(self, headers: Mapping[str, str]) -> str | None:
        """Why a request lacks the credentials this gateway requires, or None."""
        if self.token is None:
            return None
        got = headers.get("Authorization", "")
        scheme, _, presented = got.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.token.encode()
        ):
            return None
        return (
            "this gateway requires Authorization: Bearer <token> (it listens beyond "
            "loopback); get the token with: pmmc-ray gateway token"
        )

    def hosts(self) -> frozenset[str]:
        extra = [self.bind_host] if self.bind_host not in (None, "", "0.0.0.0", "::") else []
        return LOOPBACK_HOSTS | {_host_key(h) for h in (*extra, *self.allowed_hosts)}

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and (
            "*" in self.allowed_origins or origin in self.allowed_origins
        )

    def refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a request with these headers is refused, or None to serve it."""
        origin = headers.get("Origin")
        fetch_site = headers.get("Sec-Fetch-Site")
        from_page = origin is not None or (fetch_site is not None and fetch_site != "none")
        if from_page and not self.origin_allowed(origin):
            said = (
                f"Origin {origin[:100]!r}"
                if origin is not None
                else f"Sec-Fetch-Site {fetch_site[:20]!r}"
            )
            return (
                f"requests from web pages are refused ({said}); a browser application "
                "needs its origin allowed (pmmc-ray gateway start --allow-origin ORIGIN)"
            )
        host = headers.get("Host")
        if host is not None and "*" not in self.allowed_hosts:
            name = _host_name(host)
            if name is None or name not in self.hosts():
                return (
                    f"Host {host[:100]!r} is not a name of this gateway (a loopback name, its "
                    "bind address, or one allowed with --allow-host), so the request may "
                    "come from a web page by DNS rebinding"
                )
        return None


def _host_key(name: str) -> str:
    """A host name as compared: lowercase, no IPv6 brackets, no final dot."""
    return name.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _host_name(header: str) -> str | None:
    """The host of a ``Host`` header value without its port, or None if malformed."""
    v = header.strip()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[: end + 1], v[end + 1 :]
    else:
        name, colon, port = v.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return _host_key(name) if name else None


# --- parsing -------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise BadRequest(f"the body is not valid JSON: {str(e)[:120]}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(data)}")
    return data


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def parse_kv(name: str, body: bytes) -> tuple:
    """The KV operation tuple of a ``POST /v1/<name>`` body; raises :class:`BadRequest`.

    Exactly the fields of ``KV_FIELDS[name]``; each a string (``expected`` of cas may be
    null). Sizes are checked later by the application's ``validate``.
    """
    fields = KV_FIELDS[name]
    data = _json_object(body)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        raise BadRequest(f"unknown field(s) {shown} for {name}; expected {list(fields)}")
    missing = [f for f in fields if f not in data]
    if missing:
        raise BadRequest(f"missing field(s) {missing} for {name}; expected {list(fields)}")
    for f in fields:
        v = data[f]
        if v is None and (name, f) in NULLABLE:
            continue
        if not isinstance(v, str):
            kind = "a string or null" if (name, f) in NULLABLE else "a string"
            raise BadRequest(f"{f} must be {kind}, not {_json_type(v)}")
    return (name, *(data[f] for f in fields))


def parse_execute(body: bytes) -> tuple:
    """The operation of a ``POST /v1/execute`` body ``{"op": [name, args...]}``."""
    data = _json_object(body)
    if set(data) != {"op"}:
        raise BadRequest('the body must be {"op": [name, args...]} and nothing else')
    op = data["op"]
    if not isinstance(op, list) or not op:
        raise BadRequest(f"op must be a non-empty array, not {_json_type(op)}")
    return tuple(op)


# --- the application ---------------------------------------------------------------------------


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = extra.pop("headers", None)
    return web.json_response(
        {"error": code, "message": message, **extra}, status=status, headers=headers
    )


def _success(op: tuple, result: Any) -> web.Response:
    name = op[0]
    if name == "get":
        if result is None:
            return _error(404, "not_found", "the key is absent", value=None)
        return web.json_response({"value": result})
    if name == "cas":
        return web.json_response({"swapped": bool(result)})
    return web.json_response({"ok": True})


class _Api:
    def __init__(self, backend: Backend, max_body_bytes: int, policy: AccessPolicy) -> None:
        self.backend = backend
        self.max_body = max_body_bytes
        self.policy = policy
        self.started = time.time()
        self.in_flight = 0
        self.responses: Counter[str] = Counter()  # "op status" -> count

    async def read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise web.HTTPRequestEntityTooLarge(self.max_body, request.content_length)
        # aiohttp stops reading at client_max_size and raises the same error.
        return await request.read()

    async def kv(self, request: web.Request) -> web.Response:
        name = request.match_info["op"]
        if name not in KV_FIELDS:
            return _error(
                404,
                "unknown_op",
                f"unknown operation {name[:40]!r}; expected one of {sorted(KV_FIELDS)} or execute",
            )
        return await self._run(request, lambda body: parse_kv(name, body))

    async def execute(self, request: web.Request) -> web.Response:
        return await self._run(request, parse_execute, generic=True)

    async def _run(self, request: web.Request, parse: Any, generic: bool = False) -> web.Response:
        body = await self.read_body(request)
        try:
            op = parse(body)
            self.backend.validate(op)
        except (BadRequest, InvalidOperation) as e:
            return _error(400, "bad_request", str(e))
        self.in_flight += 1
        try:
            result = await self.backend.execute(op)
        except InvalidOperation as e:  # the backend validates again: same answer
            return _error(400, "bad_request", str(e))
        except Rejected as e:
            return _error(409, "rejected", f"the state machine refused it: {e}")
        except Unavailable as e:
            return _error(
                503,
                e.code,
                f"{e}; nothing was sent, retry later",
                headers={"Retry-After": str(e.retry_after_s)},
            )
        except OutcomeUnknown as e:
            return _error(504, "outcome_unknown", str(e))
        finally:
            self.in_flight -= 1
        if generic:
            return web.json_response({"result": result})
        return _success(op, result)

    async def health(self, request: web.Request) -> web.Response:
        ok, details = await self.backend.health()
        if ok:
            return web.json_response({"status": "ok", **details})
        return web.json_response(
            {"status": "unavailable", **details}, status=503, headers={"Retry-After": "1"}
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "uptime_s": round(time.time() - self.started, 1),
                "in_flight": self.in_flight,
                "responses": dict(sorted(self.responses.items())),
                "max_body_bytes": self.max_body,
                **(await self.backend.status()),
            }
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Refuse requests of web pages, turn aiohttp's plain-text errors into JSON ones,
        and count every answer."""
        origin = request.headers.get("Origin")
        refusal = self.policy.refusal(request.headers)
        unauthenticated = None if refusal else self.policy.unauthenticated(request.headers)
        if refusal is not None:
            resp = _error(403, "forbidden", refusal)
        elif unauthenticated is not None and not (
            request.method == "OPTIONS" and self.policy.origin_allowed(origin)
        ):
            resp = _error(401, "unauthorized", unauthenticated)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pmmc-ray"'
            refusal = unauthenticated
        elif request.method == "OPTIONS" and self.policy.origin_allowed(origin):
            resp = web.Response(  # a CORS preflight of an allowed origin
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST",
                    "Access-Control-Allow-Headers": "Content-Type, Authorization",
                    "Access-Control-Max-Age": "600",
                },
            )
        else:
            resp = await self._handle(request, handler)
        if refusal is None and self.policy.origin_allowed(origin):
            assert origin is not None
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
        name = request.match_info.get("op", request.path.rsplit("/", 1)[-1])
        key = name if name in KV_FIELDS or name in ("execute", "health", "status") else "other"
        self.responses[f"{key} {resp.status}"] += 1
        return resp

    async def _handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, "body_too_large", f"the body exceeds the limit of {self.max_body} bytes"
            )
        except web.HTTPMethodNotAllowed as e:
            return _error(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {sorted(e.allowed_methods)}",
                headers={"Allow": ",".join(sorted(e.allowed_methods))},
            )
        except web.HTTPNotFound:
            return _error(
                404,
                "unknown_op",
                f"no such endpoint; use POST {API_PREFIX}/<op> with op one of "
                f"{sorted(KV_FIELDS)} or execute, GET {API_PREFIX}/health or /status",
            )
        except web.HTTPException as e:
            return _error(e.status, "http_error", e.reason)
        except Exception as e:  # a bug on our side, maybe after sending: say so
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            return _error(
                500,
                "internal",
                f"{type(e).__name__} in the gateway; if the operation was sent, its outcome "
                "is unknown",
            )


#: where :func:`make_app` keeps its request counters (``app[API_KEY].responses``)
API_KEY: web.AppKey[_Api] = web.AppKey("pmmc_api", _Api)


def make_app(
    backend: Backend,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    policy: AccessPolicy | None = None,
) -> web.Application:
    """The aiohttp application of the API in front of ``backend``; ``policy`` says
    which requests it serves at all (default: programs on this host, no web page)."""
    api = _Api(backend, max_body_bytes, policy or AccessPolicy())
    app = web.Application(middlewares=[api.middleware], client_max_size=max_body_bytes)
    app.router.add_get(f"{API_PREFIX}/health", api.health)
    app.router.add_get(f"{API_PREFIX}/status", api.status)
    app.router.add_post(f"{API_PREFIX}/execute", api.execute)
    # Any other name is an operation (unknown ones get 404 unknown_op); the fixed paths
    # are excluded, so a wrong method on them is a 405 that names the right one.
    app.router.add_post(API_PREFIX + "/{op:(?!(?:health|status|execute)$)[^/]+}", api.kv)
    app[API_KEY] = api
    return app
