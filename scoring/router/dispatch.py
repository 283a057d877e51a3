"""What the router does with a request: auth, choose a deployment, mirror, proxy, count.

Decisions are plain functions over an immutable ``RouterState`` (``authorize``, ``route``),
testable with no sockets. ``Router`` holds what outlives one config (upstream client,
metrics, mirror stats, in-flight count) and swaps its state atomically on reload: a
request reads ``router.state`` once and finishes on that config. The HTTP side is
``protocol.HttpProtocol``; it hands each parsed ``Request`` to ``Router.handle``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scoring.common.http_errors import HttpError, error_body
from scoring.common.logs import get_log
from scoring.common.request_id import request_id_bytes_from
from scoring.router.auth import AuthError, bearer, check_key, issue_token, verify_token
from scoring.router.config import RouterConfig, Secrets
from scoring.router.metrics import Metrics
from scoring.router.mirror import MIRROR_MAX_IN_FLIGHT, MirrorStats
from scoring.router.rollout import RolloutController, RolloutError
from scoring.router.traffic import Split, mirror_target, should_mirror
from scoring.router.upstream import (
    Budget,
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
#: Sent to deployments with the internal credential; a client's copy is dropped (protocol.py).
CREDENTIAL_HEADER = b"x-ml-endpoints-credential"
TOKEN_LEEWAY_S = 5
TOKEN_CACHE_SIZE = 4096
_now = time.time


class RouteError(HttpError):
    """A request the router answers itself (404, 405): ``{"error": message, ...}``."""


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
    #: The split served now: the declared ``traffic``, or a rollout's step (``rollout.with_live``).
    live: dict[str, int] = field(default_factory=dict, compare=False)
    #: Tokens already verified under this state's signing key → when they stop being valid.
    tokens: dict[bytes, float] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, config: RouterConfig, secrets: Secrets, generation: int = 0) -> RouterState:
        targets = {
            name: Target.from_url(name, d.url, d.idempotent)
            for name, d in config.deployments.items()
        }
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
            dict(config.traffic),
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
        max_lifetime_s=state.config.max_token_lifetime_s,
    )
    if len(state.tokens) >= TOKEN_CACHE_SIZE:
        state.tokens.clear()
    state.tokens[cred] = float(claims["exp"]) + TOKEN_LEEWAY_S  # type: ignore[arg-type]


def token_for(state: RouterState, req: Request) -> bytes:
    """``POST /token``: a signed token in Azure's shape, for a caller holding a key.

    Only a key gets a token (never a token: it would renew itself forever); the lifetime is
    the body's ``ttl_s`` if given, capped at ``max_token_lifetime_s``. The signing key never
    leaves the router.

    Raises:
        RouteError: 400 outside ``aml_token`` mode or for a bad body.
        AuthError: missing or wrong key.
    """
    config = state.config
    if config.auth_mode != "aml_token":
        raise RouteError(
            f"endpoint {config.endpoint_name!r} uses auth_mode {config.auth_mode!r}; tokens are "
            "issued only in aml_token mode (send the key itself as 'Authorization: Bearer KEY')",
            400,
        )
    keys = state.secrets.primary_key, state.secrets.secondary_key
    if not any(keys):
        raise AuthError(
            "this endpoint has no keys to exchange for a token; give the router primary_key "
            "(in secrets_dir or env ML_ENDPOINTS_PRIMARY_KEY)"
        )
    check_key(bearer(req.authorization), *keys)
    ttl = config.max_token_lifetime_s
    if req.body.strip():
        try:
            data = json.loads(req.body)
        except ValueError as exc:
            raise RouteError(f'body must be JSON like {{"ttl_s": 600}} ({exc})', 400) from exc
        asked = data.get("ttl_s", ttl) if isinstance(data, dict) else None
        if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
            raise RouteError(
                f"ttl_s must be a positive whole number of seconds (got {asked!r})", 400
            )
        ttl = min(asked, ttl)
    token = issue_token(state.secrets.token_signing_key or b"", config.endpoint_name, ttl)
    return json.dumps(token).encode()


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
                f"deployment {name!r} named by header "
                f"azureml-model-deployment does not exist (known: {known})",
                404,
            )
        return target, None
    chosen = state.split.choose(r_live)
    if chosen is None:
        raise RouteError(
            f"endpoint {state.config.endpoint_name!r} has no deployment "
            "with traffic; set traffic or pin one with header "
            "azureml-model-deployment",
            404,
        )
    mirror = None
    if state.mirror_name and should_mirror(state.mirror_share, r_mirror, pinned=False):
        mirror = state.targets[state.mirror_name]
    return state.targets[chosen], mirror


@dataclass(slots=True, eq=False)
class Request:
    """A parsed request. ``headers`` holds the ones forwarded to a deployment (lowercase
    names); the three the router acts on are parsed out once, while reading."""

    method: bytes
    path: bytes
    query: bytes
    headers: Headers
    body: bytes
    keep_alive: bool = True
    authorization: bytes | None = None
    pin: bytes | None = None
    request_id: bytes | None = None
    authorized: bool = False  # the credential was checked when the headers arrived


JSON_HEADER = (b"content-type", b"application/json")
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
#: Paths whose requests need a credential: checked as soon as their headers are in.
ROLLOUT_PATHS = frozenset(
    {b"/rollout", *(b"/rollout/" + a.encode() for a in ("pause", "resume", "abort", "promote"))}
)
AUTHENTICATED = frozenset({b"/score", b"/swagger.json", b"/mirror/summary", *ROLLOUT_PATHS})
ROUTES = (
    "GET /",
    "GET /ready",
    "POST /score",
    "POST /token",
    "GET /swagger.json",
    "GET /metrics",
    "GET /mirror/summary",
    "GET /rollout",
    "POST /rollout/{pause,resume,abort,promote}",
)


Respond = Callable[[int, Headers, bytes], None]


class Router:
    """Process-wide router: current state, upstream client, metrics, mirror bookkeeping."""

    def __init__(self, state: RouterState, client: UpstreamClient | None = None) -> None:
        self.state = state
        cfg = state.config
        #: Body bytes held in memory by the whole process (requests and responses).
        self.budget = Budget(cfg.max_buffered_bytes)
        self.client: UpstreamClient = client or PooledClient(
            cfg.max_connections_per_deployment,
            cfg.connect_timeout_ms / 1000.0,
            self.budget,
            cfg.max_response_bytes,
            cfg.upstream_connection_max_age_ms / 1000.0,
        )
        self.metrics = Metrics()
        self.in_flight = 0
        self.mirrors_in_flight = 0
        self.draining = False
        self._rand = random.random
        #: The progressive rollout, when the process runs one (``scoring.router.rollout``).
        self.rollout: RolloutController | None = None
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
        get_log().event(
            "error",
            f"request {rid.decode('latin-1')}: {message}{more}",
            event="upstream_error",
            deployment=deployment,
            request_id=rid.decode("latin-1"),
        )
        self._error_log[key] = (now, 0)

    def swap(self, state: RouterState) -> None:
        """Serve ``state`` from the next request on; requests in flight keep their own."""
        self.state = state
        cfg = state.config
        self.budget.limit = cfg.max_buffered_bytes
        if isinstance(self.client, PooledClient):
            self.client.configure(
                cfg.max_connections_per_deployment,
                cfg.connect_timeout_ms / 1000.0,
                cfg.max_response_bytes,
                cfg.upstream_connection_max_age_ms / 1000.0,
            )
            self.client.retire({(t.host, t.port) for t in state.targets.values()})

    def handle(self, req: Request, respond: Respond) -> None:
        """Answer ``req`` by calling ``respond`` exactly once (now, or when upstream answers)."""
        state = self.state  # one config for the whole request
        rid = request_id_bytes_from(req.request_id)
        try:
            self._dispatch(state, req, rid, respond)
        except RouteError as exc:
            self.metrics.reject(exc.status, reject_reason(exc.status))
            self._done(
                respond,
                exc.status,
                [JSON_HEADER, (REQUEST_ID_HEADER, rid)],
                error_body(exc.message, rid.decode("latin-1")),
            )
        except AuthError as exc:
            self._done(respond, *self._unauthorized(exc, rid))

    def check_head(
        self, path: bytes, authorization: bytes | None, request_id: bytes | None
    ) -> tuple[int, Headers, bytes] | None:
        """The 401 for a request refused on its headers alone, before its body is read."""
        if path not in AUTHENTICATED:
            return None
        try:
            authorize(self.state, authorization)
        except AuthError as exc:
            return self._unauthorized(exc, request_id_bytes_from(request_id))
        return None

    def _unauthorized(self, exc: AuthError, rid: bytes) -> tuple[int, Headers, bytes]:
        self.metrics.reject(401, "auth")
        headers: Headers = [
            JSON_HEADER,
            (REQUEST_ID_HEADER, rid),
            (b"www-authenticate", b'Bearer realm="endpoint"'),
        ]
        return 401, headers, error_body(exc.reason, rid.decode("latin-1"))

    @staticmethod
    def _done(respond: Respond, status: int, headers: Headers, body: bytes) -> None:
        respond(status, headers, body)

    def _dispatch(self, state: RouterState, req: Request, rid: bytes, respond: Respond) -> None:
        path, method = req.path, req.method
        if path == b"/score":
            if method != b"POST":
                raise RouteError(f"use POST for /score (got {method.decode()})", 405)
            self._proxy(state, req, rid, b"POST", b"/score", respond, mirrorable=True)
            return
        if path == b"/token":
            if method != b"POST":
                raise RouteError(f"use POST for /token (got {method.decode()})", 405)
            self._done(respond, 200, [JSON_HEADER, (REQUEST_ID_HEADER, rid)], token_for(state, req))
            return
        if path in ROLLOUT_PATHS:
            self._rollout(state, req, rid, respond)
            return
        if method != b"GET":
            if path in (b"/", b"/ready", b"/swagger.json", b"/metrics", b"/mirror/summary"):
                raise RouteError(f"use GET for {path.decode()} (got {method.decode()})", 405)
            raise RouteError(self._no_route(req), 404)
        if path == b"/":
            self._done(respond, 200, [_TEXT], b"Healthy")
        elif path == b"/ready":
            if self.draining:
                self._done(respond, 503, [_TEXT], b"Draining")
            else:
                self._done(respond, 200, [_TEXT], b"Ready")
        elif path == b"/metrics" and state.config.metrics_port is None:
            self._done(respond, 200, [_PROM], self.metrics.render(self))
        elif path == b"/swagger.json":
            self._proxy(state, req, rid, b"GET", b"/swagger.json", respond, mirrorable=False)
        elif path == b"/mirror/summary":
            if not req.authorized:
                authorize(state, req.authorization)
            self._done(
                respond,
                200,
                [JSON_HEADER, (REQUEST_ID_HEADER, rid)],
                json.dumps(self.mirror_summary(state), indent=1, allow_nan=False).encode(),
            )
        else:
            raise RouteError(self._no_route(req), 404)

    def _rollout(self, state: RouterState, req: Request, rid: bytes, respond: Respond) -> None:
        """``GET /rollout`` (status and evidence) and ``POST /rollout/ACTION``; the endpoint's
        key (or token) is the admin credential."""
        if not req.authorized:
            authorize(state, req.authorization)
        want = b"GET" if req.path == b"/rollout" else b"POST"
        if req.method != want:
            raise RouteError(
                f"use {want.decode()} for {req.path.decode()} (got {req.method.decode()})", 405
            )
        controller = self.rollout
        if controller is None:
            raise RouteError("this router runs no rollout controller", 404)
        try:
            if want == b"GET":
                answer = controller.status()
            else:
                answer = controller.command(req.path.rsplit(b"/", 1)[1].decode())
        except RolloutError as exc:
            raise RouteError(exc.message, exc.status) from exc
        body = json.dumps(answer, indent=1, allow_nan=False).encode()
        self._done(respond, 200, [JSON_HEADER, (REQUEST_ID_HEADER, rid)], body)

    @staticmethod
    def _no_route(req: Request) -> str:
        return f"no route {req.method.decode()} {req.path.decode('latin-1')}; routes: " + ", ".join(
            ROUTES
        )

    def mirror_summary(self, state: RouterState) -> dict[str, object]:
        return {
            "endpoint_name": state.config.endpoint_name,
            "mirror_traffic": {state.mirror_name: round(state.mirror_share * 100)}
            if state.mirror_name
            else {},
            "traffic": dict(state.live),
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
        if not req.authorized:
            authorize(state, req.authorization)
        rand = self._rand
        target, mirror = route(state, req.pin, rand(), rand() if state.mirror_name else 1.0)
        headers = req.headers  # owned by this request: extend in place
        if state.secrets.internal_credential is not None:
            headers.append((CREDENTIAL_HEADER, state.secrets.internal_credential))
        headers.append((REQUEST_ID_HEADER, rid))  # last: the client checks answers against it
        upath = path + b"?" + req.query if req.query else path
        pair = None
        if mirror is not None and mirrorable:
            pair = self._mirror_pair(mirror)
        ex = _Exchange(self, target, rid, respond, pair, time.perf_counter())
        self.in_flight += 1
        self.client.send(target, method, upath, headers, req.body, state.timeout_s, ex.done)
        if pair is not None and mirror is not None:  # the live request goes out first
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


@dataclass(slots=True, eq=False)
class _Exchange:
    """One proxied request waiting for its deployment's answer."""

    router: Router
    target: Target
    rid: bytes
    respond: Respond
    pair: _MirrorPair | None
    t0: float  # time.perf_counter() when sent

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
            # The log (for operators) names the Service URL; the client's body does not.
            router.log_upstream_error(target.name, err.kind, rid, f"{message} ({target.url})")
            router._done(
                self.respond,
                status,
                [JSON_HEADER, (REQUEST_ID_HEADER, rid), (PIN_HEADER, target.name.encode())],
                error_body(message, rid.decode("latin-1")),
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


def reject_reason(status: int) -> str:
    """The ``reason`` label of ``router_rejected_total`` for a status the router answered."""
    return {
        401: "auth",
        404: "not_found",
        405: "method",
        400: "bad_request",
        408: "timeout",
        413: "too_large",
        414: "url_too_long",
        431: "headers_too_large",
        503: "overloaded",
    }.get(status, str(status))
