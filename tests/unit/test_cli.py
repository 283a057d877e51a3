"""`ml-endpoints` without sockets: argument handling, secrets, tokens, kubectl argv, stack env.

The outputs source is injected; `logs` runs a fake `kubectl` (a script on PATH that records
its arguments). The last tests use the real Pulumi CLI through the Automation API on a
throwaway file backend (about 2 s); they skip when `make setup` has not installed the CLI.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlendpoints import StackError, read_cluster, read_outputs
from mlendpoints import stack as stackmod
from mlendpoints.cli import authorization, main, router_base
from mlendpoints.paths import REPO
from mlendpoints.versions import PULUMI_VERSION

SIGNING = "token-signing-key-for-unit-tests-0123456789"
OUTPUTS: dict[str, Any] = {
    "endpoint_name": "diabetes",
    "namespace": "ml-endpoints-dev",
    "auth_mode": "key",
    "scoring_uri": "http://127.0.0.1:30080/score",
    "swagger_uri": "http://127.0.0.1:30080/swagger.json",
    "primary_key": "pk-0123456789",
    "secondary_key": "sk-9876543210",
    "token_signing_key": SIGNING,
    "traffic": {"blue": 100},
    "mirror_traffic": {},
    "deployments": {"blue": {"kubernetes_name": "diabetes-blue"}},
    "image_digests": {"blue": "sha256:" + "a" * 64},
}


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    outputs: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[int, str, str]:
    code = main(argv, outputs=lambda _stack: OUTPUTS if outputs is None else outputs, **kw)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_router_base_strips_score_path() -> None:
    assert router_base("http://127.0.0.1:30080/score") == "http://127.0.0.1:30080"
    assert router_base("http://h:1/prefix/score/") == "http://h:1/prefix"


def test_authorization_per_auth_mode() -> None:
    """Keys and `none` need no network; tokens come from the router (tests/http)."""
    assert authorization(OUTPUTS, "dev") == "Bearer pk-0123456789"
    assert authorization(OUTPUTS, "dev", key="secondary") == "Bearer sk-9876543210"
    assert authorization({**OUTPUTS, "auth_mode": "none"}, "dev") is None


def test_keys_printed_as_azure_get_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["keys"], capsys)
    assert code == 0 and err == ""
    assert json.loads(out) == {"primaryKey": "pk-0123456789", "secondaryKey": "sk-9876543210"}


def test_keys_in_token_mode_says_keys_are_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["keys"], capsys, {**OUTPUTS, "auth_mode": "aml_token"})
    assert code == 0
    assert err == (
        "note: endpoint auth mode is 'aml_token'; keys are not accepted by the endpoint now\n"
    )


def test_token_bad_ttl_and_key_mode_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["token", "--ttl", "0"], capsys)
    assert (code, out) == (2, "")
    assert err == "ml-endpoints token: --ttl: must be > 0 seconds (got 0)\n"
    code, _, err = run(["token"], capsys)
    assert code == 2
    assert err == (
        "ml-endpoints token: the endpoint's auth mode is 'key'; the router issues tokens "
        "only in 'aml_token' mode\n"
    )


def test_missing_output_names_it_and_what_to_run(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {k: v for k, v in OUTPUTS.items() if k != "secondary_key"}
    code, out, err = run(["keys", "--stack", "prod"], capsys, outputs)
    assert (code, out) == (2, "")
    assert err.startswith(
        "ml-endpoints keys: stack 'prod' has no output 'secondary_key' "
        "(outputs: auth_mode, deployments, "
    )
    assert err.endswith("; run `pulumi up --stack prod`\n")
    assert "pk-0123456789" not in err


def test_stack_error_from_the_source_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def missing(stack: str) -> dict[str, Any]:
        raise StackError(f"stack {stack!r} does not exist")

    code = main(["status", "--stack", "qa"], outputs=missing)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == "ml-endpoints status: stack 'qa' does not exist\n"


def test_invoke_unreadable_request_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    code, _, err = run(["invoke", "--request-file", str(missing)], capsys)
    assert code == 2
    assert err == (
        f"ml-endpoints invoke: --request-file: cannot read {str(missing)!r} "
        "(No such file or directory)\n"
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["invoke"], ["logs"], ["logs", "--deployment", "b", "--router"]):
        with pytest.raises(SystemExit) as exc:
            main(argv, outputs=lambda _s: OUTPUTS)
        assert exc.value.code == 2, argv
    capsys.readouterr()


# ------------------------------------------------------------------------------------ logs


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `kubectl` on PATH that writes its arguments, one per line, to a file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "kubectl-argv"
    script = bindir / "kubectl"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\necho 'pod/x line'\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_logs_runs_kubectl_on_the_deployments_pods(
    fake_kubectl: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    code = main(
        ["logs", "--deployment", "blue", "--tail", "20"],
        outputs=lambda _s: OUTPUTS,
        cluster=lambda _s: {"kubeconfig": str(kubeconfig), "context": "k3s"},
    )
    assert code == 3  # kubectl's own exit code
    argv = fake_kubectl.read_text().splitlines()
    assert argv == [
        "--kubeconfig",
        str(kubeconfig),
        "--context",
        "k3s",
        "--namespace",
        "ml-endpoints-dev",
        "logs",
        "--selector",
        "app.kubernetes.io/name=ml-endpoints-scoring,mlendpoints/endpoint=diabetes,"
        "mlendpoints/deployment=blue",
        "--prefix",
        "--tail",
        "20",
        "--max-log-requests",
        "20",
    ]
    assert "pod/x line" in capfd.readouterr().out


def test_logs_router_and_follow(
    fake_kubectl: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    main(
        ["logs", "--router", "-f"],
        outputs=lambda _s: OUTPUTS,
        cluster=lambda _s: {"kubeconfig": str(kubeconfig)},
    )
    argv = fake_kubectl.read_text().splitlines()
    assert "--context" not in argv
    assert argv[argv.index("--selector") + 1] == (
        "app.kubernetes.io/name=ml-endpoints-router,mlendpoints/endpoint=diabetes"
    )
    assert argv[-1] == "--follow"
    capfd.readouterr()


def test_logs_unknown_deployment_and_missing_kubeconfig(
    fake_kubectl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["logs", "--deployment", "green"], capsys)
    assert code == 2
    assert err == (
        "ml-endpoints logs: --deployment: no deployment 'green' in stack 'dev' "
        "(deployments: blue)\n"
    )
    missing = tmp_path / "none" / "kubeconfig"
    code, _, err = run(
        ["logs", "--deployment", "blue"], capsys, cluster=lambda _s: {"kubeconfig": str(missing)}
    )
    assert code == 2
    assert err.startswith(
        f"ml-endpoints logs: cluster.kubeconfig: {str(missing)!r} does not "
        "exist; start the cluster (make cluster-up)"
    )
    assert not fake_kubectl.exists()


# ----------------------------------------------------------------------- stack environment


def test_pulumi_env_has_env_sh_defaults_and_caller_values_win(tmp_path: Path) -> None:
    env = stackmod.pulumi_env(tmp_path, {"ML_ENDPOINTS_CACHE": "/c", "PATH": "/usr/bin"})
    assert env["PULUMI_HOME"] == "/c/pulumi-home"
    assert env["PULUMI_BACKEND_URL"] == "file:///c/state?metadata=skip"
    assert "PULUMI_CONFIG_PASSPHRASE" not in env  # never a shared default
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PATH"].split(os.pathsep) == [
        f"/c/tools/pulumi-{PULUMI_VERSION}/bin",
        str(tmp_path / ".venv" / "bin"),
        "/usr/bin",
    ]
    mine = stackmod.pulumi_env(
        tmp_path,
        {
            "ML_ENDPOINTS_CACHE": "/c",
            "PATH": "",
            "PULUMI_CONFIG_PASSPHRASE": "mine",
            "PULUMI_BACKEND_URL": "file:///elsewhere",
        },
    )
    assert mine["PULUMI_CONFIG_PASSPHRASE"] == "mine"
    assert mine["PULUMI_BACKEND_URL"] == "file:///elsewhere"


def test_each_stack_gets_its_own_private_passphrase(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = {"ML_ENDPOINTS_CACHE": str(cache), "PATH": ""}
    dev = stackmod.pulumi_env(tmp_path, base, stack="dev")
    prod = stackmod.pulumi_env(tmp_path, base, stack="prod")
    dev_file = Path(dev["PULUMI_CONFIG_PASSPHRASE_FILE"])
    prod_file = Path(prod["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert dev_file == cache / "state" / "ml-endpoints" / "dev.passphrase"
    assert dev_file.read_text() != prod_file.read_text()
    assert len(dev_file.read_text().strip()) >= 40
    assert stat.S_IMODE(dev_file.stat().st_mode) == 0o600
    for folder in (dev_file.parent, cache / "state"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    # Generated once: the same file, same content, next time.
    again = stackmod.pulumi_env(tmp_path, base, stack="dev")
    assert Path(again["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text() == dev_file.read_text()
    # env.sh's file for dev is switched to prod's for `--stack prod`.
    switched = stackmod.pulumi_env(tmp_path, {**base, **dev}, stack="prod")
    assert switched["PULUMI_CONFIG_PASSPHRASE_FILE"] == str(prod_file)


def test_user_passphrase_and_kms_provider_win(tmp_path: Path) -> None:
    base = {"ML_ENDPOINTS_CACHE": str(tmp_path / "cache"), "PATH": ""}
    mine = stackmod.pulumi_env(tmp_path, {**base, "PULUMI_CONFIG_PASSPHRASE": "x"}, stack="dev")
    assert mine["PULUMI_CONFIG_PASSPHRASE"] == "x" and "PULUMI_CONFIG_PASSPHRASE_FILE" not in mine
    own = str(tmp_path / "my.passphrase")
    mine = stackmod.pulumi_env(
        tmp_path, {**base, "PULUMI_CONFIG_PASSPHRASE_FILE": own}, stack="dev"
    )
    assert mine["PULUMI_CONFIG_PASSPHRASE_FILE"] == own
    (tmp_path / "Pulumi.prod.yaml").write_text("secretsprovider: awskms://alias/x\nconfig: {}\n")
    kms = stackmod.pulumi_env(tmp_path, base, stack="prod")
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in kms and "PULUMI_CONFIG_PASSPHRASE" not in kms


def test_stack_made_with_the_old_default_keeps_opening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("encryptionsalt: v1:abc\nconfig: {}\n")
    env = stackmod.pulumi_env(tmp_path, {"ML_ENDPOINTS_CACHE": str(tmp_path / "c")}, stack="dev")
    assert Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text() == "ml-endpoints-local-dev\n"
    assert "old shared passphrase" in capsys.readouterr().err


def test_kubeconfig_path_expands_cache_and_project_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_ENDPOINTS_CACHE", "/cache")
    assert stackmod.kubeconfig_path({}, tmp_path) == Path("/cache/cluster/kubeconfig")
    assert stackmod.kubeconfig_path({"kubeconfig": "k/cfg"}, tmp_path) == tmp_path / "k/cfg"
    monkeypatch.delenv("ML_ENDPOINTS_CACHE")
    assert stackmod.kubeconfig_path({"kubeconfig": "$ML_ENDPOINTS_CACHE/x"}, tmp_path) == (
        Path("~/.cache/ml-endpoints/x").expanduser()
    )


def test_project_root_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert stackmod.project_root(tmp_path / "a" / "b") == tmp_path.resolve()


# ----------------------------------------------- the Automation API reader (real CLI, ~2 s)


@pytest.fixture
def pulumi_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (stackmod.cli_root() / "bin" / "pulumi").is_file():
        pytest.skip(f"no Pulumi CLI at {stackmod.cli_root()}: run `make setup`")
    work = tmp_path / "project"
    work.mkdir()
    (work / "Pulumi.yaml").write_text("name: ml-endpoints\nruntime: python\n")
    monkeypatch.chdir(work)
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'state'}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "unit-tests-only")
    return work


def test_reader_names_a_missing_stack_and_what_to_run(pulumi_project: Path) -> None:
    with pytest.raises(StackError) as exc:
        read_outputs("nosuch")
    assert str(exc.value).startswith("stack 'nosuch' does not exist in file://")
    assert str(exc.value).endswith(
        "deploy it with `make deploy STACK=nosuch` (or "
        "`. scripts/env.sh && pulumi up --stack nosuch`)"
    )


def test_reader_on_a_stack_with_no_outputs(pulumi_project: Path) -> None:
    env = stackmod.pulumi_env(pulumi_project)
    subprocess.run(
        ["pulumi", "stack", "init", "empty", "--non-interactive"],
        cwd=pulumi_project,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [
            "pulumi",
            "config",
            "set",
            "--path",
            "ml-endpoints:cluster.context",
            "k3s",
            "--stack",
            "empty",
        ],
        cwd=pulumi_project,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    with pytest.raises(StackError) as exc:
        read_outputs("empty")
    assert str(exc.value) == (
        "stack 'empty' has no outputs (nothing deployed yet); run "
        "`make deploy STACK=empty` (or `pulumi up --stack empty`)"
    )
    assert read_cluster("empty") == {"context": "k3s"}
    # The same through the installed command, as a user runs it.
    command = Path(sys.executable).parent / "ml-endpoints"
    proc = subprocess.run(
        [str(command), "status", "--stack", "empty"],
        cwd=pulumi_project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("ml-endpoints status: stack 'empty' has no outputs")


def test_reader_returns_plain_values_of_a_deployed_stack(pulumi_project: Path) -> None:
    """`up` of an inline program exporting a secret, then the reader, as `invoke` uses it."""
    import pulumi
    from pulumi import automation as auto

    def program() -> None:
        pulumi.export("scoring_uri", "http://127.0.0.1:9/score")
        pulumi.export("primary_key", pulumi.Output.secret("pk-from-the-stack"))
        pulumi.export("traffic", {"blue": 90, "green": 10})

    env = stackmod.pulumi_env(pulumi_project)
    stack = auto.create_stack(
        "deployed",
        project_name="ml-endpoints",
        program=program,
        opts=auto.LocalWorkspaceOptions(
            env_vars=env, pulumi_command=auto.PulumiCommand(root=str(stackmod.cli_root()))
        ),
    )
    stack.up()
    assert read_outputs("deployed") == {
        "scoring_uri": "http://127.0.0.1:9/score",
        "primary_key": "pk-from-the-stack",
        "traffic": {"blue": 90, "green": 10},
    }
    assert read_cluster("deployed") == {}


def test_test_stack_copies_carry_none_of_the_users_secrets(tmp_path: Path) -> None:
    """`make deploy` then `make test`: the user's Pulumi.dev.yaml has a salt (and maybe
    secure values) from its own passphrase; the e2e tier's copy must carry neither."""
    from mlendpoints._project import dev_stack_config

    user = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    user["encryptionsalt"] = "v1:c2FsdA==:v1:abc:def"
    user["config"]["ml-endpoints:deployments"][0]["secret_environment_variables"] = {
        "API_TOKEN": {"secure": "v1:AAAA:BBBB"}
    }
    user["config"]["ml-endpoints:other"] = {"secure": "v1:CCCC"}
    source = tmp_path / "Pulumi.dev.yaml"
    source.write_text(yaml.safe_dump(user))
    copy = dev_stack_config("mle-e2e-x", source)
    text = yaml.safe_dump(copy)
    assert "encryptionsalt" not in copy and "secure" not in text
    assert copy["config"]["ml-endpoints:cluster"]["namespace"] == "mle-e2e-x"
    assert "node_port" not in copy["config"]["ml-endpoints:endpoint"]["router"]
    assert copy["config"]["ml-endpoints:deployments"][0]["name"] == "blue"


def test_env_sh_gives_each_stack_its_own_passphrase_file(tmp_path: Path) -> None:
    """scripts/env.sh applies the same rule as `stack_passphrase` (the shell's side)."""
    cache = tmp_path / "cache"
    show = 'printf "%s|%s" "${PULUMI_CONFIG_PASSPHRASE:-}" "${PULUMI_CONFIG_PASSPHRASE_FILE:-}"'
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "ML_ENDPOINTS_CACHE": str(cache)}

    def source(stack: str, **extra: str) -> tuple[str, str]:
        out = subprocess.run(
            ["bash", "-c", f". scripts/env.sh && {show}"],
            cwd=REPO,
            env={**env, "ML_ENDPOINTS_STACK": stack, **extra},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        given, _, file = out.partition("|")
        return given, file

    # Stacks with no Pulumi.<stack>.yaml here: a user's deployed dev stack has a salt.
    given, dev = source("unit-a")
    assert given == "" and dev == str(cache / "state" / "ml-endpoints" / "unit-a.passphrase")
    _, prod = source("unit-b", PULUMI_CONFIG_PASSPHRASE_FILE=dev)  # env.sh's own: switched
    assert prod.endswith("/unit-b.passphrase")
    assert Path(dev).read_text() != Path(prod).read_text()
    assert len(Path(dev).read_text().strip()) >= 40
    assert stat.S_IMODE(Path(dev).stat().st_mode) == 0o600
    assert stat.S_IMODE((cache / "state").stat().st_mode) == 0o700
    assert source("unit-a", PULUMI_CONFIG_PASSPHRASE="mine") == ("mine", "")
