"""`ml-endpoints`: daily use of a deployed endpoint, from the stack's outputs.

    ml-endpoints invoke --request-file F [--deployment NAME] [--key secondary] [--stack dev]
    ml-endpoints keys | token [--ttl S] | status | traffic | logs --deployment NAME [--tail N]
    ml-endpoints collected --deployment NAME [--name C | --join] [--since 2h] [--out F]
    ml-endpoints rollout status | pause | resume | abort | promote [--json]

Everything is read from the stack's outputs (through the Automation API, `mlendpoints.stack`);
the endpoint is reached with `requests`, verifying the router's certificate against the stack's
CA (`ca_certificate` output, kept under the cache by `mlendpoints.client.ca_file`). Tokens come
from the router's `POST /token`, authenticated with the primary key. `main()` takes the
outputs reader as an argument so tests drive it against a real router with no Pulumi CLI.
Exit codes: 0 ok, 1 the endpoint or kubectl answered with an error, 2 usage or stack problem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import requests

from mlendpoints import collected as collectedmod
from mlendpoints import kube, replicas
from mlendpoints import stack as stackmod
from mlendpoints.client import EndpointError, Verify, ca_file, fetch_token, router_base

OutputsSource = Callable[[str], dict[str, Any]]
"""Stack name -> the stack's outputs (plain values, secrets included)."""
ClusterSource = Callable[[str], dict[str, Any]]
"""Stack name -> the stack's `ml-endpoints:cluster` config (kubeconfig, context)."""

INVOKE_TOKEN_TTL_S = 300  # a token minted for one `invoke` needs to live only that long


class CliError(Exception):
    """A problem to report on stderr, with the exit code to return."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------- helpers


def _need(outputs: dict[str, Any], name: str, stack: str) -> Any:
    value = outputs.get(name)
    if value in (None, ""):
        raise CliError(
            f"stack {stack!r} has no output {name!r} (outputs: "
            f"{', '.join(sorted(outputs)) or 'none'}); run `pulumi up --stack {stack}`"
        )
    return value


def verify_for(outputs: dict[str, Any], stack: str) -> Verify:
    """`verify=` for the stack's endpoint: its CA file, or the system's CAs."""
    return ca_file(stack, outputs.get("ca_certificate"))


def authorization(
    outputs: dict[str, Any],
    stack: str,
    ttl_s: int = INVOKE_TOKEN_TTL_S,
    key: str = "primary",
    verify: Verify | None = None,
) -> str | None:
    """The `Authorization` header value for the stack's auth mode (None for `none`); KEY picks
    the primary or secondary key in `key` mode."""
    mode = outputs.get("auth_mode", "key")
    if mode == "none":
        return None
    if mode == "aml_token":
        return "Bearer " + str(issue(outputs, stack, ttl_s, verify)["accessToken"])
    return "Bearer " + str(_need(outputs, f"{key}_key", stack))


def issue(
    outputs: dict[str, Any], stack: str, ttl_s: int, verify: Verify | None = None
) -> dict[str, object]:
    """A token from the stack's router (`POST /token` with the primary key)."""
    uri = _need(outputs, "scoring_uri", stack)
    key = _need(outputs, "primary_key", stack)
    verify = verify_for(outputs, stack) if verify is None else verify
    try:
        return fetch_token(uri, key, ttl_s, verify)
    except EndpointError as exc:
        raise CliError(f"POST {router_base(uri)}/token: {exc}", code=1) from None
    except requests.RequestException as exc:
        raise CliError(f"POST {router_base(uri)}/token: no answer ({exc})", code=1) from None


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    verify: Verify = True,
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body) for any HTTP answer, CliError if none came."""
    try:
        resp = requests.request(
            method, url, data=body, headers=headers or {}, timeout=timeout, verify=verify
        )
    except requests.RequestException as exc:
        raise CliError(f"{method} {url}: no answer ({exc})", code=1) from None
    return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content


def _utc(ts: object) -> str:
    if not isinstance(ts, int | float | str):
        raise CliError(f"not a timestamp: {ts!r}")
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split(values: dict[str, Any] | None) -> str:
    items = [f"{name} {pct}%" for name, pct in sorted((values or {}).items())]
    return ", ".join(items) or "none"


# -------------------------------------------------------------------------------- commands


class Commands:
    """One method per subcommand; each returns the exit code."""

    def __init__(
        self,
        args: argparse.Namespace,
        outputs: OutputsSource,
        cluster: ClusterSource,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.args, self.out, self.err = args, out, err
        self.stack = args.stack
        self._outputs_source, self._cluster_source = outputs, cluster
        self._outputs: dict[str, Any] | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        if self._outputs is None:
            try:
                self._outputs = self._outputs_source(self.stack)
            except stackmod.StackError as exc:
                raise CliError(str(exc)) from None
        return self._outputs

    @property
    def verify(self) -> Verify:
        return verify_for(self.outputs, self.stack)

    def invoke(self) -> int:
        path = Path(self.args.request_file)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise CliError(f"--request-file: cannot read {str(path)!r} ({exc.strerror})") from None
        uri = _need(self.outputs, "scoring_uri", self.stack)
        headers = {"Content-Type": "application/json"}
        if self.args.key != "primary" and self.outputs.get("auth_mode") != "key":
            raise CliError(
                f"--key {self.args.key}: the endpoint's auth mode is "
                f"{self.outputs.get('auth_mode')!r}; keys apply only to 'key'"
            )
        auth = authorization(self.outputs, self.stack, key=self.args.key, verify=self.verify)
        if auth:
            headers["Authorization"] = auth
        if self.args.deployment:
            headers["azureml-model-deployment"] = self.args.deployment
        status, resp_headers, answer = http(
            "POST", uri, body=body, headers=headers, timeout=self.args.timeout, verify=self.verify
        )
        text = answer.decode("utf-8", "replace")
        if status >= 400:
            self.err.write(f"error: POST {uri} answered {status}: {text.strip()}\n")
            return 1
        self.out.write(text if text.endswith("\n") else text + "\n")
        who = resp_headers.get("azureml-model-deployment")
        if who and self.args.verbose:
            self.err.write(
                f"answered by deployment {who!r} "
                f"(request id {resp_headers.get('x-request-id', '-')})\n"
            )
        return 0

    def keys(self) -> int:
        keys = {
            "primaryKey": _need(self.outputs, "primary_key", self.stack),
            "secondaryKey": _need(self.outputs, "secondary_key", self.stack),
        }
        self.out.write(json.dumps(keys, indent=2) + "\n")
        if self.outputs.get("auth_mode") != "key":
            self.err.write(
                f"note: endpoint auth mode is {self.outputs.get('auth_mode')!r}; "
                "keys are not accepted by the endpoint now\n"
            )
        return 0

    def token(self) -> int:
        if self.args.ttl <= 0:
            raise CliError(f"--ttl: must be > 0 seconds (got {self.args.ttl})")
        if self.outputs.get("auth_mode") != "aml_token":
            raise CliError(
                f"the endpoint's auth mode is {self.outputs.get('auth_mode')!r}; the router "
                "issues tokens only in 'aml_token' mode"
            )
        token = issue(self.outputs, self.stack, self.args.ttl, self.verify)
        self.out.write(json.dumps(token, indent=2) + "\n")
        self.err.write(
            f"expires {_utc(token['expiryTimeUtc'])}, refresh after "
            f"{_utc(token['refreshAfterTimeUtc'])}\n"
        )
        return 0

    def _ready(self, base: str) -> dict[str, Any]:
        try:
            status, _, body = http(
                "GET", base + "/ready", timeout=self.args.timeout, verify=self.verify
            )
        except CliError as exc:
            return {"status": None, "answer": str(exc)}
        return {"status": status, "answer": body.decode("utf-8", "replace").strip()}

    def _replicas(self, namespace: object, endpoint: object) -> dict[str, Any] | str:
        """Per deployment: replicas, ready, the autoscaler's range, target and reason; or why
        they could not be read (status still works without the cluster)."""
        kubectl = stackmod.kubectl()
        if kubectl is None:
            return "no kubectl"
        try:
            cluster = self._cluster_source(self.stack)
        except stackmod.StackError as exc:
            return str(exc)
        kubeconfig = stackmod.kubeconfig_path(cluster)
        if not kubeconfig.is_file():
            return f"{kubeconfig} does not exist"
        argv = kube.base_argv(kubectl, kubeconfig, cluster.get("context"))
        argv += ["--namespace", str(namespace), "get", "deployments,horizontalpodautoscalers"]
        from components import _labels  # the labels the components put on every object

        argv += ["--selector", _labels.as_selector({_labels.ENDPOINT: str(endpoint)})]
        try:
            proc = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if proc.returncode != 0:
            return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "kubectl failed"
        return replicas.summarize(json.loads(proc.stdout).get("items", []), _labels.DEPLOYMENT)

    def status(self) -> int:
        o = self.outputs
        uri = _need(o, "scoring_uri", self.stack)
        ready = self._ready(router_base(uri))
        deployments = {
            name: {
                "image_digest": (o.get("image_digests") or {}).get(name),
                **(
                    {"image": info.get("image"), "kubernetes_name": info.get("kubernetes_name")}
                    if isinstance(info, dict)
                    else {}
                ),
            }
            for name, info in sorted((o.get("deployments") or {}).items())
        }
        state = {
            "stack": self.stack,
            "endpoint_name": o.get("endpoint_name"),
            "namespace": o.get("namespace"),
            "scoring_uri": uri,
            "swagger_uri": o.get("swagger_uri"),
            "auth_mode": o.get("auth_mode"),
            "traffic": o.get("traffic") or {},
            "mirror_traffic": o.get("mirror_traffic") or {},
            "deployments": deployments,
            "router_ready": ready,
            "replicas": self._replicas(o.get("namespace"), o.get("endpoint_name")),
        }
        if self.args.json:
            self.out.write(json.dumps(state, indent=2) + "\n")
        else:
            w = self.out.write
            w(f"stack:        {self.stack}\n")
            w(f"endpoint:     {state['endpoint_name']} (namespace {state['namespace']})\n")
            w(f"scoring_uri:  {uri}\nswagger_uri:  {state['swagger_uri']}\n")
            w(f"auth_mode:    {state['auth_mode']}\n")
            w(f"traffic:      {_split(state['traffic'])}\n")
            w(f"mirror:       {_split(state['mirror_traffic'])}\n")
            w("deployments:\n")
            for name, d in deployments.items():
                w(f"  {name:<12} {d.get('image_digest') or '-'}  {d.get('image') or ''}\n")
            scaled = state["replicas"]
            for name, r in (scaled if isinstance(scaled, dict) else {}).items():
                w(f"  {name:<12} {replicas.line(r)}\n")
            if isinstance(scaled, str):
                w(f"replicas:     unavailable ({scaled})\n")
            w(f"router /ready: {ready['status'] or 'unreachable'} {ready['answer']}\n")
        return 0 if ready["status"] == 200 else 1

    def _router_json(self, method: str, path: str) -> dict[str, Any] | None:
        """METHOD PATH on the router with the stack's credential: the JSON object it answered,
        or None after saying on stderr what came instead."""
        base = router_base(_need(self.outputs, "scoring_uri", self.stack))
        headers = {}
        auth = authorization(self.outputs, self.stack, verify=self.verify)
        if auth:
            headers["Authorization"] = auth
        url = base + path
        status, _, body = http(
            method, url, headers=headers, timeout=self.args.timeout, verify=self.verify
        )
        text = body.decode("utf-8", "replace").strip()
        if status != 200:
            self.err.write(f"error: {method} {url} answered {status}: {text}\n")
            return None
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.err.write(
                f"error: {method} {url} answered 200 with a body that is not JSON: {text[:200]!r}\n"
            )
            return None
        return answer

    def traffic(self) -> int:
        o = self.outputs
        base = router_base(_need(o, "scoring_uri", self.stack))
        summary = self._router_json("GET", "/mirror/summary")
        if summary is None:
            return 1
        if self.args.json:
            self.out.write(
                json.dumps(
                    {
                        "stack": {
                            "traffic": o.get("traffic") or {},
                            "mirror_traffic": o.get("mirror_traffic") or {},
                        },
                        "router": summary,
                    },
                    indent=2,
                )
                + "\n"
            )
            return 0
        w = self.out.write
        live, mirror = summary.get("traffic") or {}, summary.get("mirror_traffic") or {}
        w(f"endpoint {summary.get('endpoint_name')!r}, router at {base}\n")
        w(f"  {'deployment':<12} {'live':>5}  {'mirror':>6}\n")
        for name in sorted(set(live) | set(mirror)):
            w(f"  {name:<12} {live.get(name, 0):>4}%  {mirror.get(name, 0):>5}%\n")
        if (o.get("traffic") or {}) != live or (o.get("mirror_traffic") or {}) != mirror:
            w(
                f"  (the stack says traffic {_split(o.get('traffic'))}, mirror "
                f"{_split(o.get('mirror_traffic'))}: the router has not loaded it yet)\n"
            )
        for name, m in (summary.get("mirrors") or {}).items():
            lat = m.get("latency_ms") or {}
            w(
                f"mirror {name}: sent {m.get('sent')}, statuses {m.get('statuses')}, errors "
                f"{m.get('errors')}, equal {m.get('equal')}, different {m.get('different')}, "
                f"not compared {m.get('not_compared')}, skipped {m.get('skipped_overload')}, "
                f"equal ratio {m.get('equal_ratio')}, latency mean {lat.get('mean')} ms, "
                f"p50 <= {lat.get('p50_le')} ms, p99 <= {lat.get('p99_le')} ms\n"
            )
        if not summary.get("mirrors"):
            w("no mirrored requests yet\n")
        return 0

    def rollout(self) -> int:
        """`GET /rollout` or `POST /rollout/ACTION` on the router (the key is the admin one)."""
        action = self.args.action
        answer = (
            self._router_json("GET", "/rollout")
            if action == "status"
            else self._router_json("POST", f"/rollout/{action}")
        )
        if answer is None:
            return 1
        if self.args.json:
            self.out.write(json.dumps(answer, indent=2) + "\n")
            return 0
        self.out.write(rollout_text(answer))
        return 0

    def logs(self) -> int:
        from components import _labels  # the same selectors the components put on pods

        o = self.outputs
        endpoint = _need(o, "endpoint_name", self.stack)
        namespace = _need(o, "namespace", self.stack)
        if self.args.router:
            selector = _labels.router_selector(endpoint)
        else:
            name = self.args.deployment
            known = sorted(o.get("deployments") or {})
            if name not in known:
                raise CliError(
                    f"--deployment: no deployment {name!r} in stack {self.stack!r} "
                    f"(deployments: {', '.join(known) or 'none'})"
                )
            selector = _labels.scoring_selector(endpoint, name)
        kubectl = stackmod.kubectl()
        if kubectl is None:
            raise CliError(
                "kubectl not found on PATH (nor the local cluster's, built by "
                "`make cluster-up`); `logs` needs kubectl and the cluster"
            )
        try:
            cluster = self._cluster_source(self.stack)
        except stackmod.StackError as exc:
            raise CliError(str(exc)) from None
        kubeconfig = stackmod.kubeconfig_path(cluster)
        if not kubeconfig.is_file():
            raise CliError(
                f"cluster.kubeconfig: {str(kubeconfig)!r} does not exist; start the "
                "cluster (make cluster-up) or fix the stack's cluster.kubeconfig"
            )
        argv = kube.base_argv(kubectl, kubeconfig, cluster.get("context"))
        argv += [
            "--namespace",
            str(namespace),
            "logs",
            "--selector",
            _labels.as_selector(selector),
            "--prefix",
            "--tail",
            str(self.args.tail),
            "--max-log-requests",
            "20",
        ]
        if self.args.follow:
            argv.append("--follow")
        self.err.write(f"$ {' '.join(argv)}\n")
        self.err.flush()
        self.out.flush()
        try:
            return subprocess.call(argv, stdout=self.out, stderr=self.err)
        except (OSError, ValueError):  # out/err are not real files (tests): let it inherit
            return subprocess.call(argv)

    def collected(self) -> int:
        """Collected records of a deployment, read back from its destination (docs/cli.md)."""
        a = self.args
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}", a.name):
            raise CliError(f"--name: {a.name!r} is not a collection name (e.g. model_inputs)")
        try:
            since = collectedmod.parse_since(a.since) if a.since else None
        except collectedmod.CollectedError as exc:
            raise CliError(str(exc)) from None
        endpoint = a.endpoint or _need(self.outputs, "endpoint_name", self.stack)
        where, url = self._collection_source()
        names = ["model_inputs", "model_outputs"] if a.join else [a.name]
        try:
            found = {
                n: collectedmod.read(where, endpoint, a.deployment, n, since, endpoint_url=url)
                for n in names
            }
            rows = (
                collectedmod.joined(found["model_inputs"], found["model_outputs"])
                if a.join
                else found[a.name]
            )
            collectedmod.write(rows, Path(a.out) if a.out else self.out)
        except collectedmod.CollectedError as exc:
            raise CliError(str(exc), code=1) from None
        what = "input/output pairs" if a.join else f"{a.name} records"
        self.err.write(
            f"{len(rows)} {what} of {endpoint}/{a.deployment}"
            f"{f' from the last {a.since}' if a.since else ''} in {where}"
            f"{f', written to {a.out}' if a.out else ''}\n"
        )
        return 0

    def _collection_source(self) -> tuple[str, str | None]:
        """Where the deployment's data is (``--from``, else the stack's ``collection``
        output) and the S3 endpoint to read it with (``--s3-endpoint-url``, else
        ``AWS_ENDPOINT_URL``, else the stack's)."""
        a = self.args
        url = a.s3_endpoint_url
        if a.source:
            return a.source, url
        sinks = self.outputs.get("collection") or {}
        if a.deployment not in sinks:
            raise CliError(
                f"--deployment: no deployment {a.deployment!r} in stack {self.stack!r} "
                f"(deployments: {', '.join(sorted(sinks)) or 'none'})"
            )
        sink = sinks[a.deployment]
        dest = sink.get("destination") or ""
        if not dest:
            raise CliError(
                f"deployment {a.deployment!r} ships its collected data nowhere (records stay in "
                "its pods' spool); set data_collection.destination, or read a folder "
                "with --from"
            )
        if dest == "pvc":
            return self._claim_folder(str(sink.get("claim"))), url
        if url is None and not os.environ.get("AWS_ENDPOINT_URL"):
            url = sink.get("endpoint_url")
        return dest, url

    def _claim_folder(self, claim: str) -> str:
        """The local folder behind a PersistentVolumeClaim (local-path, hostPath or local
        volumes on this machine); elsewhere, say how to copy it out."""
        namespace = _need(self.outputs, "namespace", self.stack)
        kubectl = stackmod.kubectl()
        if kubectl is None:
            raise CliError("kubectl not found: reading a PVC destination needs the cluster")
        cluster = self._cluster_source(self.stack)
        argv = kube.base_argv(kubectl, stackmod.kubeconfig_path(cluster), cluster.get("context"))
        get = [*argv, "--namespace", str(namespace), "get"]
        proc = subprocess.run(
            [*get, "pvc", claim, "-o", "jsonpath={.spec.volumeName}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        volume = proc.stdout.strip()
        if proc.returncode != 0 or not volume:
            raise CliError(f"PersistentVolumeClaim {claim!r}: {proc.stderr.strip() or 'unbound'}")
        spec = json.loads(
            subprocess.run(
                [*get, "pv", volume, "-o", "json"], capture_output=True, text=True, timeout=30
            ).stdout
            or "{}"
        ).get("spec", {})
        folder = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not folder or not Path(folder).is_dir():
            raise CliError(
                f"PersistentVolumeClaim {claim!r} is not a folder on this machine; copy it out "
                f"(kubectl cp from a pod that mounts it) and read it with --from FOLDER",
                code=1,
            )
        return str(folder)


def rollout_text(status: dict[str, Any]) -> str:
    """`ml-endpoints rollout status` for a person: state, step, bake left, live figures."""
    lines = [f"endpoint {status.get('endpoint_name')!r}: rollout {status.get('status')}"]
    steps, step = status.get("steps"), status.get("step")
    if status.get("candidate"):
        where = "mirror phase (no live traffic yet)" if step == -1 else None
        if where is None and isinstance(step, int) and steps:
            where = f"step {step + 1} of {len(steps)} ({steps[step]}%)"
        lines.append(f"  candidate {status['candidate']!r}, {where}")
    lines.append(f"  live split  {_split(status.get('live'))}")
    lines.append(f"  declared    {_split(status.get('declared'))}")
    window = status.get("window") or {}
    if window and status.get("status") in ("baking", "mirroring"):
        lines.append(f"  bake left   {window.get('bake_left_s')} s")
        figures = ", ".join(f"{k} {v}" for k, v in window.items() if k != "bake_left_s")
        lines.append(f"  window      {figures}")
    verdict = status.get("verdict")
    if verdict:
        gate = f"gate {verdict['gate']} at {verdict.get('where')}: " if verdict.get("gate") else ""
        lines.append(f"  verdict     {verdict.get('result')}: {gate}{verdict.get('reason')}")
    if status.get("gates"):
        lines.append(f"  gates       {status['gates']} (on failure: {status.get('on_failure')})")
    if status.get("queued"):
        lines.append(f"  queued {status['queued']!r} for the deciding router replica")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", default="dev", help="Pulumi stack to read (default: dev)")
    common.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the endpoint (default: 30)"
    )
    p = argparse.ArgumentParser(
        prog="ml-endpoints",
        description="Use a deployed endpoint: invoke it, get its keys or a token, read its "
        "state, traffic and logs. Reads the stack's outputs through the Pulumi "
        "Automation API (the environment of scripts/env.sh).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inv = sub.add_parser("invoke", parents=[common], help="POST a request file to scoring_uri")
    inv.add_argument("--request-file", required=True, help="JSON body to send")
    inv.add_argument("--deployment", help="pin one deployment (azureml-model-deployment header)")
    inv.add_argument(
        "--key",
        choices=("primary", "secondary"),
        default="primary",
        help="which endpoint key to send in `key` auth mode (default: primary)",
    )
    inv.add_argument(
        "-v", "--verbose", action="store_true", help="say on stderr which deployment answered"
    )
    sub.add_parser("keys", parents=[common], help="print the primary and secondary keys")
    tok = sub.add_parser(
        "token", parents=[common], help="get a token from the router (aml_token auth)"
    )
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    st = sub.add_parser(
        "status", parents=[common], help="endpoint, URIs, auth, traffic, images, router readiness"
    )
    st.add_argument("--json", action="store_true", help="print JSON")
    tr = sub.add_parser(
        "traffic", parents=[common], help="the router's live split and mirror summary"
    )
    tr.add_argument("--json", action="store_true", help="print JSON")
    lg = sub.add_parser(
        "logs", parents=[common], help="kubectl logs of a deployment's pods (needs the cluster)"
    )
    which = lg.add_mutually_exclusive_group(required=True)
    which.add_argument("--deployment", help="deployment name (e.g. blue)")
    which.add_argument("--router", action="store_true", help="the endpoint's router pods")
    lg.add_argument("--tail", type=int, default=100, help="lines per pod (default 100)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep streaming")
    co = sub.add_parser(
        "collected",
        parents=[common],
        help="a deployment's collected inputs/outputs, read back from S3 or its PVC",
    )
    co.add_argument("--deployment", required=True, help="deployment name (e.g. blue)")
    co.add_argument("--name", default="model_inputs", help="collection (default model_inputs)")
    co.add_argument(
        "--join", action="store_true", help="model_inputs and model_outputs by correlation id"
    )
    co.add_argument("--since", help="only records this recent: 90s, 15m, 2h, 3d")
    co.add_argument("--out", help="write FILE.jsonl or FILE.parquet (needs pyarrow)")
    co.add_argument(
        "--from", dest="source", help="a folder or s3://bucket/prefix instead of the stack's"
    )
    co.add_argument("--endpoint", help="endpoint name (default: the stack's)")
    co.add_argument(
        "--s3-endpoint-url", help="S3 API URL (default: AWS_ENDPOINT_URL, else the stack's)"
    )
    ro = sub.add_parser(
        "rollout", parents=[common], help="the progressive rollout: status, or act on it"
    )
    ro.add_argument("action", choices=("status", "pause", "resume", "abort", "promote"))
    ro.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(
    argv: list[str] | None = None,
    *,
    outputs: OutputsSource | None = None,
    cluster: ClusterSource | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one subcommand. ``outputs``/``cluster`` default to the Automation API readers."""
    args = parser().parse_args(argv)
    out, err = out or sys.stdout, err or sys.stderr
    commands = Commands(
        args, outputs or stackmod.read_outputs, cluster or stackmod.read_cluster, out, err
    )
    started = time.monotonic()
    try:
        return getattr(commands, args.command)()
    except CliError as exc:
        err.write(f"ml-endpoints {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        err.write(
            f"ml-endpoints {args.command}: interrupted after {time.monotonic() - started:.0f} s\n"
        )
        return 130
