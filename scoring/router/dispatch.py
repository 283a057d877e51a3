"""The endpoint router's request handling: auth, choose a deployment, mirror, proxy, metrics.

Decisions are plain functions over an immutable ``RouterState`` (``authorize``, ``route``),
testable with no sockets. ``Router`` holds what outlives one config (upstream client,
metrics, mirror stats, in-flight count) and swaps its state atomically on reload: a
request reads ``router.state`` once and finishes on that config. ``HttpProtocol`` is the
lean HTTP/1.1 server (uvloop + httptools): the hot path allocates little and runs no
middleware stack, because a Python proxy's speed is decided there (ENVIRONMENT.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

from scoring.common.request_id import new_request_id_bytes, request_id_from
from scoring.router.auth import AuthError, bearer, check_key, verify_token
from scoring.router.config import RouterConfig, Secrets
from scoring.router.mirror import BUCKETS, Histogram, MirrorStats
from scoring.router.traffic import Split, mirror_target, should_mirror
from scoring.router.upstream import (
    Headers,
    PooledClient,
    Target,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    upstream_failure,
)

PIN_HEADER = b"azureml-model-deployment"
REQUEST_ID_HEADER = b"x-request-id"
TOKEN_LEEWAY_S = 5
TOKEN_CACHE_SIZE = 4096
_now = time.time
#: Mirror calls in flight at once; above it copies are skipped (counted) to protect live traffic.
MIRROR_MAX_IN_FLIGHT = 128


def log(message: str) -> None:
    """One line on stderr with a UTC timestamp (never a secret, never a request body)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} router: {message}", file=sys.stderr, flush=True)


class RouteError(Exception):
    """A request the router answers itself: status and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class RouterState:
    """Everything derived from one config file; immutable, swapped whole on reload."""

    config: RouterConfig
    secrets: Secrets
    targets: dict[str, Target]
    split: Split
    mirror_name: str | None
    mirror_share: float
    timeout_s: float
    generation: int = 0
    #: Tokens already verified under this state's signing key → when they stop being valid.
    tokens: dict[bytes, float] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, config: RouterConfig, secrets: Secrets, generation: int = 0) -> RouterState:
        targets = {name: Target.from_url(name, d.url) for name, d in config.deployments.items()}
        mirror_name, share = mirror_target(config.mirror_traffic)
        return cls(
            config,
            secrets,
            targets,
            Split.from_traffic(config.traffic),
            mirror_name,
            share,
            config.request_timeout_ms / 1000.0,
            generation,
        )


def authorize(state: RouterState, authorization: bytes | None) -> None:
    """Check the caller's credential for this endpoint's auth mode.

    Raises:
        AuthError: missing, malformed, wrong key, or a bad token.
    """
    mode = state.config.auth_mode
    if mode == "none":
        return
    cred = bearer(authorization)
    if mode == "key":
        check_key(cred, state.secrets.primary_key, state.secrets.secondary_key)
        return
    # A client reuses its token for many requests: verify its signature once (~25 µs with
    # PyJWT), then only its expiry. The cache belongs to this state, so a new signing key
    # (a reload) starts empty.
    now = _now()
    valid_until = state.tokens.get(cred)
    if valid_until is not None and now < valid_until:
        return
    claims = verify_token(
        state.secrets.token_signing_key or b"",
        state.config.endpoint_name,
        cred,
        now=now,
        leeway_s=TOKEN_LEEWAY_S,
    )
    if len(state.tokens) >= TOKEN_CACHE_SIZE:
        state.tokens.clear()
    state.tokens[cred] = float(claims["exp"]) + TOKEN_LEEWAY_S  # type: ignore[arg-type]


def route(
    state: RouterState, pin: bytes | None, r_live: float, r_mirror: float
) -> tuple[Target, Target | None]:
    """The live deployment for a request and, if it is copied, the mirror deployment.

    A pinned request (``azureml-model-deployment`` header) goes to that deployment, also one
    at 0%, and is never mirrored.

    Raises:
        RouteError: 404 for an unknown pin or when no deployment has traffic.
    """
    if pin:
        name = pin.decode("latin-1").strip()
        target = state.targets.get(name)
        if target is None:
            known = ", ".join(sorted(state.targets))
            raise RouteError(
                404,
                f"deployment {name!r} named by header "
                f"azureml-model-deployment does not exist (known: {known})",
            )
        return target, None
    name = state.split.choose(r_live)
    if name is None:
        raise RouteError(
            404,
            f"endpoint {state.config.endpoint_name!r} has no deployment "
            "with traffic; set traffic or pin one with header "
            "azureml-model-deployment",
        )
    mirror = None
    if state.mirror_name and should_mirror(state.mirror_share, r_mirror, pinned=False):
        mirror = state.targets[state.mirror_name]
    return state.targets[name], mirror


def request_id(header: bytes | None) -> bytes:
    """The caller's ``x-request-id`` if it is sane, else a new one (the inference server's rule)."""
    if header is not None:
        return request_id_from(header).encode()
    return new_request_id_bytes()


def error_body(message: str, rid: bytes) -> bytes:
    return json.dumps({"error": message, "request_id": rid.decode("latin-1")}).encode()


# --------------------------------------------------------------------------------- metrics


@dataclass
class DeploymentMetrics:
    """Live-traffic counters for one deployment."""

    responses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)


class Metrics:
    """Counters rendered in Prometheus text format; plain ints on the hot path (no locks)."""

    def __init__(self) -> None:
        self.deployments: dict[str, DeploymentMetrics] = {}
        self.mirrors: dict[str, MirrorStats] = {}
        self.rejected: dict[tuple[int, str], int] = {}
        self.reloads: dict[str, int] = {"ok": 0, "rejected": 0}

    def deployment(self, name: str) -> DeploymentMetrics:
        m = self.deployments.get(name)
        if m is None:
            m = self.deployments[name] = DeploymentMetrics()
        return m

    def mirror(self, name: str) -> MirrorStats:
        m = self.mirrors.get(name)
        if m is None:
            m = self.mirrors[name] = MirrorStats()
        return m

    def reject(self, status: int, reason: str) -> None:
        key = (status, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def render(self, router: Router) -> bytes:
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")

        def hist(name: str, labels: str, h: Histogram) -> None:
            acc = 0
            for bound, c in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                acc += c
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'{name}_bucket{{{labels},le="{le}"}} {acc}\n')
            out.append(f"{name}_sum{{{labels}}} {h.total}\n{name}_count{{{labels}}} {h.n}\n")

        head(
            "router_requests_total",
            "counter",
            "Live requests answered through a deployment, by upstream status.",
        )
        for dep, m in sorted(self.deployments.items()):
            for status, n in sorted(m.responses.items()):
                out.append(f'router_requests_total{{deployment="{dep}",status="{status}"}} {n}\n')
        head(
            "router_upstream_errors_total",
            "counter",
            "Live requests a deployment gave no response to (connect, timeout, pool, closed).",
        )
        for dep, m in sorted(self.deployments.items()):
            for kind, n in sorted(m.errors.items()):
                out.append(
                    f'router_upstream_errors_total{{deployment="{dep}",kind="{kind}"}} {n}\n'
                )
        head(
            "router_request_duration_seconds",
            "histogram",
            "Time from routing to the deployment's full response.",
        )
        for dep, m in sorted(self.deployments.items()):
            hist("router_request_duration_seconds", f'deployment="{dep}"', m.latency)
        head(
            "router_rejected_total",
            "counter",
            "Requests the router answered itself (auth, routing, bad request).",
        )
        for (status, reason), n in sorted(self.rejected.items()):
            out.append(f'router_rejected_total{{status="{status}",reason="{reason}"}} {n}\n')
        head("router_mirror_requests_total", "counter", "Mirrored copies, by mirror status.")
        for dep, s in sorted(self.mirrors.items()):
            for status, n in sorted(s.statuses.items()):
                out.append(
                    f'router_mirror_requests_total{{deployment="{dep}",status="{status}"}} {n}\n'
                )
            for kind, n in sorted(s.errors.items()):
                out.append(
                    f'router_mirror_requests_total{{deployment="{dep}",status="{kind}"}} {n}\n'
                )
        head(
            "router_mirror_comparisons_total",
            "counter",
            "Mirror responses compared with the live one: equal, different, not_compared.",
        )
        for dep, s in sorted(self.mirrors.items()):
            for result in ("equal", "different", "not_compared"):
                out.append(
                    f'router_mirror_comparisons_total{{deployment="{dep}",'
                    f'result="{result}"}} {getattr(s, result)}\n'
                )
        head(
            "router_mirror_skipped_total",
            "counter",
            f"Mirror copies skipped because {MIRROR_MAX_IN_FLIGHT} were already in flight.",
        )
        for dep, s in sorted(self.mirrors.items()):
            out.append(f'router_mirror_skipped_total{{deployment="{dep}"}} {s.skipped}\n')
        head("router_mirror_duration_seconds", "histogram", "Mirror call latency.")
        for dep, s in sorted(self.mirrors.items()):
            hist("router_mirror_duration_seconds", f'deployment="{dep}"', s.latency)
        head("router_in_flight_requests", "gauge", "Requests waiting for a deployment now.")
        out.append(f"router_in_flight_requests {router.in_flight}\n")
        head("router_config_reloads_total", "counter", "Config reloads by result.")
        for result, n in sorted(self.reloads.items()):
            out.append(f'router_config_reloads_total{{result="{result}"}} {n}\n')
        head("router_config_generation", "gauge", "Generation of the config now serving.")
        out.append(f"router_config_generation {router.state.generation}\n")
        head("router_traffic_percent", "gauge", "Live traffic percent per deployment.")
        for dep in sorted(router.state.targets):
            pct = router.state.config.traffic.get(dep, 0)
            out.append(f'router_traffic_percent{{deployment="{dep}"}} {pct}\n')
        return "".join(out).encode()


# --------------------------------------------------------------------------------- router


class Request:
    """A parsed request. ``headers`` holds the ones forwarded to a deployment (lowercase
    names); the three the router acts on are parsed out once, while reading."""

    __slots__ = (
        "authorization",
        "body",
        "headers",
        "keep_alive",
        "method",
        "path",
        "pin",
        "query",
        "request_id",
    )

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Headers,
        body: bytes,
        keep_alive: bool = True,
        authorization: bytes | None = None,
        pin: bytes | None = None,
        request_id: bytes | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.authorization = authorization
        self.pin = pin
        self.request_id = request_id


Response = tuple[int, Headers, bytes]
_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_PROM = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_DROP_FROM_UPSTREAM = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        PIN_HEADER,
        REQUEST_ID_HEADER,
    }
)
_CAPTURED = frozenset({b"authorization", REQUEST_ID_HEADER, PIN_HEADER, b"expect"})
ROUTES = (
    "GET /",
    "GET /ready",
    "POST /score",
    "GET /swagger.json",
    "GET /metrics",
    "GET /mirror/summary",
)


Respond = Callable[[int, Headers, bytes], None]


class Router:
    """Process-wide router: current state, upstream client, metrics, mirror bookkeeping."""

    def __init__(self, state: RouterState, client: UpstreamClient | None = None) -> None:
        self.state = state
        self.client: UpstreamClient = client or PooledClient(
            state.config.max_connections_per_deployment, state.config.connect_timeout_ms / 1000.0
        )
        self.metrics = Metrics()
        self.in_flight = 0
        self.mirrors_in_flight = 0
        self.draining = False
        self._rand = random.random
        self._error_log: dict[tuple[str, str], tuple[float, int]] = {}

    def log_upstream_error(self, deployment: str, kind: str, rid: bytes, message: str) -> None:
        """One log line per deployment and error kind per second, with a count of the rest.

        A deployment that is down fails every request sent to it; the log must stay readable.
        """
        key = (deployment, kind)
        now = time.monotonic()
        last, suppressed = self._error_log.get(key, (0.0, 0))
        if now - last < 1.0:
            self._error_log[key] = (last, suppressed + 1)
            return
        more = f" (+{suppressed} more like it in the last second)" if suppressed else ""
        log(f"request {rid.decode('latin-1')}: {message}{more}")
        self._error_log[key] = (now, 0)

    def swap(self, state: RouterState) -> None:
        """Serve ``state`` from the next request on; requests in flight keep their own."""
        self.state = state
        if isinstance(self.client, PooledClient):
            cfg = state.config
            self.client.configure(
                cfg.max_connections_per_deployment, cfg.connect_timeout_ms / 1000.0
            )
            self.client.retire({(t.host, t.port) for t in state.targets.values()})

    def handle(self, req: Request, respond: Respond) -> None:
        """Answer ``req`` by calling ``respond`` exactly once (now, or when upstream answers)."""
        state = self.state  # one config for the whole request
        rid = request_id(req.request_id)
        try:
            self._dispatch(state, req, rid, respond)
        except RouteError as exc:
            self.metrics.reject(exc.status, _reason(exc.status))
            self._done(
                respond, exc.status, [_JSON, (REQUEST_ID_HEADER, rid)], error_body(exc.message, rid)
            )
        except AuthError as exc:
            self.metrics.reject(401, "auth")
            self._done(
                respond,
                401,
                [
                    _JSON,
                    (REQUEST_ID_HEADER, rid),
                    (b"www-authenticate", b'Bearer realm="endpoint"'),
                ],
                error_body(exc.reason, rid),
            )

    @staticmethod
    def _done(respond: Respond, status: int, headers: Headers, body: bytes) -> None:
        respond(status, headers, body)

    def _dispatch(self, state: RouterState, req: Request, rid: bytes, respond: Respond) -> None:
        path, method = req.path, req.method
        if path == b"/score":
            if method != b"POST":
                raise RouteError(405, f"use POST for /score (got {method.decode()})")
            self._proxy(state, req, rid, b"POST", b"/score", respond, mirrorable=True)
            return
        if method != b"GET":
            if path in (b"/", b"/ready", b"/swagger.json", b"/metrics", b"/mirror/summary"):
                raise RouteError(405, f"use GET for {path.decode()} (got {method.decode()})")
            raise RouteError(404, self._no_route(req))
        if path == b"/":
            self._done(respond, 200, [_TEXT], b"Healthy")
        elif path == b"/ready":
            if self.draining:
                self._done(respond, 503, [_TEXT], b"Draining")
            else:
                self._done(respond, 200, [_TEXT], b"Ready")
        elif path == b"/metrics":
            self._done(respond, 200, [_PROM], self.metrics.render(self))
        elif path == b"/swagger.json":
            self._proxy(state, req, rid, b"GET", b"/swagger.json", respond, mirrorable=False)
        elif path == b"/mirror/summary":
            self._authorize(state, req)
            self._done(
                respond,
                200,
                [_JSON, (REQUEST_ID_HEADER, rid)],
                json.dumps(self.mirror_summary(state), indent=1).encode(),
            )
        else:
            raise RouteError(404, self._no_route(req))

    @staticmethod
    def _no_route(req: Request) -> str:
        return f"no route {req.method.decode()} {req.path.decode('latin-1')}; routes: " + ", ".join(
            ROUTES
        )

    @staticmethod
    def _authorize(state: RouterState, req: Request) -> None:
        authorize(state, req.authorization)

    def mirror_summary(self, state: RouterState) -> dict[str, object]:
        return {
            "endpoint_name": state.config.endpoint_name,
            "mirror_traffic": dict(state.config.mirror_traffic),
            "traffic": dict(state.config.traffic),
            "mirror_calls_in_flight": self.mirrors_in_flight,
            "mirrors": {name: s.summary() for name, s in sorted(self.metrics.mirrors.items())},
        }

    def _proxy(
        self,
        state: RouterState,
        req: Request,
        rid: bytes,
        method: bytes,
        path: bytes,
        respond: Respond,
        mirrorable: bool,
    ) -> None:
        authorize(state, req.authorization)
        rand = self._rand
        target, mirror = route(state, req.pin, rand(), rand() if state.mirror_name else 1.0)
        headers = req.headers  # owned by this request: extend in place
        headers.append((REQUEST_ID_HEADER, rid))
        upath = path + b"?" + req.query if req.query else path
        pair = None
        if mirror is not None and mirrorable:
            pair = self._mirror_pair(mirror)
        ex = _Exchange(self, target, rid, respond, pair)
        self.in_flight += 1
        self.client.send(target, method, upath, headers, req.body, state.timeout_s, ex.done)
        if pair is not None:  # the live request goes out first; the copy never delays it
            self.client.send(
                mirror, method, upath, headers, req.body, state.timeout_s, pair.mirror_done
            )

    def _mirror_pair(self, target: Target) -> _MirrorPair | None:
        stats = self.metrics.mirror(target.name)
        if self.mirrors_in_flight >= MIRROR_MAX_IN_FLIGHT:
            stats.skipped += 1
            return None
        self.mirrors_in_flight += 1
        return _MirrorPair(self, stats)


class _Exchange:
    """One proxied request waiting for its deployment's answer."""

    __slots__ = ("pair", "respond", "rid", "router", "t0", "target")

    def __init__(
        self, router: Router, target: Target, rid: bytes, respond: Respond, pair: _MirrorPair | None
    ) -> None:
        self.router = router
        self.target = target
        self.rid = rid
        self.respond = respond
        self.pair = pair
        self.t0 = time.perf_counter()

    def done(self, resp: UpstreamResponse | None, err: UpstreamError | None) -> None:
        router, target, rid = self.router, self.target, self.rid
        router.in_flight -= 1
        m = router.metrics.deployments.get(target.name) or router.metrics.deployment(target.name)
        if resp is None:
            assert err is not None
            m.errors[err.kind] = m.errors.get(err.kind, 0) + 1
            if self.pair is not None:
                self.pair.live_done(None)
            status, message = upstream_failure(err)
            router.log_upstream_error(target.name, err.kind, rid, message)
            router._done(
                self.respond,
                status,
                [_JSON, (REQUEST_ID_HEADER, rid), (PIN_HEADER, target.name.encode())],
                error_body(message, rid),
            )
            return
        m.latency.observe(time.perf_counter() - self.t0)
        m.responses[resp.status] = m.responses.get(resp.status, 0) + 1
        if self.pair is not None:
            self.pair.live_done((resp.status, resp.body))
        drop = _DROP_FROM_UPSTREAM
        out = [h for h in resp.headers if h[0].lower() not in drop]
        out.append((REQUEST_ID_HEADER, rid))
        out.append((PIN_HEADER, target.name_bytes))
        self.respond(resp.status, out, resp.body)


class _MirrorPair:
    """A mirrored copy and its live twin; whichever finishes second records the comparison."""

    __slots__ = ("live", "live_set", "mirror", "router", "stats", "t0")

    def __init__(self, router: Router, stats: MirrorStats) -> None:
        self.router = router
        self.stats = stats
        self.t0 = time.perf_counter()
        self.live: tuple[int, bytes] | None = None
        self.live_set = False
        self.mirror: tuple[UpstreamResponse | None, str | None, float] | None = None

    def live_done(self, live: tuple[int, bytes] | None) -> None:
        self.live, self.live_set = live, True
        if self.mirror is not None:
            self._record()

    def mirror_done(self, resp: UpstreamResponse | None, err: UpstreamError | None) -> None:
        self.router.mirrors_in_flight -= 1
        self.mirror = (resp, err.kind if err else None, time.perf_counter() - self.t0)
        if self.live_set:
            self._record()

    def _record(self) -> None:
        resp, error, seconds = self.mirror  # type: ignore[misc]
        self.stats.record(
            resp.status if resp else None, seconds, error, self.live, resp.body if resp else b""
        )


def _reason(status: int) -> str:
    return {401: "auth", 404: "not_found", 405: "method", 400: "bad_request", 413: "too_large"}.get(
        status, str(status)
    )


# ---------------------------------------------------------------------------- HTTP server

_monotonic = time.monotonic
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def encode_response(status: int, headers: Headers, body: bytes, keep_alive: bool) -> bytes:
    head = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    lines = b"".join([b"%s: %s\r\n" % h for h in headers])
    tail = b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"
    return b"%s%scontent-length: %d%s%s" % (head, lines, len(body), tail, body)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, handle requests in order, keep-alive."""

    __slots__ = (
        "_auth",
        "_body",
        "_body_size",
        "_busy",
        "_continue",
        "_headers",
        "_keep",
        "_parser",
        "_pin",
        "_queue",
        "_receiving",
        "_rid",
        "_too_large",
        "_url",
        "closed",
        "conns",
        "last_active",
        "router",
        "transport",
    )

    def __init__(self, router: Router, conns: set[HttpProtocol]) -> None:
        self.router = router
        self.conns = conns
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self._queue: deque[Request] = deque()
        self._busy = False
        self._keep = True
        self._auth: bytes | None = None
        self._pin: bytes | None = None
        self._rid: bytes | None = None
        self._continue = False
        self._receiving = False
        self.last_active = _monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reply_and_close(400, f"malformed HTTP request ({exc})")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.last_active = _monotonic()
        self._receiving = True
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._too_large = False
        self._auth = self._pin = self._rid = None
        self._continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        if self._continue:
            self._continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _CAPTURED:
            if name == b"authorization":
                self._auth = value
                return  # never forwarded
            if name == REQUEST_ID_HEADER:
                self._rid = value
                return  # forwarded as the router's (checked) id
            if name == b"expect":
                # Answered here (below); a deployment's "100 Continue" must not reach the client.
                if value.lower() == b"100-continue" and self.transport is not None:
                    self._continue = True
                return
            self._pin = value
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.router.state.config.max_body_bytes:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        if self._too_large:
            limit = self.router.state.config.max_body_bytes
            self._reply_and_close(413, f"request body is over max_body_bytes ({limit})")
            return
        path, _, query = self._url.partition(b"?")
        req = Request(
            self._parser.get_method(),
            path,
            query,
            self._headers,
            b"".join(self._body),
            self._parser.should_keep_alive(),
            self._auth,
            self._pin,
            self._rid,
        )
        if self._busy:
            self._queue.append(req)
            if len(self._queue) > 16 and self.transport is not None:
                self.transport.pause_reading()
            return
        self._start(req)

    def _start(self, req: Request) -> None:
        self._busy = True
        self._keep = req.keep_alive
        try:
            self.router.handle(req, self._respond)
        except Exception as exc:  # a bug: log it, answer 500, keep serving
            log(
                f"internal error on {req.method.decode()} {req.path.decode('latin-1')}: "
                f"{type(exc).__name__}: {exc}"
            )
            rid = request_id(req.request_id)
            self._respond(500, [_JSON], error_body("internal router error", rid))

    def _respond(self, status: int, headers: Headers, body: bytes) -> None:
        if self.closed:
            return
        self.last_active = _monotonic()
        keep = self._keep and not self.router.draining
        self.transport.write(encode_response(status, headers, body, keep))  # type: ignore[union-attr]
        if not keep:
            self.close()
            return
        self._busy = False
        if self._queue:
            req = self._queue.popleft()
            if len(self._queue) <= 4 and self.transport is not None:
                self.transport.resume_reading()
            self._start(req)

    def _reply_and_close(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        self.router.metrics.reject(status, _reason(status))
        body = error_body(message, new_request_id_bytes())
        self.transport.write(encode_response(status, [_JSON], body, keep_alive=False))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        """No request being answered, queued, or half received: safe to close when draining."""
        return not self._busy and not self._receiving and not self._queue

    @property
    def busy(self) -> bool:
        """A request is being answered or queued (a half-received one does not count)."""
        return self._busy or bool(self._queue)
