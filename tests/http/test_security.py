"""Keys never cross a network in clear text, nothing reaches a model around its router
(issue 13): HTTPS with certificate verification, the metrics port, tokens issued by the
router, the lifetime and ``iat`` rules, the server's internal credential, error bodies without
internal URLs, and a certificate rotated by a reload. Real routers and servers on loopback."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from mlendpoints._procs import serve_args
from mlendpoints.paths import SAMPLE
from tests.support.router import AUTH1, KEY2, SIGNING, cfg, metric, upstream, wait_for
from tests.support.serving import serve
from tests.support.tls import Ca, TlsRouter, tls_router

pytestmark = pytest.mark.router

CREDENTIAL = "internal-credential-for-tests-0123456789"
REQUEST = {"data": [[0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]]}


def tls_cfg(tmp: Path, ca: Ca, deployments: dict[str, str], **kw: object) -> dict:
    cert, key = ca.issue(tmp / "tls")
    traffic = {next(iter(deployments)): 100}
    return cfg(deployments, traffic, tls={"cert_file": str(cert), "key_file": str(key)}, **kw)


@contextlib.contextmanager
def blue_behind_tls(tmp: Path, ca: Ca, **kw: object) -> Iterator[TlsRouter]:
    """An echo upstream ``blue`` behind a TLS router whose certificate ``ca`` signed."""
    with upstream("blue") as blue, tls_router(tmp, tls_cfg(tmp, ca, {"blue": blue.url}, **kw)) as r:
        yield r


def peer_common_name(port: int, ca: Ca) -> str:
    """The subject CN of the certificate a new connection to ``port`` gets (verified)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ca.client().wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        cert = conn.getpeercert()
    return dict(item[0] for item in cert["subject"])["commonName"]


def test_https_verifies_against_the_ca_and_plain_http_is_refused(tmp_path: Path) -> None:
    ca = Ca.new()
    with blue_behind_tls(tmp_path, ca) as r:
        with httpx.Client(verify=ca.client()) as c:
            resp = c.post(f"{r.url}/score", json={"x": 1}, headers=AUTH1)
            assert resp.status_code == 200, resp.text
            assert resp.json()["deployment"] == "blue"
            # The host name is checked too (the certificate names localhost and 127.0.0.1).
            assert c.get(f"https://localhost:{r.proc.port}/").text == "Healthy"
        # A client that trusts another CA refuses the router's certificate.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{r.url}/", verify=Ca.new("another CA").client())
        # Plain HTTP to the TLS port gets no HTTP answer, and the key was never parsed.
        with socket.create_connection(("127.0.0.1", r.proc.port), timeout=5) as s:
            s.sendall(
                f"POST /score HTTP/1.1\r\nauthorization: {AUTH1['Authorization']}\r\n\r\n".encode()
            )
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            assert b"HTTP/1.1" not in reply
        # ...and the router still serves.
        assert httpx.get(f"{r.url}/ready", verify=ca.client()).status_code == 200
        assert "plain HTTP" not in r.proc.log()


def test_metrics_only_on_the_metrics_port(tmp_path: Path) -> None:
    ca = Ca.new()
    with blue_behind_tls(tmp_path, ca) as r:
        with httpx.Client(verify=ca.client()) as c:
            assert c.post(f"{r.url}/score", json={}, headers=AUTH1).status_code == 200
            main = c.get(f"{r.url}/metrics")
            assert main.status_code == 404
            assert "router_requests_total" not in main.text
        text = httpx.get(r.metrics_url).text
        assert metric(text, "router_requests_total", deployment="blue", status="200") == 1
        other = httpx.get(r.metrics_url.replace("/metrics", "/score"))
        assert other.status_code == 404
        assert "GET /metrics only" in other.json()["error"]


def test_router_issues_tokens_to_key_holders(tmp_path: Path) -> None:
    ca = Ca.new()
    config = {"auth_mode": "aml_token", "max_token_lifetime_s": 600}
    with blue_behind_tls(tmp_path, ca, **config) as r, httpx.Client(verify=ca.client()) as c:
        # The key itself is not accepted for scoring in aml_token mode...
        assert c.post(f"{r.url}/score", json={}, headers=AUTH1).status_code == 401
        # ...but buys a token, in Azure's shape, capped at max_token_lifetime_s.
        before = int(time.time())
        got = c.post(f"{r.url}/token", json={"ttl_s": 86400}, headers=AUTH1)
        assert got.status_code == 200, got.text
        body = got.json()
        assert set(body) == {"accessToken", "expiryTimeUtc", "refreshAfterTimeUtc", "tokenType"}
        assert body["tokenType"] == "Bearer"
        assert before + 600 <= body["expiryTimeUtc"] <= int(time.time()) + 600
        token = {"Authorization": f"Bearer {body['accessToken']}"}
        resp = c.post(f"{r.url}/score", json={}, headers=token)
        assert resp.status_code == 200, resp.text
        # The secondary key works too; no body = the longest lifetime.
        second = c.post(f"{r.url}/token", headers={"Authorization": f"Bearer {KEY2}"})
        assert second.status_code == 200
        # A token cannot renew itself, a wrong key gets nothing, a bad body is named.
        assert c.post(f"{r.url}/token", headers=token).status_code == 401
        wrong = c.post(f"{r.url}/token", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid key")
        bad = c.post(f"{r.url}/token", json={"ttl_s": "long"}, headers=AUTH1)
        assert bad.status_code == 400
        assert "ttl_s must be a positive whole number" in bad.json()["error"]
        assert c.get(f"{r.url}/token", headers=AUTH1).status_code == 405


def test_token_route_in_key_mode_says_why(tmp_path: Path) -> None:
    ca = Ca.new()
    with blue_behind_tls(tmp_path, ca) as r:
        resp = httpx.post(f"{r.url}/token", headers=AUTH1, verify=ca.client())
        assert resp.status_code == 400
        assert "tokens are issued only in aml_token mode" in resp.json()["error"]


def _signed(iat: int, exp: int) -> dict[str, str]:
    claims = {"iss": "ml-endpoints", "aud": "diabetes", "iat": iat, "exp": exp}
    return {"Authorization": "Bearer " + jwt.encode(claims, SIGNING, algorithm="HS256")}


def test_long_lived_and_future_tokens_are_refused(tmp_path: Path) -> None:
    ca = Ca.new()
    config = {"auth_mode": "aml_token", "max_token_lifetime_s": 3600}
    now = int(time.time())
    with blue_behind_tls(tmp_path, ca, **config) as r, httpx.Client(verify=ca.client()) as c:
        ok = c.post(f"{r.url}/score", json={}, headers=_signed(now - 10, now + 3000))
        assert ok.status_code == 200, ok.text
        century = c.post(f"{r.url}/score", json={}, headers=_signed(now, now + 100 * 365 * 86400))
        assert century.status_code == 401
        assert "over this endpoint's maximum (3600 s)" in century.json()["error"]
        future = c.post(
            f"{r.url}/score",
            json={},
            headers=_signed(now + 10 * 365 * 86400, now + 10 * 365 * 86400 + 60),
        )
        assert future.status_code == 401
        assert "issued in the future" in future.json()["error"]


@pytest.mark.server
def test_server_refuses_requests_that_bypass_the_router(tmp_path: Path) -> None:
    secret = tmp_path / "credential"
    secret.write_text(CREDENTIAL + "\n")  # a trailing newline (kubectl create secret) is fine
    env = {"INTERNAL_CREDENTIAL_FILE": str(secret)}
    with serve(SAMPLE / "score.py", SAMPLE / "model", "--workers", "1", env=env) as server:
        # Probes (the kubelet's) need no credential.
        for path in ("/", "/ready", "/readyz"):
            assert httpx.get(server.url + path).status_code == 200, path
        # A pod calling the Service directly: 401 naming the cause, on every other route.
        direct = httpx.post(f"{server.url}/score", json=REQUEST)
        assert direct.status_code == 401
        assert "bypassed the endpoint" in direct.json()["error"]
        assert direct.json()["request_id"]
        for path in ("/swagger.json", "/metrics"):
            assert httpx.get(server.url + path).status_code == 401, path
        wrong = httpx.post(
            f"{server.url}/score", json=REQUEST, headers={"x-ml-endpoints-credential": "guess"}
        )
        assert wrong.status_code == 401
        right = httpx.post(
            f"{server.url}/score", json=REQUEST, headers={"x-ml-endpoints-credential": CREDENTIAL}
        )
        assert right.status_code == 200, right.text

        # Through a router that holds the credential: scored; a client's own copy of the
        # header is dropped, so guessing it through the router gains nothing.
        ca = Ca.new()
        config = tls_cfg(tmp_path, ca, {"blue": server.url}, internal_credential_file=str(secret))
        with tls_router(tmp_path, config) as r, httpx.Client(verify=ca.client()) as c:
            resp = c.post(f"{r.url}/score", json=REQUEST, headers=AUTH1)
            assert resp.status_code == 200, resp.text
            spoof = c.post(
                f"{r.url}/score",
                json=REQUEST,
                headers={**AUTH1, "x-ml-endpoints-credential": "guess"},
            )
            assert spoof.status_code == 200, spoof.text
        # A router without it is refused by the server (the body says why).
        config = tls_cfg(tmp_path, ca, {"blue": server.url})
        with tls_router(tmp_path, config) as r:
            resp = httpx.post(f"{r.url}/score", json=REQUEST, headers=AUTH1, verify=ca.client())
            assert resp.status_code == 401
            assert "bypassed the endpoint" in resp.json()["error"]


@pytest.mark.server
def test_server_with_unreadable_credential_file_exits_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "nope"
    argv = serve_args(
        SAMPLE / "score.py", SAMPLE / "model", "--internal-credential-file", str(missing), port=0
    )
    out = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    assert f"--internal-credential-file: cannot read {str(missing)!r}" in out.stderr


def test_upstream_errors_do_not_show_internal_urls(tmp_path: Path, unused_port: int) -> None:
    ca = Ca.new()
    dead = f"http://127.0.0.1:{unused_port}"
    config = tls_cfg(tmp_path, ca, {"dead": dead}, connect_timeout_ms=500)
    with tls_router(tmp_path, config) as r:
        resp = httpx.post(f"{r.url}/score", json={}, headers=AUTH1, verify=ca.client())
        assert resp.status_code == 502
        assert resp.json()["error"] == "deployment 'dead' is unreachable: Connection refused"
        assert str(unused_port) not in resp.text and "127.0.0.1" not in resp.text
        # The operator still finds the URL in the router's log.
        wait_for(lambda: dead in r.proc.log(), "the upstream error log line")


def test_certificate_rotates_on_reload_without_restart(tmp_path: Path) -> None:
    old_ca, new_ca = Ca.new("old CA"), Ca.new("new CA")
    with upstream("blue") as blue:
        config = tls_cfg(tmp_path, old_ca, {"blue": blue.url})
        cert, key = Path(config["tls"]["cert_file"]), Path(config["tls"]["key_file"])
        with tls_router(tmp_path, config) as r:
            kept = httpx.Client(verify=old_ca.client())
            assert kept.post(f"{r.url}/score", json={}, headers=AUTH1).status_code == 200
            # A broken pair (new certificate, old key) is rejected; the old one keeps serving.
            staged = tmp_path / "staged"
            new_cert, new_key = new_ca.issue(staged, ("localhost", "rotated.test"))
            cert.write_bytes(new_cert.read_bytes())
            r.proc.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: "rejected, still serving" in r.proc.log(), "the rejected reload")
            assert peer_common_name(r.proc.port, old_ca) == "localhost"
            # The matching key arrives (as a Secret volume update would): picked up by the
            # file watcher, used for new connections; the open connection keeps working.
            key.write_bytes(new_key.read_bytes())
            wait_for(lambda: "config reloaded (" in r.proc.log(), "the reload")
            assert peer_common_name(r.proc.port, new_ca) == "localhost"
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{r.url}/", verify=old_ca.client())
            assert kept.post(f"{r.url}/score", json={}, headers=AUTH1).status_code == 200
            kept.close()
            with httpx.Client(verify=new_ca.client()) as c:
                assert c.post(f"{r.url}/score", json={}, headers=AUTH1).status_code == 200


def test_switching_tls_off_needs_a_restart(tmp_path: Path) -> None:
    ca = Ca.new()
    with blue_behind_tls(tmp_path, ca) as r:
        plain = {**json.loads(r.config_path.read_text()), "tls": None}
        r.config_path.write_text(json.dumps(plain))
        wait_for(lambda: "turning tls on or off needs a restart" in r.proc.log(), "rejection")
        assert httpx.get(f"{r.url}/ready", verify=ca.client()).status_code == 200
