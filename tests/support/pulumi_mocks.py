"""Pulumi mocks that record every registration (type, name, inputs, parent, dependencies).

`pulumi.runtime.set_mocks` is configured per test with a recording monitor, so tests can assert the
resource graph (parents, depends_on), the specs (inputs as the engine would receive them) and
which values travel as secrets.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.sync_await import _sync_await

FAKE_KEY = "mock-key-value-0123456789"
FAKE_CA = "-----BEGIN CERTIFICATE-----\nmock-ca\n-----END CERTIFICATE-----\n"


@dataclass
class Registration:
    """One RegisterResource call as the engine would see it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    raw: dict[str, Any]
    dependencies: list[str]
    secret_outputs: list[str]
    custom_timeouts: Any
    provider: str


@dataclass
class Recorder:
    regs: list[Registration] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    levels: list[tuple[str, str]] = field(default_factory=list)
    """(level, message) of each log line: `WARNING`, `INFO`, ..."""

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.regs if r.type == typ]

    def one(self, typ: str, name: str) -> Registration:
        found = [r for r in self.regs if r.type == typ and r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {len(found)}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.regs if r.urn == urn)


Engine = Callable[[str, dict[str, Any]], dict[str, Any]]
"""What the engine hands back for a resource (name, inputs → outputs), e.g. the outputs of a
dynamic provider's real `create`, or those a state holds after a diff without changes."""


class _Mocks(pulumi.runtime.Mocks):
    """Echo inputs back as outputs, plus what a real provider would compute."""

    def __init__(self, outputs: dict[str, dict[str, Any]], engine: dict[str, Engine]) -> None:
        self.stack_outputs = outputs
        self.engine = engine

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        state = dict(args.inputs)
        if args.name in self.engine:
            return f"{args.name}-id", self.engine[args.name](args.name, state)
        if args.typ == "pulumi-python:dynamic:Resource" and "dns_names" in args.inputs:
            state["ca_certificate"] = FAKE_CA
            state["certificate"] = FAKE_CA.replace("mock-ca", "mock-server")
            state["private_key"] = FAKE_KEY + args.name
        elif args.typ == "pulumi-python:dynamic:Resource":
            state["value"] = FAKE_KEY + args.name
        elif args.typ == "pulumi:pulumi:StackReference":
            state = {
                "name": args.inputs.get("name"),
                "outputs": self.stack_outputs,
                "secretOutputNames": [],
            }
        elif args.typ == "kubernetes:core/v1:Service":
            spec = dict(state.get("spec") or {})
            spec["ports"] = [
                {**p, "nodePort": p.get("nodePort", 31234)} for p in spec.get("ports", [])
            ]
            state["spec"] = spec
        elif args.typ.endswith("Image"):
            state["ref"] = f"{args.inputs.get('repository')}:{args.inputs.get('tag')}"
            state["digest"] = "sha256:" + "ab" * 32
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class _Monitor(pmocks.MockMonitor):
    def __init__(self, mocks: _Mocks, recorder: Recorder) -> None:
        super().__init__(mocks)
        self.recorder = recorder

    def _record(self, request: Any, response: Any, properties: Any, **rest: Any) -> None:
        raw = rpc.deserialize_properties(properties, keep_internal=True)
        self.recorder.regs.append(
            Registration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                inputs=_sync_await(_plain(raw)),
                raw=raw,
                provider=request.provider,
                **rest,
            )
        )

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self._record(
                request,
                response,
                request.object,
                custom=request.custom,
                dependencies=list(request.dependencies),
                secret_outputs=list(request.additionalSecretOutputs),
                custom_timeouts=request.customTimeouts,
            )
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)
        self._record(
            request,
            response,
            request.properties,
            custom=True,
            dependencies=[],
            secret_outputs=[],
            custom_timeouts=None,
        )
        return response


async def _plain(value: Any) -> Any:
    """Inputs with secret wrappers removed (what the resource would receive)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return await _plain(value["value"])
        return {k: await _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [await _plain(v) for v in value]
    return value


class _ListHandler(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.DEBUG)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.logs.append(record.getMessage())
        self.recorder.levels.append((record.levelname, record.getMessage()))


def install(
    stack_outputs: dict[str, Any] | None = None,
    preview: bool = True,
    engine: dict[str, Engine] | None = None,
) -> Recorder:
    """Fresh mocks + recorder; returns the recorder. `engine`: resource name → its outputs."""
    recorder = Recorder()
    logger = logging.getLogger(f"pulumi-mocks-{id(recorder)}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_ListHandler(recorder))
    mocks = _Mocks(stack_outputs or {}, engine or {})
    pulumi.runtime.set_mocks(
        mocks,
        project="ml-endpoints",
        stack="dev",
        preview=preview,
        logger=logger,
        monitor=_Monitor(mocks, recorder),
    )
    return recorder


def fake_images_module() -> types.ModuleType:
    """Stand-in for the toolchain's components/_images.py (same shape: Image(name, ImageArgs(
    context, dockerfile, build_args, repository, tag), opts) with `ref` and `digest`)."""
    module = types.ModuleType("components._images")

    @dataclass
    class ImageArgs:
        context: str
        dockerfile: str
        repository: str
        tag: str | None = None
        build_args: dict[str, Any] = field(default_factory=dict)

    class Image(pulumi.CustomResource):
        ref: pulumi.Output[str]
        digest: pulumi.Output[str]

        def __init__(
            self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None
        ) -> None:
            super().__init__(
                "mlendpoints:index:Image",
                name,
                {
                    "context": args.context,
                    "dockerfile": args.dockerfile,
                    "build_args": args.build_args,
                    "repository": args.repository,
                    "tag": args.tag or "content-key",
                    "ref": None,
                    "digest": None,
                },
                opts,
            )

    module.Image = Image  # type: ignore[attr-defined]
    module.ImageArgs = ImageArgs  # type: ignore[attr-defined]
    return module


def stack_raw(
    assets: dict[str, Path],
    traffic: dict[str, int] | None = None,
    mirror: dict[str, int] | None = None,
    green: bool = True,
) -> dict[str, Any]:
    """Raw stack config as infra.config parses it: blue (+ green) on the test assets."""
    deployment = {
        "name": "blue",
        "model": "diabetes",
        "environment": "sklearn",
        "code": {"path": str(assets["code"]), "scoring_script": "score.py"},
        "instance_count": 2,
        "worker_count": 3,
        "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}},
        "request_settings": {"request_timeout_ms": 7000, "max_concurrent_requests_per_instance": 4},
        "environment_variables": {"EXTRA": "1"},
        "rollout_timeout_s": 120,
    }
    deployments = [deployment]
    if green:
        deployments.append(
            {**deployment, "name": "green", "model": "diabetes-v2", "instance_count": 1}
        )
    return {
        "cluster": {
            "kubeconfig": str(assets["kubeconfig"]),
            "cluster_id": "test-cluster",
            "namespace": "mlns",
        },
        "models": {
            "diabetes": {"path": str(assets["model"])},
            "diabetes-v2": {"path": str(assets["model2"]), "version": "2"},
        },
        "environments": {"sklearn": {"conda_file": str(assets["conda"])}},
        "endpoint": {
            "name": "diabetes",
            "auth_mode": "key",
            "traffic": traffic if traffic is not None else {"blue": 100, "green": 0},
            "mirror_traffic": mirror or {},
            "router": {"node_port": 30080},
        },
        "deployments": deployments,
    }
