"""Where collected data goes (issue 14), under Pulumi mocks: the stack's `collection` section
and `data_collection.destination` (or `collect_destination`) become an S3 Secret read by
`secretKeyRef` (keys in no plain place), or a retained PersistentVolumeClaim mounted as the
destination; the pods get the names of the Azure layout, a grace period that covers the final
shipping pass, a spool sized from its limit; the environment image gets boto3 only for S3;
preview says where data goes; a destination that cannot work is refused naming the key;
Azure's key names render exactly what the server's `collect_*` names do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import _collection, _pods
from infra import config as cfgmod
from infra import program
from tests.support.pulumi_mocks import Recorder, install, stack_raw

pytestmark = pytest.mark.components

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
IMAGE = "mlendpoints:index:Image"
ACCESS_KEY = "collection-access-key-id-42"
SECRET_KEY = "collection-secret-access-key-0123456789"


def render(raw: dict[str, Any]) -> Recorder:
    recorder = install()

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        return program.build(cfgmod.parse(raw)).scoring_uri

    go()
    return recorder


def with_destination(assets: dict[str, Path], destination: str, **storage: Any) -> dict[str, Any]:
    """blue collects at rate 1 to DESTINATION; green collects nothing."""
    raw = stack_raw(assets)
    raw["deployments"][0]["data_collection"] = {
        "collect": True,
        "collect_destination": destination,
    }
    if storage:
        raw["collection"] = storage
    return raw


def pod(rec: Recorder, name: str) -> dict[str, Any]:
    return rec.one(DEPLOYMENT, f"{name}-deployment").inputs["spec"]["template"]


def env_of(rec: Recorder, name: str) -> list[dict[str, Any]]:
    [container] = pod(rec, name)["spec"]["containers"]
    return container["env"]


def plain_env(rec: Recorder, name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env_of(rec, name) if "value" in e}


def test_s3_keys_reach_the_pod_only_through_a_secret(assets: dict[str, Path]) -> None:
    raw = with_destination(
        assets,
        "s3://ml-endpoints-collected/runs",
        s3={
            "endpoint_url": "http://192.0.2.2:7070",
            "region": "eu-west-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
        },
    )
    rec = render(raw)
    secret = rec.one(SECRET, "blue-collection-s3")
    assert secret.inputs["metadata"]["name"] == "diabetes-blue-collection-s3"
    assert secret.inputs["stringData"] == {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    assert "secret" in json.dumps(secret.raw["stringData"]), "the keys are Pulumi secrets"
    env = plain_env(rec, "blue")
    assert env["DATA_COLLECTION_DESTINATION"] == "s3://ml-endpoints-collected/runs"
    assert env["AWS_ENDPOINT_URL"] == "http://192.0.2.2:7070"
    assert env["AWS_REGION"] == "eu-west-1"
    assert (env["ML_ENDPOINTS_ENDPOINT"], env["ML_ENDPOINTS_DEPLOYMENT"]) == ("diabetes", "blue")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in env_of(rec, "blue") if "valueFrom" in e
    }
    assert refs == {
        var: {"name": "diabetes-blue-collection-s3", "key": var}
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    # The pods wait for the Secret, and roll when a key changes (a digest, not the keys).
    blue = rec.one(DEPLOYMENT, "blue-deployment")
    assert secret.urn in blue.dependencies
    assert len(pod(rec, "blue")["metadata"]["annotations"]["mlendpoints/collection-keys"]) == 16
    # The keys are in no pod spec, ConfigMap, Service or other plain input.
    for reg in rec.regs:
        if reg is secret:
            continue
        text = json.dumps(reg.inputs)
        assert ACCESS_KEY not in text and SECRET_KEY not in text, (reg.type, reg.name)
    # Green ships nowhere and gets none of it.
    assert "AWS_REGION" not in plain_env(rec, "green")
    assert plain_env(rec, "green")["ML_ENDPOINTS_DEPLOYMENT"] == "green"
    assert not [r for r in rec.of_type(SECRET) if r.name == "green-collection-s3"]


def test_s3_puts_boto3_in_the_environment_image_only_then(assets: dict[str, Path]) -> None:
    [env_image] = [r for r in render(stack_raw(assets)).of_type(IMAGE) if r.name == "sklearn-image"]
    assert _collection.SERVER_EXTRAS_ARG not in env_image.inputs["build_args"]
    rec = render(with_destination(assets, "s3://ml-endpoints-collected/"))
    [env_image] = [r for r in rec.of_type(IMAGE) if r.name == "sklearn-image"]
    assert env_image.inputs["build_args"][_collection.SERVER_EXTRAS_ARG] == "s3"
    # No keys configured: the pod's own credentials (nothing from a Secret).
    assert not [e for e in env_of(rec, "blue") if "valueFrom" in e]
    assert "AWS_ENDPOINT_URL" not in plain_env(rec, "blue")


def test_pvc_destination_is_a_retained_claim_mounted_as_the_destination(
    assets: dict[str, Path],
) -> None:
    rec = render(
        with_destination(assets, "pvc", pvc={"size": "2Gi", "storage_class": "local-path"})
    )
    claim = rec.one(PVC, "blue-collected")
    assert claim.inputs["metadata"]["name"] == "diabetes-blue-collected"
    assert claim.inputs["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "local-path",
        "resources": {"requests": {"storage": "2Gi"}},
    }
    spec = pod(rec, "blue")["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["collected"]["persistentVolumeClaim"] == {"claimName": "diabetes-blue-collected"}
    [container] = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["collected"] == _collection.DEST_DIR
    assert plain_env(rec, "blue")["DATA_COLLECTION_DESTINATION"] == _collection.DEST_DIR
    assert claim.urn in rec.one(DEPLOYMENT, "blue-deployment").dependencies
    assert not rec.of_type(SECRET) or not [r for r in rec.of_type(SECRET) if "collection" in r.name]


def test_grace_period_and_spool_follow_the_destination(assets: dict[str, Path]) -> None:
    raw = with_destination(assets, "pvc")
    raw["deployments"][0]["data_collection"]["collect_spool_max_bytes"] = 64 * 1024 * 1024
    rec = render(raw)
    blue, green = pod(rec, "blue")["spec"], pod(rec, "green")["spec"]
    # pre-stop wait + drain of in-flight requests + 5 s + the final shipping pass
    assert blue["terminationGracePeriodSeconds"] == 6 + 30 + 5 + 30
    assert green["terminationGracePeriodSeconds"] == _pods.TERMINATION_GRACE_S
    spool = {v["name"]: v for v in blue["volumes"]}["data-collection"]
    assert spool["emptyDir"] == {"sizeLimit": f"{64 + 256}Mi"}


def test_preview_says_where_each_deployments_data_goes(assets: dict[str, Path]) -> None:
    raw = with_destination(
        assets, "s3://ml-endpoints-collected/runs/", s3={"endpoint_url": "http://192.0.2.2:7070"}
    )
    raw["deployments"][1]["data_collection"] = {"collect": True, "collect_sampling_rate": 0.5}
    lines = sorted(line for line in render(raw).logs if line.startswith("collect "))
    assert lines == [
        "collect blue: model_inputs/model_outputs at 1 sampling -> "
        "s3://ml-endpoints-collected/runs/diabetes/blue/<collection>/yyyy/MM/dd/HH/ "
        "at http://192.0.2.2:7070",
        "collect green: model_inputs/model_outputs at 0.5 sampling -> the pod's spool only: "
        "LOST when the pod goes (set destination)",
    ]


def test_azure_keys_and_server_names_give_the_components_the_same_deployment(
    assets: dict[str, Path],
) -> None:
    """`data_collection` in Azure's spelling renders exactly what the `collect_*` names do:
    every resource's inputs (pod env, PVC, volumes, grace) and the preview lines."""
    azure = stack_raw(assets)
    azure["deployments"][0]["data_collection"] = {
        "collections": {"model_inputs": {"enabled": True}, "model_outputs": {"enabled": "True"}},
        "sampling_rate": "0.5",
        "rolling_rate": "minute",
        "destination": "pvc",
    }
    server = stack_raw(assets)
    server["deployments"][0]["data_collection"] = {
        "collect": True,
        "collect_sampling_rate": 0.5,
        "collect_rolling_rate": "minute",
        "collect_destination": "pvc",
    }
    assert cfgmod.parse(azure).deployments == cfgmod.parse(server).deployments
    seen = [render(raw) for raw in (azure, server)]
    inputs = [{(r.type, r.name): r.inputs for r in rec.regs} for rec in seen]
    assert inputs[0] == inputs[1]
    previews = [sorted(x for x in rec.logs if x.startswith("collect ")) for rec in seen]
    # (sorted: the two deployments log in the order their outputs resolve)
    assert previews[0] == previews[1] and len(previews[0]) == 2
    env = plain_env(seen[0], "blue")
    assert (env["DATA_COLLECTION_ENABLED"], env["DATA_COLLECTION_SAMPLING_RATE"]) == ("true", "0.5")
    assert len(seen[0].of_type(PVC)) == 1


def test_one_collection_reaches_the_pod_and_the_preview_line(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["deployments"][0]["data_collection"] = {
        "collections": {"model_outputs": {"enabled": True}},
        "destination": "pvc",
    }
    rec = render(raw)
    assert plain_env(rec, "blue")["DATA_COLLECTION_COLLECTIONS"] == "model_outputs"
    [line] = [x for x in rec.logs if x.startswith("collect blue:")]
    assert line.startswith("collect blue: model_outputs at 1 sampling -> PersistentVolumeClaim ")


@pytest.mark.parametrize(
    ("destination", "storage", "problem"),
    [
        (
            "s3://A_B/x",
            {},
            "deployment 'blue' data_collection.destination: 's3://A_B/x' does not name "
            "a bucket (s3://BUCKET/PREFIX; 3-63 of a-z, 0-9, '.', '-')",
        ),
        (
            "collected",
            {},
            "deployment 'blue' data_collection.destination: 'collected' is not "
            "accepted; use s3://BUCKET/PREFIX, 'pvc', or an absolute folder the image provides",
        ),
        (
            "s3://bucket/",
            {"s3": {"access_key_id": ACCESS_KEY}},
            "collection.s3: set both access_key_id and secret_access_key, or neither",
        ),
    ],
)
def test_a_destination_that_cannot_work_is_refused(
    assets: dict[str, Path], destination: str, storage: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError) as info:
        render(with_destination(assets, destination, **storage))
    assert str(info.value).splitlines() == [problem]
    assert ACCESS_KEY not in str(info.value)


def test_stack_config_checks_the_collection_section(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["collection"] = {"pvc": {"size": "lots"}, "s3": {"bucket": "x"}}
    with pytest.raises(cfgmod.StackConfigError) as info:
        cfgmod.parse(raw)
    assert info.value.problems == [
        "collection.s3.bucket: unknown key; accepted keys: access_key_id, endpoint_url, region, "
        "secret_access_key",
        "collection.pvc.size: String should match pattern '^[0-9]+(Ki|Mi|Gi|Ti)$' (got 'lots')",
    ]
