"""The layers agree on every declared setting: stack config -> component Args -> pod -> server.

The per-deployment server settings are declared once (`scoring.server.config.DeploymentSettings`)
the router's upstream limits once (`scoring.router.config.RouterLimits`) and a deployment's
routing policy once (`scoring.router.config.RoutingPolicy`). For each field of those
declarations, these tests check that

(a) the stack config accepts it under that name, and leaving it out gives the declared default;
(b) the program, under Pulumi mocks, puts the stack's value into the pod env under the declared
    variable (router: into the router config file under the same name; routing policy: into the
    router file's entry for that deployment);
(c) the server's loader fed that pod env yields the same value (router: the config file parser);
(d) `python -m scoring serve --help` lists the flag with the same default.

The field lists of each layer are pinned too, so a setting added to one layer only (a stack key
that never reaches the pod, an env var the components render by hand, a server option nobody
can set from the stack) fails here until it is declared or listed as layer-only on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic.fields import FieldInfo

from components import OnlineDeployment, OnlineDeploymentArgs, RouterSettings
from infra import config as cfgmod
from scoring.router.config import DeploymentConfig as RouterDeployment
from scoring.router.config import RouterConfig, RouterLimits, RoutingPolicy, parse_config
from scoring.server.config import DataCollection, DeploymentSettings, Settings, load, parser
from tests.mocks.test_components import run_stack
from tests.support.pulumi_mocks import Recorder, stack_raw

REPO = Path(__file__).resolve().parents[2]

# What each layer has besides the declarations, on purpose. Adding to one of these is a decision.
SERVER_ONLY = {
    "entry_script",
    "model_dir",
    "host",
    "port",
    "collect_dir",
    "endpoint_name",
    "deployment_name",
    "access_log",
    "log_level",
    "graceful_timeout_s",
    "execution",
    "metrics_dir",
    "cors_origins",
    "internal_credential_file",
}
# A deployment's other keys, in the stack config and in OnlineDeploymentArgs.
NOT_SERVER = {
    "model",
    "environment",
    "image",
    "instance_count",
    "scale_settings",
    "resources",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "secret_environment_variables",
    "rollout_timeout_s",
}
DEPLOYMENT_ONLY = NOT_SERVER | {"name", "code"}
ARGS_ONLY = NOT_SERVER | {
    "endpoint_name",
    "namespace",
    "code_configuration",
    "registry",
    "internal_credential",
    "collection_storage",
}
# Set by the components (paths inside the pod), not by a deployment.
POD_ENV_ONLY = {
    "AZUREML_MODEL_DIR",
    "AZUREML_ENTRY_SCRIPT",
    "DATA_COLLECTION_DIR",
    "INTERNAL_CREDENTIAL_FILE",
    "ML_ENDPOINTS_ENDPOINT",
    "ML_ENDPOINTS_DEPLOYMENT",
}
# Set by the components for an S3 destination (its keys come from a Secret: `test_collection`).
POD_ENV_S3 = {"AWS_REGION"}
ROUTER_FILE_ONLY = {
    "endpoint_name",
    "auth_mode",
    "deployments",
    "traffic",
    "mirror_traffic",
    "secrets_dir",
    "tls",
    "metrics_port",
    "internal_credential_file",
    "max_token_lifetime_s",
    "rollout",  # scoring.router.rollout.RolloutSpec: endpoint.rollout in the stack config
    "rollout_from",
    "rollout_store",
    "discovery",  # the components write it (namespace, the ServiceAccount's files)
}
ROUTER_STACK_ONLY = {
    "replicas",
    "service_type",
    "node_port",
    "public_host",
    "reload",
    "image",
    "resources",
}
ROUTER_ARGS_ONLY = ROUTER_STACK_ONLY | {"base_image", "registry", "tls", "ingress"}
# A router file's deployment entry: where the deployment listens, and (with a rollout) what it
# serves (its image's content tag, which names the rollout); the components set both.
ROUTER_ENTRY_ONLY = {"url", "revision"}
ROLLOUT_ONLY_ENTRY = {"revision"}


def other_value(info: FieldInfo) -> Any:
    """A valid value different from the default (within the declared bounds)."""
    default = info.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, float):
        return 0.5 if default != 0.5 else 0.25
    if isinstance(default, str):  # a Literal: another of its choices; else a destination URL
        choices = [c for c in get_args(info.annotation) if c != default]
        return choices[0] if choices else "s3://other-bucket/prefix"
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    return default + 1 if high is None or default + 1 <= high else default - 1


def text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def get(model: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        model = getattr(model, key)
    return model


def put(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        raw = raw.setdefault(key, {})
    raw[path[-1]] = value


LEAVES = DeploymentSettings.leaves()
PATHS = {name: tuple(path.split(".")) for name, path in DeploymentSettings.key_paths().items()}
OTHER = {name: other_value(info) for name, info in LEAVES.items()}
ROUTER_OTHER = {name: other_value(info) for name, info in RouterLimits.model_fields.items()}
ROUTING_OTHER = {name: other_value(info) for name, info in RoutingPolicy.model_fields.items()}


def bare_raw(assets: dict[str, Path]) -> dict[str, Any]:
    """One deployment that sets no server setting and a router that sets no limit."""
    raw = stack_raw(assets, traffic={"blue": 100}, green=False)
    for key in ("worker_count", "request_settings"):
        raw["deployments"][0].pop(key, None)
    return raw


def set_everything(raw: dict[str, Any]) -> dict[str, Any]:
    for name, value in OTHER.items():
        put(raw["deployments"][0], PATHS[name], value)
    raw["endpoint"]["router"].update(ROUTER_OTHER)
    raw["deployments"][0].update(ROUTING_OTHER)
    return raw


def render(raw: dict[str, Any]) -> Recorder:
    return run_stack(raw)[0]


def pod_env(recorder: Recorder) -> dict[str, str]:
    dep = recorder.one("kubernetes:apps/v1:Deployment", "blue-deployment")
    [container] = dep.inputs["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def router_file(recorder: Recorder) -> dict[str, Any]:
    cm = recorder.one("kubernetes:core/v1:ConfigMap", "diabetes-router-config")
    return json.loads(cm.inputs["data"]["router.json"])


# -- every layer has exactly the declared fields, plus its own listed ones ----------------------


def test_each_layer_has_the_declared_fields_and_no_other_setting() -> None:
    assert set(LEAVES) == set(PATHS), "a setting must be a field of DeploymentSettings or a section"
    assert set(Settings.model_fields) == set(LEAVES) | SERVER_ONLY
    assert set(cfgmod.DeploymentConfig.model_fields) == (
        set(DeploymentSettings.model_fields) | set(RoutingPolicy.model_fields) | DEPLOYMENT_ONLY
    )
    assert {f.name for f in fields(OnlineDeploymentArgs)} == (
        set(DeploymentSettings.model_fields) | {"routing"} | ARGS_ONLY
    )
    assert set(RouterDeployment.model_fields) == set(RoutingPolicy.model_fields) | ROUTER_ENTRY_ONLY
    assert set(RouterConfig.model_fields) == set(RouterLimits.model_fields) | ROUTER_FILE_ONLY
    assert set(cfgmod.RouterConfig.model_fields) == (
        set(RouterLimits.model_fields) | ROUTER_STACK_ONLY
    )
    assert {f.name for f in fields(RouterSettings)} == {"limits"} | ROUTER_ARGS_ONLY


def test_azure_keys_are_spellings_of_declared_settings_only() -> None:
    """`data_collection`'s Azure keys (`collections`, `sampling_rate`, ...) set declared
    settings and nothing else, and none of them is a field name of its own."""
    azure = DataCollection.AZURE_KEYS
    assert {field for fields_ in azure.values() for field in fields_} <= set(LEAVES)
    assert not set(azure) & set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_server_field_is_the_declared_one(name: str) -> None:
    """Same default, bounds, type and doc in the server as in the declaration."""
    mine, declared = Settings.model_fields[name], LEAVES[name]
    assert (mine.annotation, mine.default, mine.metadata, mine.description) == (
        declared.annotation,
        declared.default,
        declared.metadata,
        declared.description,
    )
    assert declared.description and "\n" not in declared.description, "one-line docstring"


# -- (a) stack config: accepted under its name, default = the declaration's --------------------


def test_stack_config_defaults_are_the_declared_ones(assets: dict[str, Path]) -> None:
    dep = cfgmod.parse(bare_raw(assets)).deployments[0]
    assert {n: get(dep, p) for n, p in PATHS.items()} == {n: i.default for n, i in LEAVES.items()}
    router = cfgmod.parse(bare_raw(assets)).endpoint.router
    assert router.limits() == RouterLimits()
    assert dep.part(RoutingPolicy) == RoutingPolicy()


def test_stack_config_takes_every_setting_by_its_name(assets: dict[str, Path]) -> None:
    cfg = cfgmod.parse(set_everything(bare_raw(assets)))
    assert {n: get(cfg.deployments[0], p) for n, p in PATHS.items()} == OTHER
    assert cfg.endpoint.router.limits().model_dump() == ROUTER_OTHER
    assert cfg.deployments[0].part(RoutingPolicy).model_dump() == ROUTING_OTHER


def test_stack_config_bounds_are_the_declared_ones(assets: dict[str, Path]) -> None:
    raw = bare_raw(assets)
    put(raw["deployments"][0], PATHS["request_timeout_ms"], 600_001)
    with pytest.raises(cfgmod.StackConfigError) as info:
        cfgmod.parse(raw)
    assert info.value.problems == [
        "deployments[0].request_settings.request_timeout_ms: Input should be less than or "
        "equal to 600000 (got 600001)"
    ]


# -- (b) + (c): the pod env carries the stack's value, and the server reads it back ------------


@pytest.mark.parametrize("which", ["defaults", "every setting changed"])
def test_stack_value_reaches_pod_env_and_server(
    assets: dict[str, Path], tmp_path: Path, which: str
) -> None:
    raw = bare_raw(assets)
    expected = {n: i.default for n, i in LEAVES.items()}
    if which != "defaults":
        raw, expected = set_everything(raw), OTHER
    env = pod_env(render(raw))
    declared = {Settings.env_vars(name)[0]: name for name in LEAVES}
    s3 = POD_ENV_S3 if expected["collect_destination"].startswith("s3://") else set()
    assert set(env) == set(declared) | POD_ENV_ONLY | s3 | {"EXTRA"}
    assert {declared[var]: env[var] for var in declared} == {
        n: text(v) for n, v in expected.items()
    }
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(raw): return raw\n")
    credential = tmp_path / "credential"
    credential.write_text("internal-credential-for-tests")
    local = {
        **env,
        "AZUREML_ENTRY_SCRIPT": str(script),
        "AZUREML_MODEL_DIR": str(tmp_path),
        "INTERNAL_CREDENTIAL_FILE": str(credential),
    }
    settings = load([], local)
    assert {n: getattr(settings, n) for n in LEAVES} == expected


@pytest.mark.parametrize("which", ["defaults", "every limit changed"])
def test_router_limits_reach_the_router_file(assets: dict[str, Path], which: str) -> None:
    raw = bare_raw(assets)
    expected = RouterLimits().model_dump()
    if which != "defaults":
        raw, expected = set_everything(raw), ROUTER_OTHER
    text_of_file = router_file(render(raw))
    assert {k: text_of_file[k] for k in RouterLimits.model_fields} == expected
    parsed = parse_config(json.dumps(text_of_file))
    assert {k: getattr(parsed, k) for k in RouterLimits.model_fields} == expected


@pytest.mark.parametrize("which", ["defaults", "every policy changed"])
def test_routing_policy_reaches_the_router_file_entry(assets: dict[str, Path], which: str) -> None:
    """`deployments[i].idempotent` (each `RoutingPolicy` field) lands in the router file's entry
    for that deployment, and the router's parser reads the same value back."""
    raw = bare_raw(assets)
    expected = RoutingPolicy().model_dump()
    if which != "defaults":
        raw, expected = set_everything(raw), ROUTING_OTHER
    text_of_file = router_file(render(raw))
    entry = text_of_file["deployments"]["blue"]
    assert set(entry) == set(RoutingPolicy.model_fields) | (ROUTER_ENTRY_ONLY - ROLLOUT_ONLY_ENTRY)
    assert {k: entry[k] for k in RoutingPolicy.model_fields} == expected
    parsed = parse_config(json.dumps(text_of_file)).deployments["blue"]
    assert {k: getattr(parsed, k) for k in RoutingPolicy.model_fields} == expected


def test_environment_variables_cannot_shadow_a_setting() -> None:
    """A fourth copy of a setting in `environment_variables` is refused, naming the key."""
    args = OnlineDeploymentArgs(
        endpoint_name="diabetes",
        image="127.0.0.1:5000/custom:1",
        environment_variables={"SCORING_TIMEOUT_MS": "1", "WORKER_COUNT": "2", "OTHER": "x"},
    )
    with pytest.raises(ValueError) as info:
        OnlineDeployment("blue", args)
    assert str(info.value).splitlines() == [
        "deployment 'blue' environment_variables.SCORING_TIMEOUT_MS: the server reads it for "
        "request_settings.request_timeout_ms; set that instead (one value, checked, in every "
        "layer)",
        "deployment 'blue' environment_variables.WORKER_COUNT: the server reads it for "
        "worker_count; set that instead (one value, checked, in every layer)",
    ]


# -- (d) the server's command line --------------------------------------------------------------


def test_server_flags_carry_the_declared_defaults() -> None:
    actions = {a.dest: a for a in parser()._actions}
    for name, info in LEAVES.items():
        action = actions[name]
        assert Settings.flags(name)[0] in action.option_strings, name
        assert f"default {text(info.default)}]" in (action.help or ""), name
    help_text = subprocess.run(
        [sys.executable, "-m", "scoring", "serve", "--help"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    for name in LEAVES:
        assert Settings.flags(name)[0] in help_text, name
