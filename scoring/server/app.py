"""The inference server's ASGI app: HTTP in, data plane call, HTTP out. Nothing more.

A raw ASGI callable rather than a framework: on ``POST /score`` it does one pass over the
headers, reads the body, calls the scorer (``scorer``) through the runner (``runners``), encodes the
result and answers; metrics, the access log and collection are a few in-memory appends.
Everything slower (metric snapshots, log and collection flushes) runs on timers.

Routes: ``GET /`` liveness, ``GET /ready`` (also ``/readyz``) readiness, ``POST /score``
(also ``GET`` with a query string, and ``OPTIONS``), ``GET /swagger.json``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import json
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast
from urllib.parse import parse_qsl

from scoring.common.http_errors import error_body
from scoring.common.logs import Log
from scoring.common.request_id import client_request_id_from, request_id_from
from scoring.server import collector
from scoring.server.body import (
    BytesInFlight,
    check_content_type,
    nesting_depth,
    query_args,
    read_body,
)
from scoring.server.errors import (
    BadInput,
    MethodNotAllowed,
    NotFound,
    ScoringError,
    TimedOut,
)
from scoring.server.jsonable import jsonable
from scoring.server.metrics import Stats
from scoring.server.raw_request import AMLRequest
from scoring.server.runners import AsyncRunner, Runner
from scoring.server.scorer import Scorer, headers_from
from scoring.server.swagger import pick_version

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"  # what Microsoft's server labels "Healthy" and OPTIONS with
_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
_PROBES = frozenset({"/", "/ready"})
_JSON_CHECK = json.JSONDecoder(parse_float=str, parse_int=str)
"""Tells whether collected text is JSON: numbers are kept as text, not converted, since only
validity matters (converting floats was ~3/4 of a 100-row body's parse)."""
#: Paths the kubelet probes: open even when the internal credential is required.
_OPEN = frozenset({"/", "/ready", "/readyz"})
CREDENTIAL_HEADER = b"x-ml-endpoints-credential"
_ROUTES = {
    "/": "/",
    "/ready": "/ready",
    "/readyz": "/ready",
    "/score": "/score",
    "/swagger.json": "/swagger.json",
    "/metrics": "/metrics",
}
_ERROR_KIND = {
    400: "bad_input",
    413: "too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    500: "script_failed",
    503: "not_ready",
    504: "timeout",
}


def _default(value: Any) -> Any:
    """JSON for numpy/pandas results that a script forgot to convert."""
    plain = jsonable(value)
    if plain is value:
        raise TypeError(f"run() returned a {type(value).__name__}, which is not JSON serialisable")
    return plain


_dumps = json.JSONEncoder(default=_default, ensure_ascii=True, allow_nan=False).encode


def _finite(value: Any) -> Any:
    """``value`` with NaN and +-Infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    plain = jsonable(value)
    return value if plain is value else _finite(plain)


def dumps(value: Any) -> bytes:
    """``run()``'s result as JSON: NaN and +-Infinity become ``null``, as in JavaScript's
    ``JSON.stringify`` (Python's and azmlinfsrv's ``NaN`` is not JSON: clients fail to parse the
    whole answer). The check costs nothing unless such a number is there."""
    try:
        return _dumps(value).encode()
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        return _dumps(_finite(value)).encode()
    except RecursionError as exc:
        raise ScoringError(
            "run() returned a value nested too deeply to encode as JSON; see server log", 500
        ) from exc


def encode_result(result: Any) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """``(status, body, content type, extra headers)`` for what ``run()`` returned.

    Like azmlinfsrv, any value is sent as JSON (a ``str`` becomes a JSON string); an
    ``AMLResponse`` sets status, body and headers itself; ``bytes`` go out as they are.
    """
    if isinstance(result, list | dict):
        return 200, dumps(result), _JSON, []
    status = getattr(result, "status_code", None)
    if status is not None and hasattr(result, "get_data"):
        pairs = getattr(result, "header_list", None)  # ours keeps repeated headers apart
        if pairs is None:
            pairs = list((getattr(result, "headers", None) or {}).items())
        headers = [
            (k.lower().encode("latin-1"), str(v).encode("latin-1"))
            for k, v in [*pairs, ("content-type", getattr(result, "content_type", None))]
            if v is not None
        ]
        ctype = _JSON
        for k, v in headers:
            if k == b"content-type":
                ctype = v
        headers = [
            (k, v)
            for k, v in headers
            if k not in (b"content-type", b"content-length", b"x-ms-run-function-failed")
        ]
        return int(status), result.get_data(), ctype, headers
    if isinstance(result, bytes | bytearray):
        return 200, bytes(result), b"application/octet-stream", []
    return 200, dumps(result), _JSON, []


class ScoringApp:
    """ASGI app around one scorer (script or MLflow) in one worker process."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        stats: Stats,
        log: Log,
        runner: Runner | AsyncRunner,
        max_body: int,
        bytes_in_flight: int,
        collect: bool,
        sampling_rate: float,
        sink: collector.Sink | None,
        collections: str = "both",
        cors_origins: str | None = None,
        credential: bytes | None = None,
    ) -> None:
        self.scorer = scorer
        self.stats = stats
        self.log = log
        self.runner = runner
        # Exactly one is set: the hot path awaits only when run() happens off the loop.
        self._run_inline: Runner | None = None
        self._run_async: AsyncRunner | None = None
        if inspect.iscoroutinefunction(runner.__call__):
            self._run_async = cast(AsyncRunner, runner)
        else:
            self._run_inline = cast(Runner, runner)
        self.max_body = max_body
        self.budget = BytesInFlight(bytes_in_flight)
        self.replacing = False
        self.on_wedged: Callable[[], None] = lambda: None
        self.collect = collect and sink is not None
        # Which of the pair is written (``collect_collections``): both, or only one of them.
        self.collect_inputs = collections in ("both", "model_inputs")
        self.collect_outputs = collections in ("both", "model_outputs")
        self.sampling_rate = sampling_rate
        self.sink = sink
        self.ready = False
        self._timers: list[asyncio.TimerHandle] = []
        self._swagger: dict[str, bytes] = {}
        # CORS (Azure's AML_CORS_ORIGINS), parsed once: "*" or the listed origins.
        origins = [o.strip() for o in (cors_origins or "").split(",") if o.strip()]
        self._cors_any = "*" in origins
        self._cors = frozenset(o.encode("latin-1") for o in origins)
        self._cors_vary = not self._cors_any and len(self._cors) > 1
        #: The endpoint router's internal credential; None = no check (local serving).
        self.credential = credential

    # -- lifecycle -------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.ready = True
                self.stats.ready = 1
                self._tick()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                self.stats.ready = 0
                for timer in self._timers:
                    timer.cancel()
                self.flush()
                self.runner.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def flush(self) -> None:
        """Write buffered logs, collected records and the metrics snapshot."""
        if self.sink is not None:
            self.sink.flush()
        self.stats.write()
        self.log.flush()

    def _tick(self) -> None:
        """Every 0.25 s: flush logs; every 0.5 s collection; every 1 s metrics."""
        loop = asyncio.get_running_loop()
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            self.log.flush()
            if self.sink is not None and count % 2 == 0:
                self.sink.flush()
            if count % 4 == 0:
                self.stats.write()
            self._check_stuck()
            self._timers[:] = [loop.call_later(0.25, tick)]

        self._timers[:] = [loop.call_later(0.25, tick)]

    def _check_stuck(self) -> None:
        """Count runs past their timeout; drain and replace the worker once one is wedged."""
        runner, stats = self.runner, self.stats
        stuck = runner.stuck()
        if stuck != stats.runs_past_timeout:  # the other workers' /ready read it at once
            stats.runs_past_timeout = stuck
            stats.write()
        if runner.wedged() and not self.replacing:
            self.replacing = True
            self.ready = False
            self.stats.ready = 0
            self.log.event(
                "error",
                f"run() still running at twice request_timeout_ms in {self.scorer.source}; "
                "draining this worker to replace it",
                event="worker_wedged",
            )
            self.on_wedged()

    # -- requests ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.credential is not None and scope["path"] not in _OPEN:
                got = dict(scope["headers"]).get(CREDENTIAL_HEADER)
                if got is None or not hmac.compare_digest(got, self.credential):
                    await self._bypassed(scope, send)
                    return
            if scope["path"] == "/score" and scope["method"] == "POST":
                await self._score(scope, receive, send, None)
            else:
                await self._other(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _score(self, scope: Scope, receive: Receive, send: Send, raw: str | None) -> None:
        start = time.perf_counter()
        stats = self.stats
        stats.in_flight += 1
        content_type = length = rid_header = ms_rid = client_rid = origin = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"x-request-id":
                rid_header = value
            elif name[:5] == b"x-ms-":
                if name == b"x-ms-client-request-id":
                    client_rid = value
                elif name == b"x-ms-request-id":
                    ms_rid = value
            elif name == b"origin":
                origin = value
        request_id = request_id_from(rid_header)
        run_s: float | None = None
        extra: list[tuple[bytes, bytes]] = []
        close = ran = False
        held = 0
        body_read = raw is not None
        scorer = self.scorer
        request: AMLRequest | None = None
        try:
            if scorer.raw_http:  # @rawhttp: run(request) gets the body bytes and the rest
                body = b""
                if scope["method"] == "POST":
                    body = await read_body(receive, length, self.max_body, self.budget)
                    held, body_read = len(body), True
                request = AMLRequest(
                    scope["method"],
                    scope["path"],
                    scope.get("query_string", b""),
                    headers_from(scope["headers"]),
                    body,
                )
                raw = body.decode("utf-8", "replace")  # for collection only
            elif raw is None:
                if not scorer.any_content_type:
                    check_content_type(content_type)
                body = await read_body(receive, length, self.max_body, self.budget)
                held, body_read = len(body), True
                try:
                    raw = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadInput(f"request body is not UTF-8 text: {exc}") from exc
            rate = self.sampling_rate
            sampled = rate >= 1.0 or random.random() < rate
            headers = headers_from(scope["headers"]) if scorer.wants_headers else None
            call = scorer.call
            if request is not None:
                call = functools.partial(_call_request, scorer, request)
            ran = True
            try:
                run_inline = self._run_inline
                if run_inline is not None:
                    result, run_s = run_inline(call, raw, headers, request_id, sampled)
                else:
                    assert self._run_async is not None
                    result, run_s = await self._run_async(call, raw, headers, request_id, sampled)
            except ScoringError:
                raise
            except (Exception, SystemExit) as exc:  # SystemExit: sys.exit() in run() (a 500)
                error = scorer.classify(exc)
                if isinstance(exc, RecursionError) and nesting_depth(raw, 500) >= 500:
                    error = BadInput("request body is nested too deeply (RecursionError in run())")
                if error.status >= 500:
                    self.log.event(
                        "error",
                        f"run() raised {type(exc).__name__}: {exc}",
                        event="run_failed",
                        request_id=request_id,
                        script=scorer.source,
                        traceback=_traceback(exc),
                    )
                raise error from exc
            try:
                status, out, ctype, extra = encode_result(result)
            except (TypeError, ValueError) as exc:  # e.g. run() returned a set
                raise ScoringError(f"{exc}; return lists, dicts, numbers or strings", 500) from exc
            stats.run_seconds += run_s
            if sampled and self.collect:
                self._collect(raw, out, request_id, type(result) in (list, dict))
        except ScoringError as error:
            status, ctype = error.status, _JSON
            out = error_body(error.message, request_id)
            stats.error(_ERROR_KIND.get(status, str(status)))
            if isinstance(error, TimedOut):
                self.log.event(
                    "error",
                    error.message,
                    event="run_timeout",
                    request_id=request_id,
                    script=self.scorer.source,
                )
            close = status in (413, 429) and not body_read  # the body was not read
        except Exception as exc:  # encoding the result failed, say
            status, ctype = 500, _JSON
            out = error_body(
                f"the server failed to answer: {type(exc).__name__}; see server log", request_id
            )
            self.log.event(
                "error",
                f"{type(exc).__name__}: {exc}",
                event="server_error",
                request_id=request_id,
                traceback=_traceback(exc),
            )
            stats.error("server_error")
        rid = request_id.encode()
        failed = ran and status >= 500 and status != 503
        headers_out = [
            (b"content-type", ctype),
            (b"content-length", str(len(out)).encode()),
            (b"x-ms-run-function-failed", b"True" if failed else b"False"),
            *self._id_headers(rid, ms_rid, client_rid, origin),
        ]
        if run_s is not None:
            headers_out.append((b"x-ms-run-fn-exec-ms", f"{run_s * 1000:.3f}".encode()))
        if extra:
            headers_out.extend(extra)
        if close:
            headers_out.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers_out})
            await send({"type": "http.response.body", "body": out})
        finally:
            stats.in_flight -= 1
            self.budget.held -= held
        elapsed = time.perf_counter() - start
        stats.observe("/score", status, elapsed)
        if self.log.access_enabled:
            self.log.access(
                request_id,
                scope["method"],
                "/score",
                status,
                elapsed * 1000,
                None if run_s is None else run_s * 1000,
            )

    def _id_headers(
        self, rid: bytes, ms_rid: bytes | None, client_rid: bytes | None, origin: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """Request-id and CORS headers of every answer, as Microsoft's server sends them.

        ``x-ms-request-id`` echoes the caller's (deprecated) one, else the client request id,
        else the request id; ``x-ms-client-request-id`` is echoed when given (else the
        deprecated one). CORS headers go only to an allowed ``Origin``; ``Vary: Origin`` when
        several origins are allowed (flask-cors' rule).
        """
        legacy_given = client_request_id_from(ms_rid)
        client = client_request_id_from(client_rid) or legacy_given
        legacy: bytes = legacy_given or client or rid
        out = [(b"x-request-id", rid), (b"x-ms-request-id", legacy)]
        if client is not None:
            out.append((b"x-ms-client-request-id", client))
        if origin is not None and self._origin_allowed(origin):
            out.append((b"access-control-allow-origin", b"*" if self._cors_any else origin))
            if self._cors_vary:
                out.append((b"vary", b"Origin"))
        return out

    def _origin_allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self._cors_any or origin in self._cors)

    def _collect(self, raw: str, out: bytes, request_id: str, out_is_json: bool) -> None:
        """Queue the request's input and output (``model_inputs``/``model_outputs``; only the
        enabled ones are encoded).

        A JSON body is stored as JSON (re-encoded only if it spans lines); anything else as a
        string. Output our encoder produced is JSON on one line already.
        """
        data_in = data_out = None
        if self.collect_inputs:
            try:
                _JSON_CHECK.decode(raw)
                data_in = (
                    raw if "\n" not in raw and "\r" not in raw else json.dumps(json.loads(raw))
                )
            except ValueError:
                data_in = json.dumps(raw)
        if self.collect_outputs:
            if out_is_json:
                data_out = out.decode()
            else:
                try:
                    data_out = json.dumps(json.loads(out))
                except ValueError:
                    data_out = json.dumps(out.decode(errors="replace"))
        assert self.sink is not None  # self.collect says so
        self.sink.record_pair(request_id, data_in, data_out)

    async def _bypassed(self, scope: Scope, send: Send) -> None:
        """401 for a request without the router's credential: it did not come through the
        endpoint (a pod calling the deployment's Service directly)."""
        found = dict(scope["headers"])
        request_id = request_id_from(found.get(b"x-request-id"))
        body = error_body(
            "this deployment answers only requests from its endpoint's router; the request "
            "bypassed the endpoint (missing or wrong x-ml-endpoints-credential); call the "
            "endpoint's scoring URI instead",
            request_id,
        )
        headers = self._id_headers(
            request_id.encode(),
            found.get(b"x-ms-request-id"),
            found.get(b"x-ms-client-request-id"),
            found.get(b"origin"),
        )
        headers += [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        route = _ROUTES.get(scope["path"], "other")
        self.stats.observe(route, 401, 0.0)
        if self.log.access_enabled:
            self.log.access(request_id, scope["method"], route, 401, 0.0, None)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        route = _ROUTES.get(path, "other")
        found = dict(scope["headers"])
        request_id = request_id_from(found.get(b"x-request-id"))
        headers = self._id_headers(
            request_id.encode(),
            found.get(b"x-ms-request-id"),
            found.get(b"x-ms-client-request-id"),
            found.get(b"origin"),
        )
        if route == "/score":
            headers.append((b"x-ms-run-function-failed", b"False"))
        try:
            if route == "/score":
                if method == "GET":  # values parsed as JSON where they are, as Microsoft's
                    raw = json.dumps(query_args(scope.get("query_string", b"")))
                    await self._score(scope, receive, send, raw)
                    return
                if method == "OPTIONS":
                    status, ctype, body = 200, _HTML, b""
                    headers.append((b"allow", b"GET, POST, OPTIONS"))
                    if self._origin_allowed(found.get(b"origin")):
                        headers += self._preflight(found)
                else:
                    raise MethodNotAllowed(f"{method} /score is not allowed; use POST", 405)
            elif method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{method} {path} is not allowed; use GET", 405)
            elif route == "/":
                status, ctype, body = 200, _HTML, b"Healthy"
            elif route == "/ready":
                self.stats.runs_past_timeout = self.runner.stuck()
                if self.stats.stuck_in_pod():
                    raise ScoringError(
                        "a run() is still running past request_timeout_ms in this pod, "
                        "holding its slot; its worker is replaced if it does not return",
                        503,
                    )
                if not self.ready:
                    raise ScoringError("init() has not finished in this worker", 503)
                status, ctype, body = 200, _TEXT, b"Ready"
            elif route == "/swagger.json":
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                version = pick_version(query.get("version"))
                if version not in self._swagger:
                    doc = self.scorer.swagger(version)
                    self._swagger[version] = json.dumps(doc).encode()  # as azmlinfsrv
                status, ctype, body = 200, _JSON, self._swagger[version]
            elif route == "/metrics":
                self.stats.runs_past_timeout = self.runner.stuck()  # now, not at the last tick
                status, ctype, body = 200, _METRICS, self.stats.render()
            else:
                raise NotFound(
                    f"no route {path!r}; try POST /score, GET /, GET /ready, "
                    "GET /swagger.json or GET /metrics",
                    404,
                )
        except ScoringError as error:
            status, ctype, body = error.status, _JSON, error_body(error.message, request_id)
        headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if method != "HEAD" else b""})
        elapsed = time.perf_counter() - start
        self.stats.observe(route, status, elapsed)
        # Passing probes are not logged: the kubelet asks every few seconds and would bury the
        # requests in `ml-endpoints logs`. A failing probe is logged, and /metrics counts all.
        if self.log.access_enabled and not (status == 200 and route in _PROBES):
            self.log.access(request_id, method, route, status, elapsed * 1000, None)

    @staticmethod
    def _preflight(found: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """A CORS preflight's answer headers (origin already allowed), as flask-cors sends."""
        out = [(b"access-control-allow-methods", b"GET, POST")]
        asked = found.get(b"access-control-request-headers")
        if asked:
            out.append((b"access-control-allow-headers", asked))
        return out


def _call_request(scorer: Scorer, request: AMLRequest, raw: str, headers: Any) -> Any:
    """``run(request)`` of a ``@rawhttp`` script, shaped as the runners call a ``Score``."""
    return scorer.call_request(request)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
