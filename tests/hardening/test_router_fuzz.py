"""Property-based fuzzing (hypothesis) of what the router parses: client bytes and config files.

Request parsing: arbitrary bytes, and mutated well-formed requests, split at arbitrary
points, fed to a real ``HttpProtocol`` (real httptools parser, real ``Router``) through a
transport stub, with an upstream stub that answers every proxied request. Whatever arrives, the
connection writes only well-formed HTTP responses, never raises, never writes after closing,
and answers every complete request unless it closed. Config loading: any JSON (or any text)
gives a ``RouterConfig`` or a ``ConfigError`` whose every line names a field. Each property
runs a bounded number of examples (about 20 s each here).
"""

from __future__ import annotations

import contextlib
import json
import os
import string

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scoring.router.config import ConfigError, RouterConfig, Secrets, parse_config
from scoring.router.dispatch import Router, RouterState
from scoring.router.protocol import HttpProtocol
from scoring.router.upstream import Headers, OnDone, Target, UpstreamResponse
from tests.support.router import KEY1, StubTransport, cfg

pytestmark = [pytest.mark.router, pytest.mark.hardening]


def fuzz(examples: int) -> settings:
    """A bounded run: ``examples`` cases, no per-case deadline, no example database on disk.

    ``print_blob``: a failure (in CI too) prints the line that replays it with
    ``@reproduce_failure``, since without a database nothing else remembers it.
    ``derandomize`` in CI (``ML_ENDPOINTS_FUZZ_FIXED`` set, as ``.ci/run`` does): a landing is
    judged on the same inputs every time; everyone else's runs explore new inputs, and what
    they find becomes an ``@example`` here.
    """
    return settings(
        max_examples=examples,
        derandomize=bool(os.environ.get("ML_ENDPOINTS_FUZZ_FIXED")),
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Statuses a client may get from the router itself or through it (the stub upstream: 200).
STATUSES = {200, 400, 401, 404, 405, 408, 413, 414, 431, 500, 503}


class _Upstream:
    """Answers every request, after ``send`` returned (as the contract says)."""

    def __init__(self) -> None:
        self.waiting: list[OnDone] = []

    def send(
        self,
        target: Target,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: bytes,
        timeout: float,
        on_done: OnDone,
    ) -> None:
        self.waiting.append(on_done)

    def flush(self) -> None:
        while self.waiting:
            self.waiting.pop(0)(UpstreamResponse(200, [(b"x-up", b"1")], b'{"ok": 1}'), None)

    async def aclose(self) -> None: ...


def _router() -> tuple[Router, _Upstream]:
    config = RouterConfig.model_validate(
        cfg({"blue": "http://127.0.0.1:9"}, {"blue": 100}, max_body_bytes=4096)
    )
    upstream = _Upstream()
    router = Router(RouterState.build(config, Secrets(KEY1.encode(), None, None)), upstream)
    return router, upstream


class _Methods:
    """The method of each request in what a client sent, in order: ``None`` until its head is
    complete (the router answers a HEAD without a body only once its head is complete)."""

    def __init__(self, sent: bytes) -> None:
        self.methods: list[bytes | None] = []
        self._parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(httptools.HttpParserError):  # the router stops at that byte
            self._parser.feed_data(sent)

    def on_message_begin(self) -> None:
        self.methods.append(None)

    def on_headers_complete(self) -> None:
        self.methods[-1] = self._parser.get_method()


class _Responses:
    """Parses what the router wrote: complete responses, and whether any is left unfinished.

    As a client does, it knows which answers are to a HEAD (``methods``): those end with their
    headers (httptools' response parser cannot be told so: each response gets its own parser,
    fed the head, then the content-length bytes of body unless it answers a HEAD).
    """

    def __init__(self, methods: list[bytes | None] | None = None) -> None:
        self.statuses: list[int] = []
        self.done = True
        self._methods = methods or []
        self._parser = httptools.HttpResponseParser(self)
        self._length = 0
        self._complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length":
            self._length = int(value)

    def on_message_complete(self) -> None:
        self._complete = True

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self.done = False
                return
            self._parser = httptools.HttpResponseParser(self)
            self._length, self._complete = 0, False
            self._parser.feed_data(data[pos : end + 4])  # well-formed HTTP, or this raises
            pos = end + 4
            status = self._parser.get_status_code()
            if status == 100:  # 100 Continue is interim: the answer follows
                continue
            answered = len(self.statuses)
            self.statuses.append(status)
            if answered < len(self._methods) and self._methods[answered] == b"HEAD":
                assert not self._complete or self._length == 0
                continue  # headers only
            self._parser.feed_data(data[pos : pos + self._length])
            pos += self._length
            if not self._complete:
                self.done = False
                return


def _feed(chunks: list[bytes]) -> tuple[Router, HttpProtocol, StubTransport]:
    """``chunks`` fed to a fresh connection, the upstream answering after each one."""
    router, upstream = _router()
    conns: set[HttpProtocol] = set()
    proto = HttpProtocol(router, conns)
    transport = StubTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        if transport.closed:
            break
        proto.data_received(chunk)  # never raises
        upstream.flush()
    return router, proto, transport


def _check(chunks: list[bytes], complete_requests: int | None) -> None:
    router, _, transport = _feed(chunks)
    out = _Responses(_Methods(b"".join(chunks)).methods)
    out.feed(bytes(transport.out))  # well-formed HTTP, or this raises
    assert out.done, f"an unfinished response: {bytes(transport.out)[-200:]!r}"
    assert set(out.statuses) <= STATUSES, out.statuses
    if complete_requests is not None and not transport.closed:
        assert len(out.statuses) == complete_requests
    assert router.in_flight == 0


_token = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_value = st.one_of(
    st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=40),
    st.sampled_from(["chunked", "100-continue", f"Bearer {KEY1}", "Bearer nope", "5", "-1"]),
)
_header = st.tuples(
    st.one_of(
        _token,
        st.sampled_from(
            [
                "Content-Length",
                "Transfer-Encoding",
                "Authorization",
                "Expect",
                "x-request-id",
                "azureml-model-deployment",
                "Connection",
            ]
        ),
    ),
    _value,
)


#: Headers that frame a body. The framing is chosen below; one drawn at random (with any value,
#: in any case, e.g. ``Transfer-Encoding: CHUNKED`` or ``Content-Length: 5`` on a request
#: sent without a body) may announce a body that never comes or swallow the next request.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


@st.composite
def _request(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A request, and whether its framing is the one chosen here (no drawn framing header)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "BREW"]))
    path = draw(
        st.one_of(
            st.sampled_from(["/score", "/", "/ready", "/metrics", "/swagger.json", "/nope"]),
            st.text(string.printable.replace(" ", ""), max_size=30).map(lambda p: "/" + p),
        )
    )
    headers = draw(st.lists(_header, max_size=6))
    framed_here = not any(k.lower() in _FRAMING for k, _ in headers)
    if draw(st.booleans()):
        headers.append(("Authorization", f"Bearer {KEY1}"))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        body = b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1", "replace") + b"\r\n" + body, framed_here


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """Requests back to back, sometimes mutated (then the count of answers is unknown).

    So is the count when a request carries a drawn framing header: where it ends is then up
    to the parser (it may still be waiting for a body, which is right: the body timeout
    answers that; see ``test_a_body_announced_and_not_sent_is_waited_for``).
    """
    reqs = draw(st.lists(_request(), min_size=1, max_size=4))
    data = b"".join(r for r, _ in reqs)
    n: int | None = len(reqs) if all(exact for _, exact in reqs) else None
    mutate = draw(st.sampled_from(["none", "flip", "insert", "cut", "raw"]))
    if mutate == "raw":
        return draw(st.binary(min_size=1, max_size=600)), None
    if mutate != "none":
        n = None
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=8))
        if mutate == "flip":
            data = data[:at] + junk + data[at + len(junk) :]
        elif mutate == "insert":
            data = data[:at] + junk + data[at:]
        else:
            data = data[:at]
    return data, n


@st.composite
def _chunks(draw: st.DrawFn) -> tuple[list[bytes], int | None]:
    data, n = draw(_stream())
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    parts, last = [], 0
    for cut in [*cuts, len(data)]:
        parts.append(data[last:cut])
        last = cut
    return [p for p in parts if p], n


#: Inputs that once failed the property below: a drawn framing header announced a body that
#: was not sent, and the test expected an answer the router rightly does not give yet.
_BODY_NEVER_SENT = [
    b"GET /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n"
    b"Authorization: Bearer " + KEY1.encode() + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
]


@fuzz(1000)
@given(_chunks())
@example(([_BODY_NEVER_SENT[0]], None))
@example(([_BODY_NEVER_SENT[1]], None))
# A HEAD whose request line breaks after the target began: its 400 carries a body, however
# the bytes were split (found by this test in CI).
@example(([b"HEAD /", b"\x00core HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"], None))
@example(([b"HEAD /\x00core HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"], None))
def test_any_bytes_get_well_formed_answers_or_a_clean_close(
    case: tuple[list[bytes], int | None],
) -> None:
    chunks, n = case
    _check(chunks, n)


@pytest.mark.parametrize("head", _BODY_NEVER_SENT, ids=["chunked", "content-length"])
def test_a_body_announced_and_not_sent_is_waited_for(head: bytes) -> None:
    """The router answers a request once its body is in, not before; the body timeout ends it."""
    router, proto, transport = _feed([head])
    assert transport.out == b"" and not transport.closed
    assert not proto.idle  # half received: a drain waits for it
    limits = router.state.config
    proto.check_time(limits, proto.last_active + limits.body_timeout_ms / 1000 + 1)
    assert transport.closed
    out = _Responses()
    out.feed(bytes(transport.out))
    assert out.done and out.statuses == [408], bytes(transport.out)
    assert b"request body did not arrive within body_timeout_ms" in bytes(transport.out)


# -- config loading ------------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_fields = sorted(RouterConfig.model_fields)
_names = st.sampled_from(["blue", "green", "Blue", "", "a" * 70, "9x"])
_deployment = st.fixed_dictionaries(
    {
        "url": st.sampled_from(
            ["http://blue:5001", "https://x", "http://", "ftp://y", "http://h:99999"]
        )
        | st.text(max_size=10)
    },
    optional={"idempotent": st.booleans() | _json},
)
_value_for = {
    "endpoint_name": _names | _json,
    "auth_mode": st.sampled_from(["key", "aml_token", "none", "KEY"]) | _json,
    "deployments": st.dictionaries(_names, _deployment | _json, max_size=3) | _json,
    "traffic": st.dictionaries(_names, st.integers(-10, 120), max_size=3) | _json,
    "mirror_traffic": st.dictionaries(_names, st.integers(-10, 120), max_size=3) | _json,
}


@st.composite
def _config(draw: st.DrawFn) -> dict:
    keys = draw(st.lists(st.sampled_from([*_fields, "trafic", "extra"]), max_size=8, unique=True))
    out = {}
    for key in keys:
        strategy = _value_for[key] if key in _value_for else st.integers(-5, 2**31) | _json
        out[key] = draw(strategy)
    return out


def _names_a_field(line: str, data: dict) -> bool:
    keys = [str(k) for k in data] + list(RouterConfig.model_fields)
    return any(line.startswith(k + ".") or line.startswith(k + ":") for k in keys)


@fuzz(1200)
@given(_config())
def test_any_config_gives_a_config_or_errors_that_name_their_field(data: dict) -> None:
    try:
        parse_config(json.dumps(data), "router.json")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        bad = [p for p in exc.problems if not _names_a_field(p, data)]
        assert not bad, bad


@fuzz(600)
@given(st.one_of(st.text(max_size=80), _json.map(json.dumps)))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "router.json")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
