"""The router config model: schema, rules, secrets; every error names field and bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scoring.router.config import ConfigError, load_config, load_secrets, parse_config
from scoring.router.dispatch import RouteError, RouterState, authorize, route

pytestmark = pytest.mark.router

DNS1123_RULE = (
    "DNS-1123 (lowercase letters, digits, '-', starts with a letter, ends with a letter or "
    "digit, <= 63 chars)"
)
BASE = {
    "endpoint_name": "diabetes",
    "auth_mode": "key",
    "deployments": {"blue": {"url": "http://blue:5001"}, "green": {"url": "http://green:5001"}},
    "traffic": {"blue": 90, "green": 10},
    "mirror_traffic": {"green": 0},
    "secrets_dir": "/var/run/secrets/ml-endpoints",
    "request_timeout_ms": 5000,
}


def problems(**changes: object) -> list[str]:
    data = {**BASE, **changes}
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(data), "router.json")
    return info.value.problems


def test_documented_example_parses() -> None:
    cfg = parse_config(json.dumps(BASE))
    assert cfg.traffic == {"blue": 90, "green": 10}
    assert cfg.connect_timeout_ms == 2000 and cfg.max_connections_per_deployment == 256


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"trafic": {"blue": 100}},
            ["trafic: unknown field (got {'blue': 100}); check its spelling"],
        ),
        (
            {"auth_mode": "keys"},
            ["auth_mode: Input should be 'key', 'aml_token' or 'none' (got 'keys')"],
        ),
        (
            {"traffic": {"blue": 60, "green": 30}},
            ["traffic: values sum to 90 (blue=60, green=30); must be 0 or 100"],
        ),
        (
            {"traffic": {"blue": 100, "purple": 0}},
            [
                "traffic.purple: no deployment named 'purple' in this endpoint "
                "(deployments: blue, green)"
            ],
        ),
        (
            {"mirror_traffic": {"blue": 10}},
            [
                "mirror_traffic.blue: 'blue' takes live traffic (90%); "
                "mirror only to a deployment at 0%"
            ],
        ),
        (
            {"traffic": {"blue": 100}, "mirror_traffic": {"green": 60}},
            ["mirror_traffic.green: 60% is above the 50% mirror limit; use 0..50"],
        ),
        (
            {
                "deployments": {n: {"url": f"http://{n}:1"} for n in ("blue", "green", "shadow")},
                "traffic": {"blue": 100},
                "mirror_traffic": {"green": 10, "shadow": 5},
            },
            [
                "mirror_traffic: mirrors to 2 deployments (green, shadow); "
                "mirror to one deployment at most"
            ],
        ),
        (
            {
                "deployments": {
                    "blue": {"url": "https://blue:5001"},
                    "green": {"url": "http://g:1"},
                }
            },
            [
                "deployments.blue.url: 'https://blue:5001' must start with http:// "
                "(the router speaks plain HTTP to deployments inside the cluster)"
            ],
        ),
        (
            {
                "deployments": {
                    "blue": {"url": "http://blue:5001", "weight": 3},
                    "green": {"url": "http://g:1"},
                }
            },
            ["deployments.blue.weight: unknown field (got 3); check its spelling"],
        ),
        (
            {"deployments": {"Blue_1": {"url": "http://b:1"}}, "traffic": {}, "mirror_traffic": {}},
            [f"deployments: 'Blue_1' is not {DNS1123_RULE}"],
        ),
        (
            {"request_timeout_ms": 0},
            ["request_timeout_ms: Input should be greater than or equal to 1 (got 0)"],
        ),
        (
            {"endpoint_name": "Diabetes"},
            [f"endpoint_name: 'Diabetes' is not {DNS1123_RULE}"],
        ),
    ],
)
def test_each_problem_names_field_and_value(changes: dict, expected: list[str]) -> None:
    assert problems(**changes) == expected


def test_several_problems_reported_together() -> None:
    got = problems(auth_mode="nope", request_timeout_ms=-1, extra_thing=1)
    assert len(got) == 3
    assert [line.split(":")[0] for line in got] == [
        "auth_mode",
        "request_timeout_ms",
        "extra_thing",
    ]


def test_not_json_and_not_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config("{", "x")
    with pytest.raises(ConfigError, match=r"top level must be a JSON object \(got list\)"):
        parse_config("[]", "x")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_secrets_from_files_then_env(tmp_path: Path) -> None:
    (tmp_path / "primary_key").write_text("file-key\n")
    cfg = parse_config(json.dumps({**BASE, "secrets_dir": str(tmp_path)}))
    s = load_secrets(
        cfg, env={"ML_ENDPOINTS_PRIMARY_KEY": "env-key", "ML_ENDPOINTS_SECONDARY_KEY": "env-key-2"}
    )
    assert (s.primary_key, s.secondary_key, s.token_signing_key) == (
        b"file-key",
        b"env-key-2",
        None,
    )
    assert "file-key" not in repr(s) and "env-key" not in repr(s)


def test_missing_secret_names_where_it_was_looked_for(tmp_path: Path) -> None:
    cfg = parse_config(json.dumps({**BASE, "secrets_dir": str(tmp_path), "auth_mode": "aml_token"}))
    with pytest.raises(ConfigError) as info:
        load_secrets(cfg, env={})
    assert info.value.problems == [
        f"secrets.token_signing_key: auth_mode 'aml_token' needs it; none found in file "
        f"{tmp_path}/token_signing_key or env ML_ENDPOINTS_TOKEN_SIGNING_KEY"
    ]


def _state(**changes: object) -> RouterState:
    cfg = parse_config(json.dumps({**BASE, "secrets_dir": None, **changes}))
    return RouterState.build(
        cfg,
        load_secrets(
            cfg, env={"ML_ENDPOINTS_PRIMARY_KEY": "k1", "ML_ENDPOINTS_SECONDARY_KEY": "k2"}
        ),
    )


def test_route_decisions_without_sockets() -> None:
    state = _state(traffic={"blue": 100}, mirror_traffic={"green": 50})
    live, mirror = route(state, None, 0.3, 0.49)
    assert (live.name, mirror.name if mirror else None) == ("blue", "green")
    assert route(state, None, 0.3, 0.5)[1] is None
    live, mirror = route(state, b"green", 0.3, 0.0)  # pinned: never mirrored
    assert (live.name, mirror) == ("green", None)
    with pytest.raises(RouteError) as info:
        route(state, b"red", 0.3, 0.0)
    assert info.value.status == 404 and "(known: blue, green)" in info.value.message
    with pytest.raises(RouteError, match="has no deployment with traffic"):
        route(_state(traffic={}, mirror_traffic={}), None, 0.3, 0.0)


def test_authorize_modes() -> None:
    state = _state()
    authorize(state, b"Bearer k1")
    authorize(state, b"Bearer k2")
    with pytest.raises(Exception, match="invalid key"):
        authorize(state, b"Bearer k3")
    authorize(_state(auth_mode="none"), None)


def test_cli_prints_schema_and_requires_config(capsys: pytest.CaptureFixture[str]) -> None:
    from scoring.router.main import main

    assert main(["--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["endpoint_name", "deployments"]
    assert "sum to 0 or 100" in schema["properties"]["traffic"]["description"]
    assert main([]) == 2
    assert "--config FILE is required" in capsys.readouterr().err


def test_upstream_error_log_is_rate_limited(capfd: pytest.CaptureFixture[str]) -> None:
    from scoring.router.dispatch import Router

    router = Router(_state(), client=object())  # type: ignore[arg-type]  (never called)
    for i in range(50):
        router.log_upstream_error("blue", "connect", f"r{i}".encode(), "blue is down")
    router.log_upstream_error("green", "connect", b"g0", "green is down")
    lines = capfd.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == [
        "request r0: blue is down",
        "request g0: green is down",
    ]
    router._error_log[("blue", "connect")] = (0.0, 49)  # as if a second went by
    router.log_upstream_error("blue", "connect", b"r50", "blue is down")
    assert json.loads(capfd.readouterr().out)["message"] == (
        "request r50: blue is down (+49 more like it in the last second)"
    )


def test_token_auth_caches_verification_but_not_past_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scoring.router.dispatch as router_mod
    from scoring.router.auth import AuthError, issue_token

    signing = "s" * 32
    cfg = parse_config(json.dumps({**BASE, "secrets_dir": None, "auth_mode": "aml_token"}))
    state = RouterState.build(
        cfg, load_secrets(cfg, env={"ML_ENDPOINTS_TOKEN_SIGNING_KEY": signing})
    )
    t0 = 1_900_000_000.0
    monkeypatch.setattr(router_mod, "_now", lambda: t0)
    tok = issue_token(signing, "diabetes", ttl_s=60, now=t0)["accessToken"].encode()
    authorize(state, b"Bearer " + tok)
    assert state.tokens == {tok: t0 + 60 + router_mod.TOKEN_LEEWAY_S}
    authorize(state, b"Bearer " + tok)  # served from the cache
    forged = issue_token("f" * 32, "diabetes", ttl_s=60, now=t0)["accessToken"].encode()
    with pytest.raises(AuthError, match="signature is invalid"):
        authorize(state, b"Bearer " + forged)
    assert forged not in state.tokens
    monkeypatch.setattr(router_mod, "_now", lambda: t0 + 66)
    with pytest.raises(AuthError, match="token expired"):
        authorize(state, b"Bearer " + tok)


def test_tls_and_credential_files_are_checked_when_loaded(tmp_path: Path) -> None:
    from components._tls import make_ca, make_server_cert

    ca, ca_key = make_ca("unit CA")
    cert, key = make_server_cert(ca, ca_key, ["localhost"])
    other_key = make_server_cert(ca, ca_key, ["other"])[1]
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "other.key").write_bytes(other_key)
    (tmp_path / "cred").write_text("s3cret\n")
    env = {"ML_ENDPOINTS_PRIMARY_KEY": "k"}

    def load(**changes: object):
        config = parse_config(json.dumps({**BASE, "secrets_dir": None, **changes}))
        return load_secrets(config, env)

    tls = {"cert_file": str(tmp_path / "tls.crt"), "key_file": str(tmp_path / "tls.key")}
    secrets = load(tls=tls, internal_credential_file=str(tmp_path / "cred"))
    assert secrets.tls_context is not None
    assert secrets.internal_credential == b"s3cret"
    assert "s3cret" not in repr(secrets)
    with pytest.raises(ConfigError, match="no such file"):
        load(tls={**tls, "key_file": str(tmp_path / "missing.key")})
    with pytest.raises(
        ConfigError, match="must be a PEM certificate chain and its PEM private key"
    ):
        load(tls={**tls, "key_file": str(tmp_path / "other.key")})
    with pytest.raises(ConfigError, match="internal_credential_file: cannot read"):
        load(internal_credential_file=str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load(internal_credential_file=str(tmp_path / "empty"))
    assert problems(metrics_port=0)[0].startswith("metrics_port:")
    assert problems(max_token_lifetime_s=10)[0].startswith("max_token_lifetime_s:")


def test_token_route_without_keys_says_what_is_missing() -> None:
    from scoring.router.auth import AuthError
    from scoring.router.config import Secrets
    from scoring.router.dispatch import Request, token_for

    config = parse_config(json.dumps({**BASE, "auth_mode": "aml_token"}))
    state = RouterState.build(config, Secrets(None, None, b"k" * 32))
    req = Request(b"POST", b"/token", b"", [], b"", authorization=b"Bearer anything")
    with pytest.raises(AuthError, match="no keys to exchange for a token"):
        token_for(state, req)
    state = RouterState.build(config, Secrets(b"key1", None, b"k" * 32))
    req.authorization = b"Bearer key1"
    assert json.loads(token_for(state, req))["tokenType"] == "Bearer"
