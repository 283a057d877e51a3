"""A stand-in for the router's `GET /rollout` on loopback, answering statuses the real
controller produced.

`router_status` drives the real `RolloutController` on a real `Router` (no sockets: requests are
entered in the counters the proxy path fills, as tests/unit/test_rollout.py does) and returns
its `status()` through JSON, so the shape is exactly what the router answers. `fake_rollout_api`
serves whatever status the test sets over real HTTP, 401 without `Authorization: Bearer KEY`,
and counts the requests it got (a test can assert nothing asked it).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from scoring.router.config import Secrets, parse_config
from scoring.router.dispatch import Router, RouterState
from scoring.router.rollout import AlwaysLeader, MemoryStore, RolloutController, rollout_id
from scoring.router.upstream import UpstreamClient

GATES = {"min_requests": 100, "max_error_rate_pct": 1.0, "max_p99_ratio": 1.5}
ROLLOUT = {"steps": [5, 25, 100], "bake_s": 10, "gates": GATES}
TRAFFIC = {"blue": 0, "green": 100}


def router_status(
    outcome: str,
    rollout: dict[str, Any] | None = None,
    traffic: dict[str, int] | None = None,
    revisions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The router's `GET /rollout` answer after `outcome`: `baking` (step 1 under way),
    `rolled_back` (green answers 5% 500s at step 1), `aborted` (an operator, at step 1) or
    `promoted` (every step passes). `revisions`: the deployments' `revision` in the router's
    file (a stack's: its images' content tags), which name the rollout with the rest."""
    rollout, traffic, revisions = rollout or ROLLOUT, traffic or TRAFFIC, revisions or {}
    cfg = parse_config(
        json.dumps(
            {
                "endpoint_name": "diabetes",
                "auth_mode": "none",
                "deployments": {
                    n: {"url": f"http://{n}:5001", "revision": revisions.get(n, "")}
                    for n in ("blue", "green")
                },
                "traffic": traffic,
                "rollout": rollout,
            }
        )
    )
    router = Router(
        RouterState.build(cfg, Secrets(None, None, None)), cast(UpstreamClient, object())
    )
    now = [1_000_000.0]
    ctl = RolloutController(router, MemoryStore(), AlwaysLeader(), wall=lambda: now[0])
    router.rollout = ctl
    ctl.configure({"blue": 100, "green": 0})
    ctl.tick()  # opens the first window

    def serve(name: str, n: int, fail_every: int = 0) -> None:
        m = router.metrics.deployment(name)
        for i in range(n):
            code = 500 if fail_every and i % fail_every == 0 else 200
            m.responses[code] = m.responses.get(code, 0) + 1
            m.latency.observe(0.004)

    if outcome == "rolled_back":
        serve("green", 200, fail_every=20)
        serve("blue", 2000)
        ctl.tick()
    elif outcome == "aborted":
        ctl.command("abort")
    elif outcome == "promoted":
        for _ in rollout["steps"]:
            serve("green", 200)
            serve("blue", 200 if router.state.live.get("blue") else 0)
            now[0] += rollout["bake_s"] + 1
            ctl.tick()
            ctl.tick()  # the next step's window
    status = json.loads(json.dumps(ctl.status()))
    assert status["status"] == outcome, status  # the driving above is what the test means
    assert status["id"] == rollout_id(cfg.rollout, traffic, revisions)
    return status


class FakeRolloutApi:
    """Answers `GET /rollout` with `status` (None: 503, as a router that is not up yet)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.status: dict[str, Any] | None = None
        self.requests = 0
        self.url = ""


def _handler(api: FakeRolloutApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_GET(self) -> None:
            api.requests += 1
            if self.headers.get("Authorization") != f"Bearer {api.key}":
                self._answer(401, {"error": "missing or invalid credential"})
            elif self.path != "/rollout":
                self._answer(404, {"error": "not found"})
            elif api.status is None:
                self._answer(503, {"error": "not ready"})
            else:
                self._answer(200, api.status)

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def fake_rollout_api(key: str) -> Iterator[FakeRolloutApi]:
    """A `FakeRolloutApi` on 127.0.0.1 (a free port) until the block ends."""
    api = FakeRolloutApi(key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
