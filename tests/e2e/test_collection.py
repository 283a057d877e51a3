"""Collected data is never lost on graceful events (issue 14), on the local cluster with its
real S3 server (versitygw): the shipped dev stack, blue with two instances collecting every
request to `s3://ml-endpoints-collected/<namespace>`, keys from stack secrets.

Under a bounded concurrent load through the router (every request carries its own
`x-request-id`), one scoring pod is deleted, then blue is scaled down to one pod with `pulumi
up`; after the load, the last pod is rolled (`kubectl rollout restart`): each graceful stop
ships its spool. Then `ml-endpoints collected`
reads the bucket back, and every answered request's input and output are there exactly once
(counts), their values the ones sent and answered; no record of a request that was not
answered. Preview says where the data goes, and the S3 keys are in no pod spec. Last, a bucket
that does not exist fails `pulumi up` with the server's reason while the old pods serve.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from pulumi import automation as auto

from components import _labels
from mlendpoints._project import EndpointProject
from mlendpoints._sample import BATCH
from mlendpoints.cli import main
from mlendpoints.client import Verify, ca_file
from mlendpoints.kube import is_ready, kubectl, kubectl_json, running_pods
from tests.support.load import Load
from tests.support.pod_metrics import pod_metrics, sample_sum
from tests.support.router import wait_for as poll
from tests.support.s3 import S3_ENV, s3_client, s3_env
from tests.support.walkthrough import FIGURES

pytestmark = [pytest.mark.toolchain, pytest.mark.images, pytest.mark.cluster]

MAX_REQUESTS = 8000  # the load's bound; it is stopped once the scale-down is over


BLUE = _labels.as_selector(_labels.scoring_selector("diabetes", "blue"))


def blue_pods(ns: str) -> set[str]:
    """Blue's Ready pods that are not being deleted."""
    return {p["metadata"]["name"] for p in running_pods(ns, BLUE) if is_ready(p)}


def blue_pods_at_all(ns: str) -> int:
    """Blue's pods, terminating ones included (a stopping pod ships until it is gone)."""
    return len(kubectl_json("-n", ns, "get", "pods", "-l", BLUE)["items"])


def wait_for(what: str, check: Any, timeout: float = 180) -> Any:
    """CHECK's first truthy result, polled every second (kubectl and S3 calls)."""
    return poll(check, what, timeout, every=1)


def container_pids(container_id: str) -> list[int]:
    """The host's PIDs of a container's processes (its cgroup paths name it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if container_id in (proc / "cgroup").read_text():
                    found.append(int(proc.name))
            except OSError:  # gone meanwhile
                continue
    return found


def scoring_container(ns: str, pod: str) -> tuple[str, int]:
    """(container id, restart count) of a pod's scoring container."""
    status = kubectl_json("-n", ns, "get", "pod", pod)["status"]
    [scoring] = [c for c in status.get("containerStatuses", []) if c["name"] == "scoring"]
    return scoring.get("containerID", "").split("://")[-1], scoring["restartCount"]


def score_with_id(uri: str, key: str, verify: Verify, tag: str) -> tuple[str, requests.Response]:
    """One scoring request with its own `x-request-id` (TAG-<uuid>), the id collection records
    as the correlation id; returns the id and the response."""
    rid = f"{tag}-{uuid.uuid4().hex}"
    resp = requests.post(
        uri,
        data=BATCH,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "x-request-id": rid,
        },
        timeout=10,
        verify=verify,
    )
    return rid, resp


def collected(
    project: EndpointProject, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> str:
    """`ml-endpoints collected --deployment blue ARGV` against the stack's outputs, reading
    the bucket from the host (the pods' S3 URL is the node's)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, env[name])
    out, err = io.StringIO(), io.StringIO()
    outputs = project.outputs()
    code = main(
        [
            "collected",
            "--deployment",
            "blue",
            "--s3-endpoint-url",
            env["AWS_ENDPOINT_URL"],
            *argv,
        ],
        outputs=lambda _stack: outputs,
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    return out.getvalue()


@pytest.mark.timeout(1500)
def test_every_answered_request_is_in_s3_once_after_pod_delete_and_rollout(
    endpoint_project: EndpointProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not S3_ENV.exists():
        pytest.fail(f"{S3_ENV} is missing: `make cluster-up` starts the S3 server")
    env = s3_env()
    project, ns = endpoint_project, endpoint_project.namespace
    bucket = env["ML_ENDPOINTS_S3_BUCKET"]
    destination = f"s3://{bucket}/{ns}"
    project.set_config(
        {
            "deployments[0].instance_count": 2,
            "deployments[0].data_collection.collect": "true",
            "deployments[0].data_collection.collect_destination": destination,
            "deployments[0].data_collection.collect_max_file_bytes": 65536,
            "collection.s3.endpoint_url": env["ML_ENDPOINTS_S3_POD_ENDPOINT"],
            "collection.s3.region": env["AWS_REGION"],
        }
    )
    for key, var in (
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ):
        project.set_secret_config(f"collection.s3.{key}", env[var])
    s3 = s3_client(env, env["AWS_ENDPOINT_URL"])
    try:
        with project.logged("pulumi preview") as log:
            preview = project.stack.preview(on_output=log).stdout
        assert (
            f"collect blue: model_inputs/model_outputs at 1 sampling -> {destination}/"
            f"diabetes/blue/<collection>/yyyy/MM/dd/HH/ at {env['ML_ENDPOINTS_S3_POD_ENDPOINT']}"
        ) in preview, preview[-3000:]
        with project.logged("pulumi up") as log:
            project.stack.up(on_output=log)
        outputs = project.outputs()
        assert outputs["collection"]["blue"] == {
            "destination": destination,
            "endpoint_url": env["ML_ENDPOINTS_S3_POD_ENDPOINT"],
        }
        # The keys reach the pods by secretKeyRef only.
        spec = kubectl("-n", ns, "get", "deployment", "diabetes-blue", "-o", "json")
        assert env["AWS_SECRET_ACCESS_KEY"] not in spec and env["AWS_ACCESS_KEY_ID"] not in spec
        assert "diabetes-blue-collection-s3" in spec
        pods = wait_for("2 Ready blue pods", lambda: (p := blue_pods(ns)) and len(p) == 2 and p)

        verify = ca_file(ns, outputs["ca_certificate"])
        uri, key = outputs["scoring_uri"], outputs["primary_key"]
        answered: dict[str, Any] = {}
        answered_at: dict[str, float] = {}
        lock = threading.Lock()

        def ask() -> tuple[int, str]:
            rid, resp = score_with_id(uri, key, verify, "c")
            if resp.status_code == 200:
                with lock:
                    answered[rid] = resp.json()
                    answered_at[rid] = time.monotonic()
            return resp.status_code, resp.headers.get("azureml-model-deployment", "")

        load = Load(ask, threads=4, pause=0.02, max_seconds=600, max_requests=MAX_REQUESTS)
        with load:
            wait_for("the load running", lambda: len(load.answers) > 200)
            # A pod deleted (graceful): it drains and ships, a replacement starts.
            victim = sorted(pods)[0]
            kubectl("-n", ns, "delete", "pod", victim, "--wait=false")
            wait_for(
                f"a replacement for {victim}",
                lambda: (p := blue_pods(ns)) and len(p) == 2 and victim not in p,
            )
            # Scale-down to one pod (graceful): the other ships before it goes.
            project.set_config({"deployments[0].instance_count": 1})
            with project.logged("pulumi up (scale down)") as log:
                project.stack.up(on_output=log)
            wait_for("one blue pod left", lambda: blue_pods_at_all(ns) == 1, timeout=120)
            assert len(load.answers) + len(load.failures) < MAX_REQUESTS, "load ended early"
        assert load.failures == [], load.failures[:10]
        sent = len(answered)
        assert sent == len(load.answers)

        # The last pod stops gracefully (a rollout): what it still held ships now.
        kubectl("-n", ns, "rollout", "restart", "deployment/diabetes-blue")
        kubectl("-n", ns, "rollout", "status", "deployment/diabetes-blue", "--timeout=300s")
        started = time.monotonic()

        def shipped() -> int:
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{ns}/diabetes/blue/model_inputs/")
            keys = [o["Key"] for o in listed.get("Contents", [])]
            return sum(
                len(s3.get_object(Bucket=bucket, Key=k)["Body"].read().splitlines()) for k in keys
            )

        # The old pods are gone when rollout status returns, so shipping is done; this only
        # absorbs the last pod's exit racing the listing.
        wait_for(f"{sent} inputs in S3", lambda: shipped() >= sent, 120)
        shipped_after = time.monotonic() - started

        records = [
            json.loads(line)
            for line in collected(project, env, monkeypatch, "--name", "model_inputs").splitlines()
        ]
        outs = [
            json.loads(line)
            for line in collected(project, env, monkeypatch, "--name", "model_outputs").splitlines()
        ]
        for name, found in (("model_inputs", records), ("model_outputs", outs)):
            counts = Counter(r["correlationid"] for r in found if r["correlationid"] in answered)
            assert set(counts) == set(answered), (name, len(counts), len(answered))
            assert set(counts.values()) == {1}, (name, counts.most_common(3))
            stray = {r["correlationid"] for r in found} - set(answered)
            assert not {s for s in stray if s.startswith("c-")}, (name, sorted(stray)[:5])
        pairs = [
            json.loads(line)
            for line in collected(project, env, monkeypatch, "--join", "--since", "1h").splitlines()
        ]
        mine = [p for p in pairs if p["correlationid"] in answered]
        assert len(mine) == sent
        body = json.loads(BATCH)
        for pair in mine:
            assert pair["input"] == body
            assert pair["output"] == answered[pair["correlationid"]]
        # A bucket that does not exist fails `up` with the server's reason (its start probe),
        # and the running pods keep serving (the new one never becomes Ready).
        missing = f"s3://no-such-bucket-{ns}/x"
        project.set_config(
            {
                "deployments[0].data_collection.collect_destination": missing,
                "deployments[0].rollout_timeout_s": 45,
            }
        )
        with (
            project.logged("pulumi up (missing bucket)") as log,
            pytest.raises(auto.CommandError) as failed,
        ):
            project.stack.up(on_output=log)
        message = str(failed.value)
        assert f"'{missing}' cannot be written" in message, message[-3000:]
        assert "data collection destination" in message, message[-3000:]
        status, _ = ask()
        assert status == 200
        project.set_config(
            {
                "deployments[0].data_collection.collect_destination": destination,
                "deployments[0].rollout_timeout_s": 180,
            }
        )
        with project.logged("pulumi up (bucket back)") as log:
            project.stack.up(on_output=log)
        kill_figure = sigkill(ns, ask, answered, answered_at, project, env, monkeypatch)
        FIGURES.append(
            f"collection: {sent} answered through a pod delete, a scale-down and a rollout, "
            f"{sent} pairs in S3 exactly once (last files shipped "
            f"{shipped_after:.1f} s after the rollout); load {load.report()}"
        )
        FIGURES.append(f"collection: {kill_figure}")
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{ns}/"):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=o["Key"])


def sigkill(
    ns: str,
    ask: Any,
    answered: dict[str, Any],
    answered_at: dict[str, float],
    project: EndpointProject,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """SIGKILL every process of the scoring container under load (an OOM kill: the pod and
    its spool stay, the kubelet restarts the container, whose start ships what the killed one
    had spooled); then a rollout ships the rest. Only records answered within the flush
    interval before the kill may be missing. Returns the figure."""
    [pod] = blue_pods(ns)
    container, restarts = scoring_container(ns, pod)
    before = set(answered)
    load = Load(ask, threads=4, pause=0.02, max_seconds=300, max_requests=MAX_REQUESTS)
    with load:
        wait_for("the load running", lambda: len(load.answers) > 100)
        pids = container_pids(container)
        assert pids, f"no process of container {container} found under /proc"
        killed_at = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(
            "the container restarted and Ready",
            lambda: scoring_container(ns, pod)[1] > restarts and pod in blue_pods(ns),
        )
        count = len(load.answers)
        wait_for("answers after the restart", lambda: len(load.answers) > count + 100)
    kubectl("-n", ns, "rollout", "restart", "deployment/diabetes-blue")
    kubectl("-n", ns, "rollout", "status", "deployment/diabetes-blue", "--timeout=300s")
    wait_for("the old pod gone (its final ship done)", lambda: blue_pods_at_all(ns) == 1, 120)
    phase = set(answered) - before
    found = Counter(
        json.loads(line)["correlationid"]
        for line in collected(project, env, monkeypatch, "--name", "model_inputs").splitlines()
    )
    missing = phase - set(found)
    assert all(found[rid] == 1 for rid in phase if rid in found), "a record shipped twice"
    ages = sorted(killed_at - answered_at[rid] for rid in missing)
    # The records a worker still held in memory: answered within its 0.5 s flush interval
    # before the kill (2 s: timer lag on a busy machine). Everything older was spooled, and
    # nothing answered after the kill is missing (-0.5 s: the last answers' way to the client).
    assert not [a for a in ages if a > 2.0 or a < -0.5], ages
    return (
        f"SIGKILL of the scoring container under load: {len(missing)} of {len(phase)} answered "
        f"requests missing at the destination, all answered at most "
        f"{max(ages, default=0):.2f} s before the kill; {len(load.failures)} requests failed "
        f"while it restarted"
    )


def empty_bucket(s3: Any, bucket: str) -> list[bytes]:
    """Delete BUCKET with everything in it, returning the objects' bodies (a shipper may still
    be writing: repeat until the bucket itself is gone)."""
    bodies: list[bytes] = []
    for _ in range(50):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                bodies.append(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
                s3.delete_object(Bucket=bucket, Key=o["Key"])
        try:
            s3.delete_bucket(Bucket=bucket)
            return bodies
        except s3.exceptions.ClientError as exc:  # BucketNotEmpty: a file shipped meanwhile
            if "BucketNotEmpty" not in str(exc):
                raise
    raise AssertionError(f"bucket {bucket} never became empty")


def records_in(bodies: list[bytes], collection: str) -> Counter[str]:
    """Correlation ids of COLLECTION's records in BODIES; every line must be whole JSON."""
    found: Counter[str] = Counter()
    for body in bodies:
        for line in body.splitlines():
            record = json.loads(line)  # a truncated record fails here
            if record["type"] == f"azureml.inference.{collection}":
                found[record["correlationid"]] += 1
    return found


@pytest.mark.timeout(900)
def test_lost_destination_and_full_spool_drop_exactly_what_they_count(
    endpoint_project: EndpointProject,
) -> None:
    env = s3_env()
    project, ns = endpoint_project, endpoint_project.namespace
    s3 = s3_client(env, env["AWS_ENDPOINT_URL"])
    bucket = f"{ns}-spool"
    s3.create_bucket(Bucket=bucket)
    saved: list[bytes] = []
    try:
        project.set_config(
            {
                "deployments[0].instance_count": 1,
                "deployments[0].data_collection.collect": "true",
                "deployments[0].data_collection.collect_destination": f"s3://{bucket}/x",
                "deployments[0].data_collection.collect_max_file_bytes": 8192,
                "deployments[0].data_collection.collect_spool_max_bytes": 65536,
                "collection.s3.endpoint_url": env["ML_ENDPOINTS_S3_POD_ENDPOINT"],
                "collection.s3.region": env["AWS_REGION"],
            }
        )
        for key, var in (
            ("access_key_id", "AWS_ACCESS_KEY_ID"),
            ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ):
            project.set_secret_config(f"collection.s3.{key}", env[var])
        with project.logged("pulumi up (small spool)") as log:
            project.stack.up(on_output=log)
        [pod] = wait_for("one Ready blue pod", lambda: (p := blue_pods(ns)) and len(p) == 1 and p)
        outputs = project.outputs()
        verify = ca_file(ns, outputs["ca_certificate"])
        uri, key = outputs["scoring_uri"], outputs["primary_key"]
        answered: set[str] = set()
        lock = threading.Lock()

        def ask() -> tuple[int, str]:
            rid, resp = score_with_id(uri, key, verify, "s")
            if resp.status_code == 200:
                with lock:
                    answered.add(rid)
            return resp.status_code, resp.headers.get("azureml-model-deployment", "")

        dropped = "scoring_collection_dropped_total"
        load = Load(ask, threads=4, pause=0.01, max_seconds=300, max_requests=MAX_REQUESTS)
        with load:
            wait_for("files shipped", lambda: s3.list_objects_v2(Bucket=bucket).get("Contents"))
            saved += empty_bucket(s3, bucket)  # the destination is gone
            lost_at = len(load.answers)
            wait_for(
                "records dropped for a full spool",
                lambda: sample_sum(pod_metrics(ns, pod), dropped) > 0,
                timeout=240,
            )
            wait_for("more answers after the drops", lambda: len(load.answers) > lost_at + 300)
        assert load.failures == [], load.failures[:10]  # every request answered throughout
        time.sleep(3)  # the workers' last flush (0.5 s) and metrics snapshot (1 s)
        drops = sample_sum(pod_metrics(ns, pod), dropped)
        s3.create_bucket(Bucket=bucket)  # the destination is back: the spool ships
        kubectl("-n", ns, "rollout", "restart", "deployment/diabetes-blue")
        kubectl("-n", ns, "rollout", "status", "deployment/diabetes-blue", "--timeout=300s")
        wait_for("the old pod gone (its final ship done)", lambda: blue_pods_at_all(ns) == 1, 120)

        def shipped() -> list[bytes]:
            listed = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            keys = [o["Key"] for page in listed for o in page.get("Contents", [])]
            return [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]

        bodies = saved + shipped()
        inputs, outputs = (records_in(bodies, name) for name in ("model_inputs", "model_outputs"))
        for name, found in (("model_inputs", inputs), ("model_outputs", outputs)):
            assert set(found.values()) <= {1}, (name, found.most_common(3))  # never twice
            assert set(found) <= answered, (name, sorted(set(found) - answered)[:5])
        missing_inputs, missing_outputs = answered - set(inputs), answered - set(outputs)
        assert missing_inputs == missing_outputs, "a pair was split"
        assert missing_inputs, "nothing was dropped: the spool never filled"
        # Every record the server did not count as dropped arrived; every dropped one is absent.
        assert len(missing_inputs) + len(missing_outputs) == drops, (
            len(missing_inputs),
            drops,
        )
        FIGURES.append(
            f"collection: destination lost under load with a 64 KiB spool: "
            f"{len(answered)} answered, 0 failed; {len(missing_inputs)} pairs dropped "
            f"(spool_full, counted exactly), the other {len(answered) - len(missing_inputs)} "
            f"shipped once when the bucket came back"
        )
    finally:
        with contextlib.suppress(Exception):
            empty_bucket(s3, bucket)
