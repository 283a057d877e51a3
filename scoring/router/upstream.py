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
from dataclasses import dataclass, field, replace
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
    idempotent: bool = False  # a request that may have reached run() may be sent again

    @classmethod
    def from_url(cls, name: str, url: str, idempotent: bool = False) -> Target:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        prefix = parts.path.rstrip("/").encode()
        host_header = (f"{host}:{port}" if parts.port else host).encode()
        return cls(name, url, host, port, prefix, host_header, name.encode(), idempotent)


class UpstreamResponse(NamedTuple):
    status: int
    headers: Headers
    body: bytes


class UpstreamError(Exception):
    """A deployment did not give a usable response. ``kind``: connect, timeout, pool, closed,
    too_large (over ``max_response_bytes``), protocol (a response to no request of ours) or
    memory (the router holds ``max_buffered_bytes`` already)."""

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
    if exc.kind == "too_large":
        return 502, (
            f"deployment {t.name!r} answered with more than max_response_bytes "
            f"({exc.detail}); its connection was closed"
        )
    if exc.kind == "protocol":
        return 502, f"deployment {t.name!r} broke HTTP framing: {exc.detail}; connection closed"
    if exc.kind == "memory":
        return 503, (
            f"the router holds max_buffered_bytes ({exc.detail}) of bodies already; retry later"
        )
    return 502, f"deployment {t.name!r} closed the connection before answering: {exc.detail}"


#: Keep-alive connections to a deployment are replaced after this many seconds (the default of
#: ``RouterLimits.upstream_connection_max_age_ms``).
MAX_AGE_S = 1.0
#: A connection idle longer than this is not reused: the deployment may be closing it (its
#: keep-alive timeout, uvicorn's 5 s), and a request written into that race could not be
#: told apart from one that reached run(), so it could not be retried.
IDLE_REUSE_S = 2.0


class Budget:
    """Body bytes the process holds (requests being received or sent, responses being read),
    against ``limit`` (``max_buffered_bytes``). Plain ints: the router is one thread."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


@dataclass(slots=True, eq=False)  # eq=False: waiters are removed by identity
class _Job:
    """One request waiting for, or using, a connection."""

    target: Target
    data: bytes
    timeout: float
    deadline: float
    on_done: OnDone
    pool: _Pool  # whose ``active`` count this request is in, until it finishes
    rid: bytes = b""  # the x-request-id sent; a response carrying another one is not ours
    retried: bool = False
    timer: asyncio.TimerHandle | None = None

    def finish(self, resp: UpstreamResponse | None, err: UpstreamError | None) -> None:
        """Leave the pool's in-flight count, then report (the one way a request ends)."""
        self.pool.active -= 1
        self.on_done(resp, err)

    def move(self, pool: _Pool) -> None:
        """Count this request against ``pool`` from now on (sent again, or to another pod)."""
        self.pool.active -= 1
        pool.active += 1
        self.pool = pool


class _Conn(asyncio.Protocol):
    """One keep-alive connection to a deployment; one request at a time.

    A connection is handed to the next request only after a complete response to the current
    one, with no byte beyond it: anything else (a second response, bytes while idle, a
    response carrying the previous request's ``x-request-id``) closes it, so one response
    never reaches two requests. (A deployment may set its own ids: only the previous
    request's id marks a stale answer.)
    """

    __slots__ = (
        "_body",
        "_done",
        "_framed",
        "_got",
        "_headers",
        "_in_head",
        "_keep",
        "_parser",
        "_prev_rid",
        "_rid",
        "_size",
        "born",
        "closed",
        "deadlines",
        "idle_since",
        "job",
        "loop",
        "pool",
        "transport",
        "uses",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.born = self.idle_since = pool.loop.time()
        self.deadlines = pool.deadlines
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.job: _Job | None = None
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._size = 0
        self._got = False
        self._in_head = True
        self._framed = False
        self._rid: bytes | None = None
        self._prev_rid = b""  # the id of the request answered before the current one
        self._done: UpstreamResponse | None = None
        self._keep = False
        self.closed = False
        self.uses = 0

    def start(self, job: _Job) -> None:
        self.job = job
        self.uses += 1
        self._got = False
        self._in_head = True  # until this request's response has its headers
        self.deadlines.add(self)
        self.transport.write(job.data)  # type: ignore[union-attr]

    def _fail(self, kind: str, detail: str) -> None:
        """Close, and report ``kind`` to the request waiting here (if any)."""
        job, self.job = self.job, None
        self.close()
        if job is not None:
            self.deadlines.busy.discard(self)
            job.finish(None, UpstreamError(kind, job.target, detail))

    def expire(self) -> None:
        """The request's deadline passed (called by ``_Deadlines``): close and report 504."""
        job = self.job
        if job is not None:
            self._fail("timeout", f"{job.timeout * 1000:.0f} ms")

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.job is None:  # bytes nobody asked for (an unsolicited response): never reuse
            self.close()
            return
        self._got = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._body = []
            self._release_budget()
            if self._done is None:  # else: garbage after a complete response, delivered below
                cause = exc.__context__
                if isinstance(cause, _TooLarge):
                    self._fail("too_large", str(self.pool.max_response))
                elif isinstance(cause, _OutOfMemory):
                    self._fail("memory", str(self.pool.budget.limit))
                else:
                    self._fail("closed", f"bad HTTP response ({exc})")
            self.close()
        resp = self._done
        if resp is None:
            return
        self._done = None
        job, self.job = self.job, None
        self.deadlines.busy.discard(self)
        if job is not None:
            self._prev_rid = job.rid
        if self._keep and not self.closed:
            self.idle_since = self.loop.time()
            self.pool.release(self)
        else:
            self.close()
        if job is not None:
            job.finish(resp, None)

    def connection_lost(self, exc: Exception | None) -> None:
        job = self.job
        if job is not None and not self._in_head and not self._framed and self._done is None:
            # A close-delimited response (no length, not chunked): its end is this close.
            self.on_message_complete()
        self.closed = True
        self.pool.forget(self)
        self._release_budget()
        resp, self._done = self._done, None
        self.job = None
        if job is None:
            return
        self.deadlines.busy.discard(self)
        if resp is not None:
            job.finish(resp, None)
        elif job.target.idempotent and not self._got and not job.retried:
            # Closed before any answer; the deployment says a replay is harmless: once, fresh
            # (to another ready pod when the deployment's pods are known).
            job.retried = True
            self.pool.resubmit(job)
        else:
            # The request may have reached run(): never sent again (a poison request would
            # take a second worker down).
            reason = str(exc) if exc else "connection closed"
            job.finish(None, UpstreamError("closed", job.target, reason))

    def _release_budget(self) -> None:
        if self._size:
            self.pool.budget.used -= self._size
            self._size = 0

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._done is not None:  # a second response in one read: close after the first
            self.close()
        self._in_head = True
        self._framed = False
        self._rid = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: never merged into the headers
        n = len(name)
        if n == 12 and name.lower() == b"x-request-id":
            self._rid = value
        elif n == 14 and name.lower() == b"content-length":
            self._framed = True
            if int(value) > self.pool.max_response:
                raise _TooLarge
        elif n == 17 and name.lower() == b"transfer-encoding":
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False

    def on_body(self, body: bytes) -> None:
        n = len(body)
        self._size += n
        budget = self.pool.budget
        budget.used += n
        if self._size > self.pool.max_response:
            raise _TooLarge
        if budget.used > budget.limit:
            raise _OutOfMemory
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers, body = self._headers, self._body
        self._headers, self._body = [], []
        self._release_budget()
        if status < 200:  # an interim response (100 Continue, 103): the real one follows
            return
        job = self.job
        if job is None or self._done is not None:
            self.close()  # nobody waits for this one
            return
        rid = self._rid
        if rid is not None and rid == self._prev_rid and rid and rid != job.rid:
            self._fail(
                "protocol",
                f"it answered x-request-id {rid.decode('latin-1')!r} to request "
                f"{job.rid.decode('latin-1')!r}",
            )
            return
        self._keep = parser.should_keep_alive()
        self._done = UpstreamResponse(status, headers, b"".join(body))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _TooLarge(Exception):
    """Raised from a parser callback: the response passed ``max_response_bytes``."""


class _OutOfMemory(Exception):
    """Raised from a parser callback: the process holds ``max_buffered_bytes`` already."""


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
    budget: Budget
    max_response: int
    max_age: float = MAX_AGE_S
    idle: list[_Conn] = field(default_factory=list)
    open: int = 0
    waiters: deque[_Job] = field(default_factory=deque)
    closing: bool = False
    connecting: set[asyncio.Task[None]] = field(default_factory=set)
    active: int = 0  # requests sent here and not finished (waiting, writing or answered)
    route: _Route | None = None  # the deployment's ready pods, when this pool is one of them

    def resubmit(self, job: _Job) -> None:
        """Send ``job`` once more (nothing of it was answered): to another ready pod of the
        deployment when there is one, else here."""
        pool = (self.route.pick(avoid=self) if self.route is not None else None) or self
        if pool is not self:
            job.move(pool)
        pool.submit(job)

    def submit(self, job: _Job) -> None:
        idle = self.idle
        if idle:
            stale = self.loop.time() - IDLE_REUSE_S
            while idle:
                conn = idle.pop()
                if conn.closed or conn.idle_since < stale or conn.transport.is_closing():  # type: ignore[union-attr]
                    conn.close()
                    continue
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
            job.finish(None, UpstreamError("pool", job.target, str(self.limit)))

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
            job.finish(
                None,
                UpstreamError(
                    "connect", job.target, f"no connection within {timeout * 1000:.0f} ms"
                ),
            )
            return
        except OSError as exc:
            self._slot_freed()
            if not job.retried:  # nothing was written: once more, on another pod if there is one
                job.retried = True
                self.resubmit(job)
                return
            job.finish(None, UpstreamError("connect", job.target, exc.strerror or str(exc)))
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


class _Route:
    """The ready pods of one deployment (from discovery): one pool per pod address.

    ``pick`` is the request path's only work: the pod with the fewest requests in flight from
    this router, ties taken in turn (the scan starts one pod further each time).
    """

    __slots__ = ("next", "pools")

    def __init__(self) -> None:
        self.pools: list[_Pool] = []
        self.next = 0

    def pick(self, avoid: _Pool | None = None) -> _Pool | None:
        pools = self.pools
        n = len(pools)
        if n == 1:
            only = pools[0]
            return None if only is avoid else only
        start = self.next = self.next + 1 if self.next + 1 < n else 0
        best: _Pool | None = None
        low = 1 << 62
        for i in range(start, start + n):
            pool = pools[i % n]
            if pool.active < low and pool is not avoid:
                best, low = pool, pool.active
        return best


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
        self,
        max_connections: int = 256,
        connect_timeout: float = 2.0,
        budget: Budget | None = None,
        max_response: int = 16 * 1024 * 1024,
        max_age: float = MAX_AGE_S,
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.budget = budget or Budget(128 * 1024 * 1024)
        self.max_response = max_response
        self.max_age = max_age
        self._pools: dict[tuple[str, int], _Pool] = {}  # per deployment address (Service)
        self._routes: dict[tuple[str, int], _Route] = {}  # deployment address -> its pods
        self._retired: list[_Pool] = []
        self._deadlines: _Deadlines | None = None

    def _new_pool(self, target: Target) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._deadlines is None:
            self._deadlines = _Deadlines(loop)
        return _Pool(
            loop,
            target,
            self.max_connections,
            self.connect_timeout,
            self._deadlines,
            self.budget,
            self.max_response,
            self.max_age,
        )

    def _pool(self, target: Target) -> _Pool:
        key = (target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._new_pool(target)
        return pool

    def _every_pool(self) -> list[_Pool]:
        return [*self._pools.values(), *(p for r in self._routes.values() for p in r.pools)]

    def endpoints(self, target: Target) -> list[tuple[str, int]]:
        """The pod addresses requests to ``target`` go to now (empty: its own address)."""
        route = self._routes.get((target.host, target.port))
        return [(p.target.host, p.target.port) for p in route.pools] if route else []

    def set_endpoints(self, target: Target, addresses: list[tuple[str, int]]) -> None:
        """The ready pods behind ``target``'s address, from discovery; empty: send to the
        address itself again (the Service). A pod that left gets no new request; its
        connections finish what they carry, then close; requests queued for it move on."""
        key = (target.host, target.port)
        route = self._routes.get(key)
        old = {(p.target.host, p.target.port): p for p in route.pools} if route else {}
        if addresses:
            if route is None:
                route = self._routes[key] = _Route()
            pools = []
            for host, port in addresses:
                pool = old.pop((host, port), None)
                if pool is None:
                    pool = self._new_pool(replace(target, host=host, port=port))
                    pool.route = route
                pools.append(pool)
            route.pools = pools
        elif route is not None:
            del self._routes[key]
            route.pools = []
        for pool in old.values():
            self._retire_pod(pool)

    def _retire_pod(self, pool: _Pool) -> None:
        pool.close_idle()
        waiting = list(pool.waiters)
        pool.waiters.clear()
        for job in waiting:
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None
            dest = (pool.route.pick(avoid=pool) if pool.route is not None else None) or self._pool(
                job.target
            )
            job.move(dest)
            dest.submit(job)
        self._retired = [p for p in self._retired if p.open > 0]
        if pool.open > 0:
            self._retired.append(pool)

    def configure(
        self,
        max_connections: int,
        connect_timeout: float,
        max_response: int,
        max_age: float = MAX_AGE_S,
    ) -> None:
        """New limits from a reloaded config; open pools use them from now on."""
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_response = max_response
        self.max_age = max_age
        for pool in self._every_pool():
            pool.limit = max_connections
            pool.connect_timeout = connect_timeout
            pool.max_response = max_response
            pool.max_age = max_age

    def retire(self, keep: set[tuple[str, int]]) -> None:
        """Close idle connections to addresses no deployment uses any more.

        Busy connections finish their request first, then close on release.
        """
        for key in [k for k in self._pools if k not in keep]:
            pool = self._pools.pop(key)
            pool.close_idle()
            self._retired.append(pool)
        for key in [k for k in self._routes if k not in keep]:
            route = self._routes.pop(key)
            for pool in route.pools:
                pool.close_idle()
                self._retired.append(pool)
            route.pools = []

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
        key = (target.host, target.port)
        # A deployment whose pods are known: the one with the fewest requests in flight.
        route = self._routes.get(key) if self._routes else None
        pool = (route.pick() if route is not None else None) or (
            self._pools.get(key) or self._pool(target)
        )
        data = encode_request(target, method, path, headers, body)
        # The router adds its x-request-id last; a response naming another id is not ours.
        rid = headers[-1][1] if headers and headers[-1][0] == b"x-request-id" else b""
        job = _Job(target, data, timeout, pool.loop.time() + timeout, on_done, pool, rid)
        pool.active += 1
        pool.submit(job)

    async def aclose(self) -> None:
        for pool in [*self._every_pool(), *self._retired]:
            pool.close_idle()
            for task in list(pool.connecting):
                task.cancel()
        self._pools.clear()
        self._routes.clear()
        self._retired.clear()
        if self._deadlines is not None:
            self._deadlines.close()
        await asyncio.sleep(0)
