"""mlendpoints.client.Endpoint over real sockets: a router in front of two echo upstreams."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlendpoints import stack as stackmod
from mlendpoints.cli import CliError
from mlendpoints.client import Endpoint, EndpointError
from tests.support.router import KEY1, KEY2, cfg, router, upstream
from tests.support.tls import Ca, tls_router


@pytest.fixture(scope="module")
def scoring_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with upstream("blue") as blue, upstream("green") as green:
        config = cfg({"blue": blue.url, "green": green.url}, {"blue": 100, "green": 0})
        with router(tmp_path_factory.mktemp("client"), config) as (proc, _):
            yield f"{proc.url}/score"


def test_invoke_returns_the_decoded_answer_and_pins(scoring_uri: str) -> None:
    endpoint = Endpoint(scoring_uri, KEY1)
    answer = endpoint.invoke({"data": [[1, 2]]})
    assert answer["deployment"] == "blue"
    assert json.loads(answer["body"]) == {"data": [[1, 2]]}
    assert endpoint.invoke(b'{"raw": 1}', deployment="green")["deployment"] == "green"


def test_invoke_raises_with_status_and_body(scoring_uri: str) -> None:
    with pytest.raises(EndpointError) as err:
        Endpoint(scoring_uri, "wrong-key").invoke({"data": []})
    assert err.value.status == 401
    assert "HTTP 401" in str(err.value)


def test_post_default_body_and_ask_checks_expected_answers(scoring_uri: str) -> None:
    body = b'{"data": [[3]]}'
    answer = {"body": body.decode(), "deployment": "blue"}
    endpoint = Endpoint(scoring_uri, body=body, expected={"blue": answer})
    status, who, got = endpoint.post(credential=KEY1)
    assert (status, who, json.loads(got)["body"]) == (200, "blue", body.decode())
    # The echo answer carries a request id too, so it differs from EXPECTED: -1.
    assert endpoint.ask(KEY1)[0] == -1
    assert Endpoint(scoring_uri).ask(KEY2) == (200, "blue")  # no EXPECTED: any 200


def test_from_stack_takes_the_uri_and_the_credential_of_the_auth_mode(
    scoring_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = {
        "scoring_uri": scoring_uri,
        "endpoint_name": "diabetes",
        "auth_mode": "key",
        "primary_key": KEY1,
        "secondary_key": KEY2,
        "ca_certificate": "",
    }
    monkeypatch.setattr(stackmod, "read_outputs", lambda stack: outputs)
    assert Endpoint.from_stack("dev").invoke({"data": [[1]]})["deployment"] == "blue"
    assert Endpoint.from_stack("dev", key="secondary").credential == KEY2
    monkeypatch.setitem(outputs, "auth_mode", "none")
    assert Endpoint.from_stack("dev").credential is None


def test_from_stack_over_https_verifies_against_the_stack_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's CA is the one `verify=`, also when REQUESTS_CA_BUNDLE names the system's
    (a session's own `verify` loses to it: requests issue #3829); tokens come from the
    router's POST /token over HTTPS; another CA is refused."""
    monkeypatch.setenv("ML_ENDPOINTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", system_bundle())
    ca = Ca.new()
    cert, key = ca.issue(tmp_path / "tls")
    with upstream("blue") as blue:
        config = cfg(
            {"blue": blue.url},
            {"blue": 100},
            auth_mode="aml_token",
            tls={"cert_file": str(cert), "key_file": str(key)},
        )
        with tls_router(tmp_path, config) as r:
            outputs = {
                "scoring_uri": f"{r.url}/score",
                "endpoint_name": "diabetes",
                "auth_mode": "aml_token",
                "primary_key": KEY1,
                "secondary_key": KEY2,
                "ca_certificate": ca.cert.decode(),
            }
            monkeypatch.setattr(stackmod, "read_outputs", lambda stack: outputs)
            endpoint = Endpoint.from_stack("dev")
            assert str(endpoint.verify).startswith(str(tmp_path / "cache" / "tls" / "dev-"))
            assert endpoint.credential not in (None, KEY1, KEY2)  # a token from the router
            assert endpoint.invoke({"data": [[1]]})["deployment"] == "blue"
            assert endpoint.split(endpoint.credential or "", 3) == {"blue": 3}
            other = Ca.new("another CA").cert.decode()
            monkeypatch.setitem(outputs, "ca_certificate", other)
            with pytest.raises(CliError, match="CERTIFICATE_VERIFY_FAILED"):
                Endpoint.from_stack("dev")


def system_bundle() -> str:
    """A CA bundle that does not hold the test CA."""
    return ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
