"""``python -m scoring router``: the router's lifecycle (start, reload, drain).

Startup: load and check the config (exit 2 with one line per problem), listen, serve.
Reload: on SIGHUP, or when the config file or a secret file changes (polled about once a
second by content, through symlinks, so a Kubernetes ConfigMap/Secret volume's atomic
symlink swap is seen), a new immutable state is built and swapped in; an invalid file is
rejected with a log line and the old state keeps serving. Shutdown on SIGTERM/SIGINT, in
order: readiness false, stop accepting, finish in-flight requests (and mirror calls), close
idle client connections and upstream pools, exit 0. A second signal forces exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import signal
import socket
import sys
from pathlib import Path

import uvloop

from scoring.common.logs import get_log
from scoring.router.config import ConfigError, RouterConfig, load_config, secret_paths
from scoring.router.discovery import Discovery
from scoring.router.dispatch import Router, RouterState
from scoring.router.listeners import MetricsProtocol, TlsContexts
from scoring.router.protocol import HttpProtocol, check_times
from scoring.router.rollout import RolloutController, store_for
from scoring.router.upstream import PooledClient

POLL_S = 1.0


def _log(level: str, message: str, event: str) -> None:
    """One JSON log line now (never a secret, never a request body)."""
    get_log().event(level, message, event=event)


def _fingerprint(config_path: Path, secrets: list[Path]) -> str:
    """Hash of the config file and every secret file's content (missing files count too)."""
    h = hashlib.sha256()
    for path in (config_path, *secrets):
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            h.update(f"<{type(exc).__name__}>".encode())
        h.update(b"\0")
    return h.hexdigest()


class RouterProcess:
    """Owns the listening socket, the ``Router`` and the reload/drain machinery."""

    def __init__(
        self,
        config_path: Path,
        router: Router,
        drain_timeout: float,
        drain_delay: float,
    ) -> None:
        self.config_path = config_path
        self.router = router
        self.drain_timeout = drain_timeout
        self.drain_delay = drain_delay
        self.conns: set[HttpProtocol] = set()
        self.stop_event = asyncio.Event()
        self.signals = 0
        self.fingerprint = _fingerprint(config_path, secret_paths(router.state.config))
        tls_context = router.state.secrets.tls_context
        self.tls = TlsContexts(tls_context) if tls_context is not None else None
        store, lease = store_for(router.state.config.rollout_store)
        router.rollout = RolloutController(router, store, lease)
        router.rollout.configure(None)
        # The deployments' ready pods, when the config says where to read them (in cluster).
        self.discovery = (
            Discovery(router.client) if isinstance(router.client, PooledClient) else None
        )

    def discover(self) -> None:
        """Watch the current deployments' pods (config ``discovery``), stop the others."""
        if self.discovery is not None:
            state = self.router.state
            self.discovery.sync(state.config.discovery, state.targets)

    def reload(self, why: str) -> bool:
        """Load the file again; swap it in if valid, else keep serving the old config."""
        old = self.router.state
        # The fingerprint of what is about to be read, taken first: a file that changes while
        # (or after) it is read then differs from it, and the next poll reloads again.
        self.fingerprint = _fingerprint(self.config_path, secret_paths(old.config))
        try:
            config, secrets = load_config(self.config_path)
        except ConfigError as exc:
            self.router.metrics.reloads["rejected"] += 1
            _log(
                "warning",
                f"config reload ({why}) rejected, still serving generation {old.generation}: "
                + "; ".join(exc.problems),
                "reload_rejected",
            )
            return False
        restart = _needs_restart(old.config, config)
        if restart:
            self.router.metrics.reloads["rejected"] += 1
            _log(
                "warning",
                f"config reload ({why}) rejected, still serving generation {old.generation}: "
                f"{restart} needs a restart of the router",
                "reload_rejected",
            )
            return False
        state = RouterState.build(config, secrets, old.generation + 1)
        self.router.swap(state)
        if self.router.rollout is not None:  # the declared split, or the rollout's step
            self.router.rollout.configure(old.live)
        self.discover()
        if self.tls is not None and secrets.tls_context is not None:
            self.tls.swap(secrets.tls_context)
        self.router.metrics.reloads["ok"] += 1
        _log(
            "info",
            f"config reloaded ({why}): generation {state.generation}, "
            f"traffic {dict(config.traffic)}, mirror {dict(config.mirror_traffic)}, "
            f"auth {config.auth_mode}",
            "reload",
        )
        return True

    async def watch(self) -> None:
        """Poll the config and secret files; reload when their content changes."""
        while not self.stop_event.is_set():
            try:
                await asyncio.wait_for(self.stop_event.wait(), POLL_S)
                return
            except TimeoutError:
                pass
            self.poll()
            check_times(self.conns, self.router.state.config)

    def poll(self) -> bool:
        """Reload if the config or a secret file's content changed since it was last read."""
        fp = _fingerprint(self.config_path, secret_paths(self.router.state.config))
        return fp != self.fingerprint and self.reload("file changed")

    def on_stop_signal(self, signum: int) -> None:
        self.signals += 1
        if self.signals > 1:
            _log("error", f"second {signal.Signals(signum).name}: exiting now", "stop")
            sys.stderr.flush()
            import os

            os._exit(1)
        _log(
            "info",
            f"{signal.Signals(signum).name}: draining "
            f"({self.router.in_flight} request(s) in flight)",
            "stop",
        )
        self.router.draining = True
        self.stop_event.set()

    async def serve(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HttpProtocol(self.router, self.conns),
            host,
            port,
            backlog=2048,
            reuse_address=True,
            ssl=self.tls.listener if self.tls is not None else None,
        )
        servers = [server]
        metrics_port = self.router.state.config.metrics_port
        if metrics_port is not None:
            servers.append(
                await loop.create_server(
                    lambda: MetricsProtocol(self.router),
                    "0.0.0.0",
                    metrics_port,
                    reuse_address=True,
                )
            )
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_stop_signal, sig)
        state = self.router.state
        scheme = "https" if self.tls is not None else "http"
        if self.tls is None:
            _log(
                "warning",
                "serving plain HTTP: keys and tokens cross the network in clear text; "
                "set tls in the config file except for a local experiment",
                "plain_http",
            )
        where = f", /metrics on port {metrics_port}" if metrics_port is not None else ""
        _log(
            "info",
            f"listening on {scheme}://{host}:{port}{where} for endpoint "
            f"{state.config.endpoint_name!r} "
            f"(auth {state.config.auth_mode}, traffic {dict(state.config.traffic)}, "
            f"mirror {dict(state.config.mirror_traffic)})",
            "start",
        )
        watcher = loop.create_task(self.watch())
        rollout_stop = asyncio.Event()
        rollouts = (
            loop.create_task(self.router.rollout.run(rollout_stop))
            if self.router.rollout is not None
            else None
        )
        self.discover()
        await self.stop_event.wait()
        rollout_stop.set()
        if rollouts is not None:
            await rollouts  # a pending decision is written before the drain
        # Drain, in order. 1) readiness is already false (router.draining).
        if self.drain_delay > 0:
            # Let the Service stop sending new connections here before we stop accepting.
            await asyncio.sleep(self.drain_delay)
        # 2) stop accepting.
        for listening in servers:
            listening.close()
        # 3) idle keep-alive connections close now; busy ones (a request being answered or
        # still arriving) close after their response, which says "connection: close".
        # 4) finish in-flight requests and mirror calls.
        done = await self._drained(self.drain_timeout)
        if not done:
            _log(
                "warning",
                f"drain: {self.router.in_flight} request(s) still in flight after "
                f"{self.drain_timeout:.0f}s; closing anyway",
                "stop",
            )
        for conn in list(self.conns):
            conn.close()
        # 5) stop discovery, close upstream pools.
        if self.discovery is not None:
            await self.discovery.aclose()
        await self.router.client.aclose()
        watcher.cancel()
        _log("info", "drained; bye", "stop")
        return 0 if done else 1

    async def _drained(self, timeout: float) -> bool:
        """Close connections as they become idle until nothing is in flight (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        router = self.router
        while True:
            for conn in list(self.conns):
                if conn.idle:
                    conn.close()
            if not (router.in_flight or router.mirrors_in_flight or self.conns):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)


def _needs_restart(old: RouterConfig, new: RouterConfig) -> str | None:
    """What in ``new`` a reload cannot apply (the listeners are made once, at start)."""
    if (old.tls is None) != (new.tls is None):
        return "turning tls on or off"
    if old.metrics_port != new.metrics_port:
        return "changing metrics_port"
    if old.rollout_store != new.rollout_store:
        return "changing rollout_store"
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scoring router",
        description="Endpoint router: auth, weighted traffic, "
        "pinning and mirroring in front of deployments.",
    )
    p.add_argument("--config", type=Path, help="router config JSON file (docs/router.md)")
    p.add_argument(
        "--schema", action="store_true", help="print the config file's JSON Schema and exit"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="S",
        help="longest wait for in-flight requests on SIGTERM (default: request_timeout_ms + 5 s)",
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="keep accepting this long after SIGTERM (readiness already false) so "
        "the Service stops routing here first; e.g. 5 in Kubernetes",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.schema:
        print(json.dumps(RouterConfig.model_json_schema(), indent=2))
        return 0
    if args.config is None:
        print("router: --config FILE is required (see docs/router.md)", file=sys.stderr)
        return 2
    try:
        config, secrets = load_config(args.config)
    except ConfigError as exc:
        print(f"router: bad config {exc.source}:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return 2

    # Startup objects never die: keep them out of every GC pass, and collect the young
    # generation less often (each request allocates a few dozen short-lived objects).
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)

    async def run() -> int:
        router = Router(RouterState.build(config, secrets))
        drain_timeout = args.drain_timeout
        if drain_timeout is None:
            drain_timeout = config.request_timeout_ms / 1000.0 + 5.0
        proc = RouterProcess(args.config, router, drain_timeout, args.drain_delay)
        try:
            return await proc.serve(args.host, args.port)
        except OSError as exc:
            _log(
                "error", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", "stop"
            )
            return 1

    return uvloop.run(run())
