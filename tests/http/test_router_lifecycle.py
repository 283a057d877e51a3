"""The router's lifecycle over real sockets: bad config files, reload under load, drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import Proc, free_port
from mlendpoints.paths import REPO
from tests.support.router import (
    AUTH1,
    KEY1,
    SECRET_ENV,
    cfg,
    metric,
    read_response,
    router,
    upstream,
    wait_for,
)

pytestmark = pytest.mark.router


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, Proc]]:
    with upstream("blue") as blue, upstream("green") as green:
        yield {"blue": blue, "green": green}


def _run_cli(config_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring",
            "router",
            "--config",
            str(config_path),
            "--port",
            str(free_port()),
            "--host",
            "127.0.0.1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            k: v
            for k, v in {**os.environ, **(env or {})}.items()
            if not k.startswith("ML_ENDPOINTS_") or k in (env or {})
        },
    )


def test_bad_config_files_exit_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scoring.router.main import main

    good = cfg(
        {"blue": "http://127.0.0.1:1", "green": "http://127.0.0.1:2"}, {"blue": 90, "green": 10}
    )
    cases = {
        "typo.json": (
            {**good, "trafic": {"blue": 100}},
            "trafic: unknown field (got {'blue': 100}); check its spelling",
        ),
        "sum.json": (
            {**good, "traffic": {"blue": 60, "green": 30}},
            "traffic: values sum to 90 (blue=60, green=30); must be 0 or 100",
        ),
        "mirror.json": (
            {**good, "mirror_traffic": {"green": 5}},
            "mirror_traffic.green: 'green' takes live traffic (10%); mirror only "
            "to a deployment at 0%",
        ),
        "url.json": (
            {**good, "deployments": {"blue": {"url": "blue:5001"}, "green": {"url": "http://g:1"}}},
            "deployments.blue.url: 'blue:5001' must start with http://",
        ),
    }
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    port = str(free_port())
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        assert main(["--config", str(path), "--port", port, "--host", "127.0.0.1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"router: bad config {path}:\n"), err
        assert expected in err, (name, err)
    (tmp_path / "broken.json").write_text('{"endpoint_name": ')
    assert main(["--config", str(tmp_path / "broken.json"), "--port", port]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    # The real command line, with no key anywhere: named, and the process never listens.
    (tmp_path / "nokey.json").write_text(json.dumps(good))
    res = _run_cli(tmp_path / "nokey.json", {})
    assert res.returncode == 2
    assert res.stderr == (
        f"router: bad config {tmp_path / 'nokey.json'}:\n"
        "  secrets.primary_key: auth_mode 'key' needs it; none found in env "
        "ML_ENDPOINTS_PRIMARY_KEY\n"
    )


class Load:
    """Bounded concurrent load: ``threads`` keep-alive clients, each at most ``limit`` calls."""

    def __init__(self, url: str, threads: int = 4, limit: int = 4000) -> None:
        self.url, self.limit = url, limit
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.deployments: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            for _ in range(self.limit):
                if self.stop.is_set():
                    return
                try:
                    r = c.post(f"{self.url}/score", content=b"{}", headers=AUTH1)
                    with self.lock:
                        self.statuses[r.status_code] += 1
                        self.deployments.append(r.headers.get("azureml-model-deployment", "?"))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self) -> int:
        with self.lock:
            return len(self.deployments)


def _generation(url: str) -> float:
    return metric(httpx.get(f"{url}/metrics").text, "router_config_generation")


def test_reload_weights_under_load_with_zero_failures(ups: dict[str, Proc], tmp_path: Path) -> None:
    deps = {"blue": ups["blue"].url, "green": ups["green"].url}
    with router(tmp_path, cfg(deps, {"blue": 100, "green": 0})) as (proc, path):
        url = proc.url
        # Kubernetes-style config volume: the watched path is a symlink to a versioned file.
        data_dir = tmp_path / "..data-1"
        data_dir.mkdir()
        (data_dir / "router.json").write_text(path.read_text())
        path.unlink()
        path.symlink_to(data_dir / "router.json")
        with Load(url) as load:
            wait_for(lambda: load.count() > 100, "load to start")
            # 1) plain rewrite of the file -> picked up by the poller.
            tmp = path.parent / "router.json.tmp"
            tmp.write_text(json.dumps(cfg(deps, {"blue": 50, "green": 50})))
            os.replace(tmp, data_dir / "router.json")
            wait_for(lambda: _generation(url) == 1, "reload after file change")
            mark = load.count()
            wait_for(lambda: load.count() > mark + 200, "load on generation 1")
            # 2) symlink swap to a new version, as a ConfigMap update does.
            new_dir = tmp_path / "..data-2"
            new_dir.mkdir()
            (new_dir / "router.json").write_text(json.dumps(cfg(deps, {"green": 100})))
            link_tmp = tmp_path / "link.tmp"
            link_tmp.symlink_to(new_dir / "router.json")
            os.replace(link_tmp, path)
            wait_for(lambda: _generation(url) == 2, "reload after symlink swap")
            # 3) an invalid file is rejected; the old config keeps serving.
            bad_dir = tmp_path / "..data-3"
            bad_dir.mkdir()
            (bad_dir / "router.json").write_text(json.dumps(cfg(deps, {"green": 70})))
            link_tmp.symlink_to(bad_dir / "router.json")
            os.replace(link_tmp, path)
            wait_for(
                lambda: (
                    metric(
                        httpx.get(f"{url}/metrics").text,
                        "router_config_reloads_total",
                        result="rejected",
                    )
                    == 1
                ),
                "invalid config rejected",
            )
            # 4) SIGHUP reloads on demand (back to the valid version).
            link_tmp.symlink_to(new_dir / "router.json")
            os.replace(link_tmp, path)
            proc.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: _generation(url) >= 3, "reload on SIGHUP")
            mark = load.count()
            wait_for(lambda: load.count() > mark + 200, "load after the last reload")
        assert load.errors == []
        assert set(load.statuses) == {200}, load.statuses
        assert load.count() >= 600
        assert {"blue", "green"} <= set(load.deployments)
        # After the last reload (green 100) only green answers.
        with httpx.Client() as c:
            tail = {
                c.post(f"{url}/score", content=b"{}", headers=AUTH1).headers[
                    "azureml-model-deployment"
                ]
                for _ in range(50)
            }
        assert tail == {"green"}
        log = proc.log()
        assert "rejected, still serving generation 2: traffic: values sum to 70 (green=70)" in log
        assert KEY1 not in log


def test_key_rotation_through_secret_files(ups: dict[str, Proc], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "primary_key").write_text("old-primary-key\n")
    (secrets / "secondary_key").write_text("new-secondary-key\n")
    config = cfg({"blue": ups["blue"].url}, {"blue": 100}, secrets_dir=str(secrets))
    env = {"ML_ENDPOINTS_PRIMARY_KEY": "", "ML_ENDPOINTS_SECONDARY_KEY": ""}
    with router(tmp_path, config, env=env) as (proc, _), httpx.Client() as c:

        def status(key: str) -> int:
            return c.post(
                f"{proc.url}/score", content=b"{}", headers={"Authorization": f"Bearer {key}"}
            ).status_code

        assert (status("old-primary-key"), status("new-secondary-key")) == (200, 200)
        (secrets / "primary_key").write_text("newer-primary-key\n")
        wait_for(lambda: _generation(proc.url) == 1, "reload after secret change")
        assert status("old-primary-key") == 401
        assert (status("newer-primary-key"), status("new-secondary-key")) == (200, 200)
        assert "old-primary-key" not in proc.log() and "newer-primary-key" not in proc.log()


def test_sigterm_drains_in_flight_requests(ups: dict[str, Proc], tmp_path: Path) -> None:
    config = cfg({"blue": ups["blue"].url}, {"blue": 100})
    with router(tmp_path, config, extra=["--drain-delay", "0.5"]) as (proc, _):
        url = proc.url
        results: list[tuple[int, str]] = []
        lock = threading.Lock()

        def slow() -> None:
            r = httpx.post(
                f"{url}/score",
                content=b"{}",
                timeout=30,
                headers={**AUTH1, "x-test-delay-ms": "1500"},
            )
            with lock:
                results.append((r.status_code, r.json()["deployment"]))

        threads = [threading.Thread(target=slow) for _ in range(5)]
        for t in threads:
            t.start()
        wait_for(
            lambda: metric(httpx.get(f"{url}/metrics").text, "router_in_flight_requests") == 5,
            "5 requests in flight",
        )
        # A sixth request is still arriving (half its body sent) when the signal comes.
        partial = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        partial.sendall(
            (
                f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY1}"
                '\r\nContent-Length: 11\r\n\r\n{"a": '
            ).encode()
        )
        proc.popen.send_signal(signal.SIGTERM)
        # Readiness goes false at once (while the drain delay still accepts connections).
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 503, "readiness false", 5)

        def refused() -> bool:
            try:
                httpx.get(f"{url}/", timeout=2)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused, or accepted by the kernel just before the listener closed (reset).
                return True
            return False

        # The listener closes after --drain-delay; the half-received request still completes.
        wait_for(refused, "listener closed", 10)
        partial.sendall(b'"bc"}')
        status, headers, body = read_response(partial, bytearray())
        partial.close()
        assert (status, headers["connection"]) == (200, "close")
        assert json.loads(body)["body"] == '{"a": "bc"}'
        for t in threads:
            t.join(30)
        assert results == [(200, "blue")] * 5
        assert proc.popen.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/", timeout=2)
        log = proc.log()
        assert "SIGTERM: draining (5 request(s) in flight)" in log
        assert "drained; bye" in log


def test_idle_and_stalled_client_connections_are_closed(
    ups: dict[str, Proc], tmp_path: Path
) -> None:
    """An idle keep-alive connection is closed silently after keep_alive_timeout_ms; a body
    that stopped arriving gets 408 after body_timeout_ms; a slow answer is never cut."""
    config = cfg(
        {"blue": ups["blue"].url},
        {"blue": 100},
        keep_alive_timeout_ms=1000,
        body_timeout_ms=1000,
    )
    with router(tmp_path, config) as (proc, _):
        idle = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(idle, bytearray())[0] == 200
        stalled = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        stalled.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY1.encode()
            + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        # A slow request in flight longer than keep_alive_timeout_ms is not cut.
        r = httpx.post(
            f"{proc.url}/score",
            content=b"{}",
            timeout=30,
            headers={**AUTH1, "x-test-delay-ms": "2500"},
        )
        assert r.status_code == 200
        assert idle.recv(100) == b""  # closed by the router, nothing sent
        idle.close()
        status, headers, body = read_response(stalled, bytearray())
        assert (status, headers["connection"]) == (408, "close")
        assert json.loads(body)["error"] == (
            "request body did not arrive within body_timeout_ms (1000)"
        )
        assert stalled.recv(100) == b""
        stalled.close()
