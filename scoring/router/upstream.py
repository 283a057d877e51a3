"""How the router reaches deployments: one small interface, a pooled client, one error mapping.

``UpstreamClient`` is the only thing the router calls (tests may inject another
implementation). ``PooledClient`` keeps keep-alive HTTP/1.1 connections per deployment
address, parses responses with httptools and runs on the router's (uv)loop: measured here,
the client library on the hot path decides the router's speed (ENVIRONMENT.md), so this is
deliberately lean. ``upstream_failure`` is the one place connect errors, timeouts and pool
exhaustion become 502/504/503 with a message naming the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Target:
    """A deployment as the client sees it: name (for messages), address and path prefix."""

    name: str
    url: str
    host: str
    port: int
    prefix: bytes
    host_header: bytes
    name_bytes: bytes

    @classmethod
    def from_url(cls, name: str, url: str) -> Target:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        prefix = parts.path.rstrip("/").encode()
        host_header = (f"{host}:{port}" if parts.port else host).encode()
        return cls(name, url, host, port, prefix, host_header, name.encode())


class UpstreamResponse(NamedTuple):
    status: int
    headers: Headers
    body: bytes


class UpstreamError(Exception):
    """A deployment did not give a response. ``kind``: connect, timeout, pool or closed."""

    def __init__(self, kind: str, target: Target, detail: str = "") -> None:
        self.kind = kind
        self.target = target
        self.detail = detail
        super().__init__(f"{kind}: {target.name} ({target.url}) {detail}".strip())


OnDone = Callable[[UpstreamResponse | None, "UpstreamError | None"], None]


class UpstreamClient(Protocol):
    """Send one request to one deployment; the router needs nothing else from the network.

    Callback-shaped on purpose: the router's hot path then needs no task, future or
    coroutine per request.
    """

    def send(
        self,
        target: Target,
        method: bytes,
        path: bytes,  # relative to the target: its prefix is added
        headers: Headers,  # forwarded, less hop-by-hop and credential headers
        body: bytes,
        timeout: float,  # seconds, from now until the whole response
        on_done: OnDone,  # called exactly once, never before send returns
    ) -> None:
        """Start the request; later call ``on_done(response, None)`` or ``(None, error)``."""
        ...

    async def aclose(self) -> None:
        """Close every connection (after the last request finished)."""
        ...


def upstream_failure(exc: UpstreamError) -> tuple[int, str]:
    """The status and message a client gets when a deployment gave no response."""
    t = exc.target
    if exc.kind == "timeout":
        return 504, f"deployment {t.name!r} did not answer within {exc.detail}"
    if exc.kind == "pool":
        return 503, (f"deployment {t.name!r} has all {exc.detail} connections busy; retry later")
    if exc.kind == "connect":
        return 502, f"deployment {t.name!r} is unreachable: {exc.detail}"
    return 502, f"deployment {t.name!r} closed the connection before answering: {exc.detail}"


#: Keep-alive connections to a deployment are replaced after this many seconds (the default of
#: ``RouterLimits.upstream_connection_max_age_ms``).
MAX_AGE_S = 1.0


@dataclass(slots=True, eq=False)  # eq=False: waiters are removed by identity
class _Job:
    """One request waiting for, or using, a connection."""

    target: Target
    data: bytes
    timeout: float
    deadline: float
    on_done: OnDone
    retried: bool = False
    timer: asyncio.TimerHandle | None = None


class _Conn(asyncio.Protocol):
    """One keep-alive connection to a deployment; one request at a time."""

    __slots__ = (
        "_body",
        "_got",
        "_headers",
        "_parser",
        "born",
        "closed",
        "deadlines",
        "job",
        "loop",
        "pool",
        "transport",
        "uses",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.born = pool.loop.time()
        self.deadlines = pool.deadlines
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.job: _Job | None = None
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._got = False
        self.closed = False
        self.uses = 0

    def start(self, job: _Job) -> None:
        self.job = job
        self.uses += 1
        self._got = False
        self.deadlines.add(self)
        self.transport.write(job.data)  # type: ignore[union-attr]

    def _finish(self, resp: UpstreamResponse | None, err: UpstreamError | None) -> None:
        job, self.job = self.job, None
        self.deadlines.busy.discard(self)
        if job is not None:
            job.on_done(resp, err)

    def expire(self) -> None:
        """The request's deadline passed (called by ``_Deadlines``): close and report 504."""
        job = self.job
        self.close()
        if job is not None:
            self.job = None
            job.on_done(None, UpstreamError("timeout", job.target, f"{job.timeout * 1000:.0f} ms"))

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            job = self.job
            self.close()
            if job is not None:
                self._finish(
                    None, UpstreamError("closed", job.target, f"bad HTTP response ({exc})")
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        job = self.job
        if job is None:
            return
        if self.uses > 1 and not self._got and not job.retried:
            # A kept-alive connection the server closed before answering: retry once, fresh.
            self.job = None
            self.deadlines.busy.discard(self)
            job.retried = True
            self.pool.submit(job)
            return
        self._finish(
            None, UpstreamError("closed", job.target, str(exc) if exc else "connection closed")
        )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # an interim response (100 Continue, 103): the real one follows
            self._headers, self._body = [], []
            return
        resp = UpstreamResponse(status, self._headers, b"".join(self._body))
        self._headers, self._body = [], []
        keep = parser.should_keep_alive()
        job, self.job = self.job, None
        self.deadlines.busy.discard(self)
        if keep:
            self.pool.release(self)
        else:
            self.close()
        if job is not None:
            job.on_done(resp, None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Deadlines:
    """Request timeouts for every busy connection, checked every ``TICK`` seconds.

    One sweep timer instead of a ``call_at`` + ``cancel`` per request (~2 µs each, measured):
    a timeout fires between ``timeout`` and ``timeout + TICK`` after the request was sent.
    The timer only runs while some request is in flight.
    """

    TICK = 0.01

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.busy: set[_Conn] = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, conn: _Conn) -> None:
        self.busy.add(conn)
        if self.handle is None:
            self.handle = self.loop.call_later(self.TICK, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        expired = [c for c in self.busy if c.job is None or c.job.deadline <= now]
        for conn in expired:
            self.busy.discard(conn)
            if conn.job is not None:
                conn.expire()
        self.handle = self.loop.call_later(self.TICK, self._sweep) if self.busy else None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


@dataclass(eq=False)
class _Pool:
    """Keep-alive connections to one address, at most ``limit`` open at once."""

    loop: asyncio.AbstractEventLoop
    target: Target
    limit: int
    connect_timeout: float
    deadlines: _Deadlines
    max_age: float = MAX_AGE_S
    idle: list[_Conn] = field(default_factory=list)
    open: int = 0
    waiters: deque[_Job] = field(default_factory=deque)
    closing: bool = False
    connecting: set[asyncio.Task[None]] = field(default_factory=set)

    def submit(self, job: _Job) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.start(job)
                return
        if self.open < self.limit:
            self._connect(job)
            return
        # Getting a connection (new or freed) is bounded by connect_timeout, like a connect.
        wait = min(job.deadline - self.loop.time(), self.connect_timeout)
        job.timer = self.loop.call_later(max(wait, 0), self._waited_too_long, job)
        self.waiters.append(job)

    def _waited_too_long(self, job: _Job) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(job)
            job.on_done(None, UpstreamError("pool", job.target, str(self.limit)))

    def _connect(self, job: _Job) -> None:
        self.open += 1
        task = self.loop.create_task(self._open(job))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _open(self, job: _Job) -> None:
        timeout = min(self.connect_timeout, max(job.deadline - self.loop.time(), 0))
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Conn(self), self.target.host, self.target.port
                ),
                timeout,
            )
        except TimeoutError:
            self._slot_freed()
            job.on_done(
                None,
                UpstreamError(
                    "connect", job.target, f"no connection within {timeout * 1000:.0f} ms"
                ),
            )
            return
        except OSError as exc:
            self._slot_freed()
            job.on_done(None, UpstreamError("connect", job.target, exc.strerror or str(exc)))
            return
        except BaseException:
            self._slot_freed()
            raise
        sock = conn.transport.get_extra_info("socket")  # type: ignore[union-attr]
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.start(job)

    def release(self, conn: _Conn) -> None:
        """Reuse a connection after a complete response: next waiter first, else idle.

        Connections older than ``max_age`` seconds are closed instead: behind a Kubernetes Service
        each TCP connection sticks to one pod, so recycling them spreads traffic onto pods
        that appeared since (scale-out, rollout).
        """
        if conn.closed or self.closing or self.loop.time() - conn.born > self.max_age:
            conn.close()
            return
        waiters = self.waiters
        if waiters:
            job = waiters.popleft()
            if job.timer is not None:
                job.timer.cancel()
            conn.start(job)
            return
        self.idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        """A connection closed: drop it and let a waiter open a new one."""
        if conn in self.idle:
            self.idle.remove(conn)
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.open -= 1
        if self.waiters and not self.closing and self.open < self.limit:
            job = self.waiters.popleft()
            if job.timer is not None:
                job.timer.cancel()
            self._connect(job)

    def close_idle(self) -> None:
        self.closing = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"content-length",
        b"host",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"authorization",
        b"expect",
    }
)


def encode_request(
    target: Target, method: bytes, path: bytes, headers: Headers, body: bytes
) -> bytes:
    """The HTTP/1.1 request bytes: hop-by-hop and credential headers are not forwarded."""
    hop = _HOP
    lines = b"".join([b"%s: %s\r\n" % h for h in headers if h[0] not in hop])
    return b"%s %s%s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        method,
        target.prefix,
        path,
        target.host_header,
        len(body),
        lines,
        body,
    )


class PooledClient:
    """The production ``UpstreamClient``: keep-alive pools keyed by deployment address."""

    def __init__(
        self, max_connections: int = 256, connect_timeout: float = 2.0, max_age: float = MAX_AGE_S
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_age = max_age
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._retired: list[_Pool] = []
        self._deadlines: _Deadlines | None = None

    def _pool(self, target: Target) -> _Pool:
        key = (target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            loop = asyncio.get_running_loop()
            if self._deadlines is None:
                self._deadlines = _Deadlines(loop)
            pool = self._pools[key] = _Pool(
                loop,
                target,
                self.max_connections,
                self.connect_timeout,
                self._deadlines,
                self.max_age,
            )
        return pool

    def configure(
        self, max_connections: int, connect_timeout: float, max_age: float = MAX_AGE_S
    ) -> None:
        """New limits from a reloaded config; open pools use them from now on."""
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_age = max_age
        for pool in self._pools.values():
            pool.limit = max_connections
            pool.connect_timeout = connect_timeout
            pool.max_age = max_age

    def retire(self, keep: set[tuple[str, int]]) -> None:
        """Close idle connections to addresses no deployment uses any more.

        Busy connections finish their request first, then close on release.
        """
        for key in [k for k in self._pools if k not in keep]:
            pool = self._pools.pop(key)
            pool.close_idle()
            self._retired.append(pool)

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
        pool = self._pools.get((target.host, target.port)) or self._pool(target)
        data = encode_request(target, method, path, headers, body)
        job = _Job(target, data, timeout, pool.loop.time() + timeout, on_done)
        pool.submit(job)

    async def aclose(self) -> None:
        for pool in [*self._pools.values(), *self._retired]:
            pool.close_idle()
            for task in list(pool.connecting):
                task.cancel()
        self._pools.clear()
        self._retired.clear()
        if self._deadlines is not None:
            self._deadlines.close()
        await asyncio.sleep(0)
