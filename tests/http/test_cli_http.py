"""`ml-endpoints` against a real router over loopback, with the stack's outputs injected.

The router is `python -m scoring router` in front of two echo upstreams (blue, green), as in
tests/http/test_router.py. The CLI runs in-process (`mlendpoints.cli.main`) with an outputs
dict shaped like `pulumi stack output --json --show-secrets` of a deployed stack, so no
Pulumi CLI or cluster is needed; it talks to the router over real HTTP.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlendpoints._procs import Proc, free_port
from mlendpoints.cli import main
from tests.support.router import KEY1, KEY2, SIGNING, cfg, router, upstream

REQUEST = {"data": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02]]}


def outputs_for(url: str, auth_mode: str = "key", **over: Any) -> dict[str, Any]:
    """The outputs a deployed stack exports, pointing at the router at ``url``."""
    return {
        "endpoint_name": "diabetes",
        "namespace": "ml-endpoints-test",
        "auth_mode": auth_mode,
        "scoring_uri": f"{url}/score",
        "swagger_uri": f"{url}/swagger.json",
        "primary_key": KEY1,
        "secondary_key": KEY2,
        "ca_certificate": "",
        "traffic": {"blue": 100, "green": 0},
        "mirror_traffic": {"green": 50},
        "deployments": {
            n: {
                "kubernetes_name": f"diabetes-{n}",
                "service_url": "http://x:5001",
                "image": f"127.0.0.1:5000/scoring-{n}:abc",
            }
            for n in ("blue", "green")
        },
        "image_digests": {"blue": "sha256:" + "b" * 64, "green": "sha256:" + "9" * 64},
        **over,
    }


def run(
    argv: list[str], outputs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the CLI with ``outputs`` as the stack; (exit code, stdout, stderr)."""
    seen: list[str] = []

    def source(stack: str) -> dict[str, Any]:
        seen.append(stack)
        return outputs

    code = main(argv, outputs=source)
    captured = capsys.readouterr()
    assert seen == ["dev"] or "--stack" in argv, seen
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, Proc]]:
    with upstream("blue") as blue, upstream("green") as green:
        yield {"blue": blue, "green": green}


@pytest.fixture(scope="module")
def keyed(ups: dict[str, Proc], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """Key auth, blue 100 / green 0, 50% mirrored to green."""
    config = cfg(
        {n: p.url for n, p in ups.items()}, {"blue": 100, "green": 0}, mirror_traffic={"green": 50}
    )
    with router(tmp_path_factory.mktemp("cli-key"), config) as (proc, _):
        yield proc


@pytest.fixture(scope="module")
def tokened(ups: dict[str, Proc], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """Token auth, blue 100 / green 0."""
    config = cfg(
        {n: p.url for n, p in ups.items()}, {"blue": 100, "green": 0}, auth_mode="aml_token"
    )
    with router(tmp_path_factory.mktemp("cli-token"), config) as (proc, _):
        yield proc


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    return path


# ---------------------------------------------------------------------------------- invoke


def test_invoke_with_primary_key_reaches_live_deployment(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["invoke", "--request-file", str(request_file), "-v"], outputs_for(keyed.url), capsys
    )
    assert code == 0, err
    body = json.loads(out)
    assert body["deployment"] == "blue"
    assert json.loads(body["body"]) == REQUEST  # the file's bytes, unchanged
    assert body["has_authorization"] is False  # the key stops at the router
    assert err.startswith("answered by deployment 'blue' (request id ")


def test_invoke_pinned_to_a_deployment_at_zero_percent(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["invoke", "--request-file", str(request_file), "--deployment", "green", "--stack", "dev"],
        outputs_for(keyed.url),
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["deployment"] == "green"


def test_invoke_wrong_key_exits_1_with_status_and_json_error(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["invoke", "--request-file", str(request_file)],
        outputs_for(keyed.url, primary_key="not-the-key"),
        capsys,
    )
    assert code == 1
    assert out == ""
    prefix = f"error: POST {keyed.url}/score answered 401: "
    assert err.startswith(prefix), err
    answer = json.loads(err.removeprefix(prefix))
    assert answer["error"] == "invalid key"
    assert "not-the-key" not in err  # the secret is not echoed


def test_invoke_with_the_secondary_key(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key secondary sends the secondary key: it works while the primary is a wrong one."""
    outputs = outputs_for(keyed.url, primary_key="not-the-key")
    code, out, err = run(
        ["invoke", "--request-file", str(request_file), "--key", "secondary"], outputs, capsys
    )
    assert code == 0, err
    assert json.loads(out)["deployment"] == "blue"
    code, _, err = run(["invoke", "--request-file", str(request_file)], outputs, capsys)
    assert code == 1 and "answered 401" in err


def test_invoke_secondary_key_in_token_mode_is_a_usage_error(
    tokened: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["invoke", "--request-file", str(request_file), "--key", "secondary"],
        outputs_for(tokened.url, auth_mode="aml_token"),
        capsys,
    )
    assert (code, out) == (2, "")
    assert "--key secondary: the endpoint's auth mode is 'aml_token'" in err


def test_invoke_unknown_deployment_exits_1_with_router_404(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["invoke", "--request-file", str(request_file), "--deployment", "red"],
        outputs_for(keyed.url),
        capsys,
    )
    assert code == 1
    prefix = f"error: POST {keyed.url}/score answered 404: "
    assert err.startswith(prefix), err
    assert json.loads(err.removeprefix(prefix))["error"] == (
        "deployment 'red' named by header azureml-model-deployment does not exist "
        "(known: blue, green)"
    )


def test_invoke_with_token_auth_gets_a_token_from_the_router(
    tokened: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["invoke", "--request-file", str(request_file)],
        outputs_for(tokened.url, auth_mode="aml_token"),
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["deployment"] == "blue"
    # The primary key is not what got through: the same router refuses it as a token.
    code, _, err = run(
        ["invoke", "--request-file", str(request_file)],
        outputs_for(tokened.url, auth_mode="key"),
        capsys,
    )
    assert code == 1
    prefix = f"error: POST {tokened.url}/score answered 401: "
    assert json.loads(err.removeprefix(prefix))["error"] == "token is invalid (DecodeError)"


def test_token_for_a_wrong_key_is_refused_by_the_router(
    tokened: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = outputs_for(tokened.url, auth_mode="aml_token", primary_key="not-the-key")
    code, _, err = run(["invoke", "--request-file", str(request_file)], outputs, capsys)
    assert code == 1
    assert err.startswith(f"ml-endpoints invoke: POST {tokened.url}/token: HTTP 401: "), err
    assert "not-the-key" not in err


def test_invoke_nothing_listening_exits_1(
    request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(["invoke", "--request-file", str(request_file)], outputs_for(url), capsys)
    assert code == 1
    assert err.startswith(f"ml-endpoints invoke: POST {url}/score: no answer ("), err


# ----------------------------------------------------------------------------------- token


def test_token_is_accepted_by_the_router_until_it_expires(
    tokened: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    before = int(time.time())
    code, out, err = run(["token", "--ttl", "120"], outputs_for(tokened.url, "aml_token"), capsys)
    assert code == 0, err
    token = json.loads(out)
    assert set(token) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    assert before + 120 <= token["expiryTimeUtc"] <= int(time.time()) + 120
    assert token["expiryTimeUtc"] - token["refreshAfterTimeUtc"] == 60
    assert err.startswith("expires 20") and "note:" not in err
    req = urllib.request.Request(
        f"{tokened.url}/score",
        data=json.dumps(REQUEST).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token['accessToken']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["deployment"] == "blue"


# ------------------------------------------------------------------------- status, traffic


def test_status_shows_outputs_and_router_readiness(
    keyed: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = outputs_for(keyed.url)
    code, out, err = run(["status", "--json"], outputs, capsys)
    assert code == 0, err
    state = json.loads(out)
    assert state["router_ready"] == {"status": 200, "answer": "Ready"}
    assert state["scoring_uri"] == f"{keyed.url}/score"
    assert state["traffic"] == {"blue": 100, "green": 0}
    assert state["mirror_traffic"] == {"green": 50}
    assert state["deployments"]["green"]["image_digest"] == "sha256:" + "9" * 64
    assert KEY1 not in out and KEY2 not in out and SIGNING not in out  # no secret printed
    code, out, _ = run(["status"], outputs, capsys)
    assert code == 0
    assert "traffic:      blue 100%, green 0%\n" in out
    assert "mirror:       green 50%\n" in out
    assert f"  blue         sha256:{'b' * 64}  127.0.0.1:5000/scoring-blue:abc\n" in out
    assert out.endswith("router /ready: 200 Ready\n")


def test_status_router_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = run(["status"], outputs_for(url), capsys)
    assert code == 1
    assert f"router /ready: unreachable GET {url}/ready: no answer (" in out


def _summary(url: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}/mirror/summary", headers={"Authorization": f"Bearer {KEY1}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_traffic_reads_the_live_split_and_mirror_summary(
    keyed: Proc, request_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = outputs_for(keyed.url)
    for _ in range(20):  # ~10 copies to green (50%); blue and green answer differently
        assert run(["invoke", "--request-file", str(request_file)], outputs, capsys)[0] == 0
    deadline = time.monotonic() + 15
    while _summary(keyed.url)["mirror_calls_in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    direct = _summary(keyed.url)
    assert direct["mirror_calls_in_flight"] == 0
    green = direct["mirrors"]["green"]
    assert green["sent"] > 0

    code, out, err = run(["traffic", "--json"], outputs, capsys)
    assert code == 0, err
    assert json.loads(out) == {
        "stack": {"traffic": {"blue": 100, "green": 0}, "mirror_traffic": {"green": 50}},
        "router": direct,
    }

    code, out, _ = run(["traffic"], outputs, capsys)
    assert code == 0
    n = green["sent"]
    assert out.startswith(
        f"endpoint 'diabetes', router at {keyed.url}\n"
        "  deployment    live  mirror\n"
        "  blue          100%      0%\n"
        "  green           0%     50%\n"
        f"mirror green: sent {n}, statuses {{'200': {n}}}, errors {{}}, "
        f"equal 0, different {n}, not compared 0, skipped 0, "
        "equal ratio 0.0, latency mean "
    ), out


def test_traffic_says_when_the_router_has_not_loaded_the_stack_split(
    keyed: Proc, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = outputs_for(keyed.url, traffic={"blue": 90, "green": 10}, mirror_traffic={})
    code, out, _ = run(["traffic"], outputs, capsys)
    assert code == 0
    assert (
        "  (the stack says traffic blue 90%, green 10%, mirror none: the router has not "
        "loaded it yet)\n"
    ) in out


def test_traffic_wrong_key_exits_1(keyed: Proc, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["traffic"], outputs_for(keyed.url, primary_key="nope"), capsys)
    assert code == 1
    prefix = f"error: GET {keyed.url}/mirror/summary answered 401: "
    assert err.startswith(prefix), err
    assert json.loads(err.removeprefix(prefix))["error"] == "invalid key"
