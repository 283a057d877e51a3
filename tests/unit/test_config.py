"""Stack config: the shipped stacks parse; each bad value fails with its key path and value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config as cfgmod
from mlendpoints.paths import REPO as ROOT

pytestmark = pytest.mark.components


def stack_raw(stack: str) -> dict[str, Any]:
    """A stack file's `ml-endpoints:` keys as the program sees them."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in doc["config"].items()}


def errors_for(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(cfgmod.StackConfigError) as info:
        cfgmod.parse(raw)
    return info.value.problems


@pytest.fixture
def dev() -> dict[str, Any]:
    return copy.deepcopy(stack_raw("dev"))


def test_shipped_stacks_parse() -> None:
    dev = cfgmod.parse(stack_raw("dev"))
    assert dev.endpoint.traffic == {"blue": 100}
    assert dev.endpoint.auth_mode == "key"
    assert dev.cluster.cluster_id == "local-k3s"
    assert [d.name for d in dev.deployments] == ["blue"]
    prod = cfgmod.parse(stack_raw("prod"))
    assert prod.endpoint.auth_mode == "aml_token"
    assert prod.deployments[0].instance_count == 2
    assert prod.endpoint.router.service_type == "LoadBalancer"


def test_bad_traffic_sum_names_field(dev: dict[str, Any]) -> None:
    dev["deployments"].append({**dev["deployments"][0], "name": "green", "model": "diabetes-v2"})
    dev["endpoint"]["traffic"] = {"blue": 60, "green": 30}
    assert errors_for(dev) == [
        "endpoint.traffic: values sum to 90 (blue=60, green=30); must be 0 or 100"
    ]


def test_unknown_deployment_in_traffic(dev: dict[str, Any]) -> None:
    dev["endpoint"]["traffic"] = {"blue": 90, "green": 10}
    assert errors_for(dev) == [
        "endpoint.traffic.green: no deployment named 'green' in this endpoint (deployments: blue)"
    ]


def test_traffic_value_not_an_integer(dev: dict[str, Any]) -> None:
    dev["endpoint"]["traffic"] = {"blue": "all"}
    assert errors_for(dev) == [
        "endpoint.traffic.blue: Input should be a valid integer, unable to parse string as an "
        "integer (got 'all')"
    ]


def test_mirror_rules(dev: dict[str, Any]) -> None:
    dev["deployments"].append({**dev["deployments"][0], "name": "green"})
    dev["endpoint"]["traffic"] = {"blue": 90, "green": 10}
    dev["endpoint"]["mirror_traffic"] = {"green": 60}
    assert errors_for(dev) == [
        "endpoint.mirror_traffic.green: 60% is above the 50% mirror limit; use 0..50",
        "endpoint.mirror_traffic.green: 'green' takes live traffic (10%); mirror only to a "
        "deployment at 0%",
    ]


def test_bad_deployment_name(dev: dict[str, Any]) -> None:
    dev["deployments"][0]["name"] = "Blue_v2"
    dev["endpoint"]["traffic"] = {"Blue_v2": 100}
    assert errors_for(dev) == [
        "deployments[0].name: 'Blue_v2' is not DNS-1123 (lowercase letters, digits, '-', starts "
        "with a letter, ends with a letter or digit, <= 63 chars)"
    ]


def test_literal_lists_accepted_values(dev: dict[str, Any]) -> None:
    dev["endpoint"]["auth_mode"] = "keys"
    dev["endpoint"]["router"]["service_type"] = "Ingress"
    assert errors_for(dev) == [
        "endpoint.auth_mode: 'keys' is not accepted; accepted: 'key', 'aml_token' or 'none'",
        "endpoint.router.service_type: 'Ingress' is not accepted; accepted: 'NodePort', "
        "'LoadBalancer' or 'ClusterIP'",
    ]


def test_unknown_keys_list_accepted_keys(dev: dict[str, Any]) -> None:
    dev["endpoint"]["trafic"] = {"blue": 100}
    dev["deployments"][0]["replicas"] = 2
    dev["clustr"] = {}
    problems = errors_for(dev)
    assert problems == [
        "endpoint.trafic: unknown key; accepted keys: auth_mode, ingress, keys, "
        "max_token_lifetime_s, mirror_traffic, name, rollout, router, tls, traffic",
        "deployments[0].replicas: unknown key; accepted keys: code, data_collection, environment, "
        "environment_variables, idempotent, image, instance_count, liveness_probe, model, name, "
        "readiness_probe, request_settings, resources, rollout_timeout_s, scale_settings, "
        "secret_environment_variables, worker_count",
        "clustr: unknown key; accepted keys: cluster, collection, deployments, endpoint, "
        "environments, models, registry",
    ]


def test_range_errors_show_value(dev: dict[str, Any]) -> None:
    dev["deployments"][0]["instance_count"] = -1
    dev["endpoint"]["router"]["node_port"] = 80
    assert errors_for(dev) == [
        "endpoint.router.node_port: Input should be greater than or equal to 30000 (got 80)",
        "deployments[0].instance_count: Input should be greater than or equal to 0 (got -1)",
    ]


def test_references_between_sections(dev: dict[str, Any]) -> None:
    dev["deployments"][0]["model"] = "nope"
    del dev["deployments"][0]["code"]
    assert errors_for(dev) == [
        "deployments[0].model: 'nope' is not declared; declared models: diabetes, diabetes-v2",
        "deployments[0].code: missing (or set deployments[0].image)",
    ]


def test_prebuilt_image_needs_no_model(dev: dict[str, Any]) -> None:
    dev["deployments"] = [{"name": "blue", "image": "127.0.0.1:5000/custom:1"}]
    cfg = cfgmod.parse(dev)
    assert cfg.deployments[0].image == "127.0.0.1:5000/custom:1"


def test_duplicate_deployment_and_missing_sections() -> None:
    raw = {
        "endpoint": {"name": "e"},
        "deployments": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}],
    }
    assert errors_for(raw) == ["deployments[1].name: 'a' is used by another deployment"]
    assert errors_for({}) == [
        "endpoint: required key is missing",
        "deployments: required key is missing",
    ]


def test_environment_needs_exactly_one_source(dev: dict[str, Any]) -> None:
    dev["environments"]["sklearn"]["requirements"] = ["scikit-learn"]
    assert errors_for(dev) == [
        "environments.sklearn: give exactly one of conda_file, requirements_file, requirements, "
        "image (got conda_file, requirements)"
    ]


def test_ingress_is_optional_and_parsed(dev: dict[str, Any]) -> None:
    assert cfgmod.parse(dev).endpoint.ingress is None
    dev["endpoint"]["ingress"] = {
        "class_name": "nginx",
        "host": "scoring.example.com",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "300"},
    }
    ingress = cfgmod.parse(dev).endpoint.ingress
    assert ingress is not None
    assert (ingress.class_name, ingress.host) == ("nginx", "scoring.example.com")
    assert ingress.annotations == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "300"}


def test_ingress_needs_class_name_and_host(dev: dict[str, Any]) -> None:
    dev["endpoint"]["ingress"] = {"annotations": {}}
    assert errors_for(dev) == [
        "endpoint.ingress.class_name: required key is missing",
        "endpoint.ingress.host: required key is missing",
    ]
    dev["endpoint"]["ingress"] = {"class_name": "", "host": "scoring.example.com", "hosts": []}
    assert errors_for(dev) == [
        "endpoint.ingress.class_name: must not be empty: name the IngressClass of your "
        "controller (got '')",
        "endpoint.ingress.hosts: unknown key; accepted keys: annotations, class_name, host",
    ]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("Scoring.example.com", "is not a valid DNS name"),
        ("scoring_v1.example.com", "is not a valid DNS name"),
        ("scoring.example.com.", "is not a valid DNS name"),
        ("-scoring.example.com", "is not a valid DNS name"),
        ("a" * 64 + ".example.com", "is not a valid DNS name"),
        ("", "is not a valid DNS name"),
        ("10.0.0.5", "is an IP address"),
        ("*.example.com", "is a wildcard"),
    ],
)
def test_ingress_host_must_be_one_dns_name(dev: dict[str, Any], host: str, why: str) -> None:
    dev["endpoint"]["ingress"] = {"class_name": "nginx", "host": host}
    [problem] = errors_for(dev)
    assert problem.startswith(f"endpoint.ingress.host: {why}"), problem
    assert problem.endswith(f"(got {host!r})"), problem


def test_ingress_class_name_must_be_a_kubernetes_name(dev: dict[str, Any]) -> None:
    dev["endpoint"]["ingress"] = {"class_name": "Nginx Public", "host": "scoring.example.com"}
    assert errors_for(dev) == [
        "endpoint.ingress.class_name: is not a valid IngressClass name (lowercase letters, "
        "digits, '-' and '.') (got 'Nginx Public')"
    ]


def test_ingress_annotations_are_a_string_map(dev: dict[str, Any]) -> None:
    ingress: dict[str, Any] = {"class_name": "nginx", "host": "scoring.example.com"}
    dev["endpoint"]["ingress"] = {**ingress, "annotations": ["backend-protocol: HTTPS"]}
    assert errors_for(dev) == [
        "endpoint.ingress.annotations: Input should be a valid dictionary "
        "(got ['backend-protocol: HTTPS'])"
    ]
    dev["endpoint"]["ingress"] = {
        **ingress,
        "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": False, "a": {"b": "c"}},
    }
    assert errors_for(dev) == [
        "endpoint.ingress.annotations.nginx.ingress.kubernetes.io/ssl-redirect: Input should "
        "be a valid string (got False)",
        "endpoint.ingress.annotations.a: Input should be a valid string (got {'b': 'c'})",
    ]
    dev["endpoint"]["ingress"] = {
        **ingress,
        "annotations": {"ok/name": "1", "bad key": "1", "Bad_Prefix/x": "1", "a/b/c": "1"},
    }
    assert errors_for(dev) == [
        "endpoint.ingress.annotations: 'bad key', 'Bad_Prefix/x', 'a/b/c': not a valid "
        "annotation key ([prefix/]name, name <= 63 chars of letters, digits, '-', '_', '.') "
        "(got {'ok/name': '1', 'bad key': '1', 'Bad_Prefix/x': '1', 'a/b/c': '1'})"
    ]


def test_decode_leaves_scalars_alone() -> None:
    assert cfgmod._decode("3.11") == "3.11"
    assert cfgmod._decode('{"a": 1}') == {"a": 1}


def test_project_path_expands_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ML_ENDPOINTS_CACHE", str(tmp_path))
    assert cfgmod.project_path("$ML_ENDPOINTS_CACHE/cluster/kubeconfig") == (
        tmp_path / "cluster" / "kubeconfig"
    )
    assert cfgmod.project_path("samples/diabetes") == ROOT / "samples" / "diabetes"
