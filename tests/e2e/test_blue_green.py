"""Blue/green on the local cluster, end to end, as the README walks it (issue 7).

One test, because the steps build on each other: every README step runs as written (see
conftest), then the test checks what the step promises against the deployed endpoint itself:
predictions equal to the models' own, 401s, the pinned deployment, the mirror summary, a
router-only preview, the live split over thousands of requests, the removed deployment gone,
one key regenerated alone, token auth, and nothing left after destroy. From step 2 to step 6 a
background load posts a 40-row request with the primary key over fresh connections; it must see
zero failed requests, and only blue's answers until traffic shifts.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from mlendpoints._project import EndpointProject
from mlendpoints._sample import EXPECTED, SAMPLE_REQUEST, predictions
from mlendpoints._sample import SampleEndpoint as Endpoint
from mlendpoints.client import ca_file
from mlendpoints.kube import kubectl, kubectl_json, namespace_exists
from scoring.router.auth import issue_token
from tests.support.load import Load
from tests.support.security import (
    bypass_status,
    cluster_secret,
    pod_images,
    scan_for_secrets,
    scan_images_for_secrets,
)
from tests.support.walkthrough import FIGURES, Ran, Walkthrough

pytestmark = [pytest.mark.toolchain, pytest.mark.images, pytest.mark.cluster]


def line(ran: list[Ran], prefix: str) -> Ran:
    """The one run line starting with PREFIX; it must have succeeded."""
    found = [r for r in ran if r.line.startswith(prefix)]
    assert len(found) == 1, (prefix, [r.line for r in ran])
    assert found[0].code == 0, (found[0].line, found[0].out, found[0].err)
    return found[0]


def lines(ran: list[Ran], prefix: str) -> list[Ran]:
    return [r for r in ran if r.line.startswith(prefix)]


def split_table(traffic_output: str) -> dict[str, tuple[int, int]]:
    """`ml-endpoints traffic`'s table: deployment -> (live %, mirror %)."""
    rows = re.findall(r"^  (\S+)\s+(\d+)%\s+(\d+)%$", traffic_output, re.MULTILINE)
    return {name: (int(live), int(mirror)) for name, live, mirror in rows}


def changed_resources(events: list[Any]) -> dict[tuple[str, str], str]:
    """(type, name) -> operation for every resource the engine would not leave the same."""
    ops: dict[tuple[str, str], str] = {}
    for e in events:
        pre = e.resource_pre_event
        if pre is None:
            continue
        op = str(pre.metadata.op.value)
        if op not in ("same", "read"):
            urn = pre.metadata.urn
            ops[(pre.metadata.type, urn.rsplit("::", 1)[1])] = op
    return ops


@pytest.mark.timeout(2400)
def test_blue_green_walkthrough(endpoint_project: EndpointProject) -> None:
    walk = Walkthrough(endpoint_project)
    ns = endpoint_project.namespace
    assert EXPECTED["blue"] != EXPECTED["green"], "the two sample models must disagree on ROWS"

    # 1. blue at 100%, both keys work, no key or a wrong key is a 401 with a JSON reason.
    ran = walk.step(1)
    outputs = endpoint_project.outputs()
    # HTTPS only, verified against the stack's own CA (the README's curl lines use --cacert).
    assert outputs["scoring_uri"].startswith("https://"), outputs["scoring_uri"]
    assert "token_signing_key" not in outputs
    endpoint = Endpoint(outputs["scoring_uri"], verify=ca_file(ns, outputs["ca_certificate"]))
    primary, secondary = outputs["primary_key"], outputs["secondary_key"]
    assert primary != secondary
    sample_blue = predictions("model", SAMPLE_REQUEST["data"])
    for r in lines(ran, "ml-endpoints invoke"):
        assert (r.code, json.loads(r.out)) == (0, sample_blue), (r.line, r.out, r.err)
    no_key, wrong_key = lines(ran, "curl")
    for r in (no_key, wrong_key):
        body, status = r.out.rsplit(" ", 1)
        assert status.strip() == "401", r.out
        assert json.loads(body)["error"], r.out
    assert primary not in json.dumps([r.out + r.err for r in ran])  # keys never echoed
    for key in (primary, secondary):
        status, who, body = endpoint.post(credential=key)
        assert (status, who, json.loads(body)) == (200, "blue", EXPECTED["blue"])
    assert endpoint.post(credential="wrong")[0] == 401
    # Nothing reaches a model around its router: a pod calling blue's Service directly gets
    # 401 (the local bridge CNI does not enforce the NetworkPolicy; the credential does).
    assert bypass_status(ns, "diabetes", "blue", primary) == 401
    # No secret value in pod specs, ConfigMaps, plain outputs, logs, or any image layer.
    internal = cluster_secret(ns, "diabetes-internal", "credential")
    signing = cluster_secret(ns, "diabetes-router-keys", "token_signing_key")
    tls_key_line = cluster_secret(ns, "diabetes-router-tls", "tls.key").splitlines()[1]
    secrets = [primary, secondary, internal, signing, tls_key_line]
    scan_for_secrets(ns, secrets, endpoint_project.outputs())
    assert scan_images_for_secrets(pod_images(ns), secrets) >= 3  # configs and layers read

    load = Load(
        lambda: endpoint.ask(primary), threads=2, pause=0.05, max_seconds=1800, max_requests=200_000
    )
    with load:
        # 2. green at 0%: built, Ready, reachable only when pinned.
        ran = walk.step(2)
        invoked = line(ran, "ml-endpoints invoke")
        assert "answered by deployment 'green'" in invoked.err, invoked.err
        logs = line(ran, "ml-endpoints logs").out
        assert "[pod/diabetes-green-" in logs, logs
        request_id = invoked.err.split("request id ")[1].rstrip(")\n")
        assert request_id in logs, (request_id, logs)  # the pinned request, in green's log
        pinned = [endpoint.post(credential=primary, pin="green") for _ in range(5)]
        assert all(
            (s, w, json.loads(b)) == (200, "green", EXPECTED["green"]) for s, w, b in pinned
        ), pinned
        assert endpoint.split(primary, 200) == {"blue": 200}

        # 3. mirror 10% to green: clients see blue only; the summary reports green.
        ran = walk.step(3)
        shown = line(ran, "ml-endpoints traffic").out
        assert split_table(shown) == {"blue": (100, 0), "green": (0, 10)}, shown
        assert re.search(r"^mirror green: sent [1-9]\d*, statuses \{'200': ", shown, re.M), shown
        endpoint.wait_router(primary, {"blue": 100}, {"green": 10})
        mirrored_from = load.elapsed()
        assert endpoint.split(primary, 1000) == {"blue": 1000}
        summary = endpoint.get("/mirror/summary", primary)["mirrors"]["green"]
        assert summary["sent"] >= 50, summary  # 10% of >= 1300 requests
        assert summary["statuses"] == {"200": summary["sent"]}, summary
        assert summary["different"] > 0 and summary["equal"] > 0, summary  # the README's
        assert summary["latency_ms"]["p50_le"] is not None, summary  # 300 agree
        assert {a.label for a in load.since(mirrored_from)} == {"blue"}

        # 4. 90/10: the preview changes the router only and prints the plan; then the split.
        ran = walk.step(4)
        preview = line(ran, "pulumi preview")
        changed = changed_resources(preview.events)
        assert set(changed.values()) == {"update"}, changed
        router_objects = {
            ("kubernetes:core/v1:ConfigMap", "diabetes-router-config"),
            ("kubernetes:apps/v1:Deployment", "diabetes-router"),
        }
        assert set(changed) <= router_objects and changed, changed
        assert "traffic plan:" in preview.out and "live 100% -> 90%" in preview.out, preview.out
        assert "live 0% -> 10%" in preview.out and "mirror 10% -> 0%" in preview.out
        took = endpoint.wait_router(primary, {"blue": 90, "green": 10}, {})
        counts = endpoint.split(primary, 3000)
        share = counts.get("green", 0) / 3000
        FIGURES.append(
            f"blue/green: 90/10 applied by the router {took:.1f} s after `up` "
            f"returned; green answered {share:.1%} of 3000 requests"
        )
        assert abs(share - 0.10) < 0.025, counts  # 4 standard deviations
        shown = line(ran, "ml-endpoints traffic").out
        assert split_table(shown) == {"blue": (90, 0), "green": (10, 0)}, shown

        # 5. 0/100, then blue removed: its pods and Service are gone; green answers all.
        ran = walk.step(5)
        status = line(ran, "ml-endpoints status").out
        assert re.search(r"^traffic:\s+green 100%$", status, re.M), status
        assert "router /ready: 200" in status, status
        endpoint.wait_router(primary, {"green": 100}, {})
        assert endpoint.split(primary, 300) == {"green": 300}
        deployments = kubectl_json("-n", ns, "get", "deployments")["items"]
        assert sorted(d["metadata"]["name"] for d in deployments) == [
            "diabetes-green",
            "diabetes-router",
        ]
        assert "blue" not in endpoint_project.outputs()["deployments"]

        # 6. the secondary key alone is new; the old one is refused; the primary never failed.
        ran = walk.step(6)
        outputs = endpoint_project.outputs()
        assert outputs["primary_key"] == primary
        assert outputs["secondary_key"] != secondary
        assert json.loads(line(ran, "ml-endpoints invoke").out) == predictions(
            "model-v2", SAMPLE_REQUEST["data"]
        )
        endpoint.wait_router(primary, {"green": 100}, {})
        assert endpoint.post(credential=secondary)[0] == 401
        assert endpoint.post(credential=outputs["secondary_key"])[0] == 200
    FIGURES.append(f"blue/green: background load over steps 2-6: {load.report()}")
    assert load.failures == [], load.failures[:20]
    assert len(load.answers) >= 500, "the load did not run through the steps"
    assert {a.label for a in load.answers} == {"blue", "green"}

    # 7. token auth: a fresh token works; an expired one, a forged one and the key are 401.
    ran = walk.step(7)
    token = json.loads(line(ran, "ml-endpoints token").out)
    assert token["tokenType"] == "Bearer" and token["expiryTimeUtc"] > time.time() + 500
    assert json.loads(line(ran, "ml-endpoints invoke").out) == predictions(
        "model-v2", SAMPLE_REQUEST["data"]
    )
    # The signing key stays in the cluster; the test reads it there to forge the bad cases.
    signing = cluster_secret(ns, "diabetes-router-keys", "token_signing_key")
    fresh = issue_token(signing, "diabetes", ttl_s=60)["accessToken"]
    expired = issue_token(signing, "diabetes", ttl_s=60, now=time.time() - 600)["accessToken"]
    forged = issue_token("not-the-signing-key-" * 3, "diabetes", ttl_s=60)["accessToken"]
    too_long = issue_token(signing, "diabetes", ttl_s=100 * 365 * 86400)["accessToken"]
    future = issue_token(signing, "diabetes", ttl_s=60, now=time.time() + 3600)["accessToken"]
    deadline = time.monotonic() + 60
    while endpoint.post(credential=str(fresh))[0] != 200:  # the new router pod takes over
        assert time.monotonic() < deadline, "a fresh token was never accepted"
        time.sleep(0.5)
    assert endpoint.post(credential=str(token["accessToken"]))[0] == 200
    for bad in (expired, forged, too_long, future, primary):
        status, _, body = endpoint.post(credential=str(bad))
        assert status == 401, (status, body)

    # 8. collection on for green (a PVC): the three requests come back as pairs, their input
    # the request sent, their output green's answer.
    ran = walk.step(8)
    assert "collect green: model_inputs/model_outputs at 1 sampling -> PersistentVolumeClaim" in (
        line(ran, "pulumi up").out
    )
    assert line(ran, "for i in").out.count("\n") == 3
    pairs = [json.loads(x) for x in line(ran, "ml-endpoints collected").out.splitlines()]
    assert len(pairs) == 3, pairs
    for pair in pairs:
        assert pair["input"] == SAMPLE_REQUEST
        assert pair["output"] == predictions("model-v2", SAMPLE_REQUEST["data"])

    # 9. destroy leaves nothing behind in the namespace (the stack created it, so it goes too).
    walk.step(9)
    assert not namespace_exists(ns), kubectl("-n", ns, "get", "all,configmaps,secrets")
