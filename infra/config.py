"""Stack config (`Pulumi.<stack>.yaml`) read into one pydantic model, checked before any resource.

One model per config section; the top-level `StackConfig` forbids unknown keys so typos fail. Cross-
field rules (names, traffic, mirror, references between sections) call `components.rules`. A bad
value fails `pulumi preview` with one line per problem: the key path, the bad value and what is
accepted, e.g. `endpoint.traffic: values sum to 90 (blue=60, green=30); must be 0 or 100`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from components import _scaling, rules
from components._collection import CollectionStorage
from components._ingress import IngressSettings
from components._scaling import ScaleSettings
from components.online_deployment import DeploymentSettings, RoutingPolicy
from components.online_endpoint import RouterLimits
from mlendpoints.paths import REPO as PROJECT_ROOT
from mlendpoints.paths import cache_root
from scoring.router.config import RouterConfig as RouterFile
from scoring.router.rollout import RolloutSpec, check_rollout
from scoring.server.config import SettingKeyError

PROJECT = "ml-endpoints"
_Declared = TypeVar("_Declared", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def part(self, declared: type[_Declared]) -> _Declared:
        """The fields this section inherits from `declared`, as that model alone (what the
        components and the router config file receive)."""
        return declared(**{name: getattr(self, name) for name in declared.model_fields})


class ClusterConfig(_Section):
    """Which Kubernetes cluster and namespace; the provider is built from this only."""

    kubeconfig: str = "$ML_ENDPOINTS_CACHE/cluster/kubeconfig"
    """Path to a kubeconfig (`~` and `$VARS` expanded; `$ML_ENDPOINTS_CACHE` defaults to
    ~/.cache/ml-endpoints). Its content, not its path, goes to the provider."""
    context: str | None = None
    """kubeconfig context; the file's current context when unset."""
    cluster_id: str = Field(default="local", min_length=1)
    """Stable name of the cluster: the provider (and everything on it) is replaced only when this
    changes, not when the kubeconfig path or its credentials change."""
    namespace: str = "ml-endpoints"
    """Namespace of every object of this stack."""
    create_namespace: bool = True
    """Create the namespace (False: it must exist)."""
    render_yaml_to: str | None = None
    """Write manifests to this folder instead of applying them (no cluster needed)."""


class RegistryConfig(_Section):
    """Where images are pushed and what they start from."""

    url: str = "127.0.0.1:5000"
    """Registry host:port images are pushed to and pulled from."""
    base_image: str = "ml-endpoints/base:bookworm"
    """Image environments are built on (build arg BASE_IMAGE)."""
    python: str = Field(default="3.11", pattern=r"^3\.\d+$")
    """Python major.minor of the base image; conda `python=` pins must agree."""
    username: str | None = None
    """User for a registry that needs a login (the local one does not)."""
    password: SecretStr | None = None
    """Its password or token: `pulumi config set --secret --path 'ml-endpoints:registry.password'`
    (encrypted in the stack file, a secret in the state; the image provider logs in with it)."""


class ModelConfig(_Section):
    """A model registered as an asset (file or folder)."""

    path: str
    version: str | None = None
    description: str = ""
    tags: dict[str, str] = {}


class EnvironmentConfig(_Section):
    """Exactly one of conda_file, requirements_file, requirements, image."""

    conda_file: str | None = None
    requirements_file: str | None = None
    requirements: list[str] | None = None
    image: str | None = None
    base_image: str | None = None
    """Overrides registry.base_image for this environment."""


class CodeConfig(_Section):
    path: str
    """Folder with the scoring script (copied whole into the image)."""
    scoring_script: str = "score.py"


class ProbeConfig(_Section):
    initial_delay_s: int = Field(default=10, ge=0, le=3600)
    period_s: int = Field(default=10, ge=1, le=3600)
    timeout_s: int = Field(default=2, ge=1, le=3600)
    failure_threshold: int = Field(default=30, ge=1, le=1000)
    success_threshold: int = Field(default=1, ge=1, le=100)


class ResourcesConfig(_Section):
    requests: dict[Literal["cpu", "memory"], str] = {"cpu": "100m", "memory": "256Mi"}
    limits: dict[Literal["cpu", "memory"], str] = {}


class DeploymentConfig(_Section, DeploymentSettings, RoutingPolicy):
    """One deployment behind the endpoint (blue, green, ...).

    Its server settings (`worker_count`, `request_settings`, `data_collection`) are
    `scoring.server.config.DeploymentSettings`, inherited: declared there once, with their defaults
    and bounds, and passed on to the components unchanged. Its routing policy (`idempotent`) is
    `scoring.router.config.RoutingPolicy`, inherited likewise, and reaches the router config file.
    """

    name: str
    model: str | None = None
    """Key of `models`."""
    environment: str | None = None
    """Key of `environments`."""
    code: CodeConfig | None = None
    image: str | None = None
    """Prebuilt scoring image; model/environment/code are then not built."""
    instance_count: int = Field(default=1, ge=0, le=100)
    scale_settings: ScaleSettings = ScaleSettings()
    """Fixed count or CPU autoscaling, Azure's fields (`components._scaling`)."""
    resources: ResourcesConfig = ResourcesConfig()
    liveness_probe: ProbeConfig = ProbeConfig()
    readiness_probe: ProbeConfig = ProbeConfig(initial_delay_s=2, period_s=2, failure_threshold=3)
    environment_variables: dict[str, str] = {}
    secret_environment_variables: dict[str, SecretStr] = {}
    """Set with `pulumi config set --secret --path 'ml-endpoints:deployments[0].
    secret_environment_variables.NAME' VALUE`: a Kubernetes Secret, read by `secretKeyRef`."""
    rollout_timeout_s: int = Field(default=300, ge=10, le=3600)


class KeysConfig(_Section):
    """Bump a version to regenerate that key alone on the next `pulumi up`."""

    primary_version: int = Field(default=1, ge=1)
    secondary_version: int = Field(default=1, ge=1)
    token_signing_version: int = Field(default=1, ge=1)
    internal_version: int = Field(default=1, ge=1)
    """The credential only the router holds to reach the deployments."""


class TlsConfig(_Section):
    """The router's HTTPS certificate (docs/components.md, "TLS")."""

    enabled: bool = True
    """False serves plain HTTP (local experiments only; preview warns)."""
    version: int = Field(default=1, ge=1)
    """Bump to generate a new CA and certificate (`ca_certificate` output changes)."""
    secret_name: str | None = None
    """An existing kubernetes.io/tls Secret in the namespace, served instead."""
    issuer: str | None = None
    """A cert-manager Issuer that issues the certificate (needs cert-manager)."""
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    dns_names: list[str] = []
    """More names the generated or issued certificate covers."""


class RouterConfig(_Section, RouterLimits):
    """The router pods; its upstream limits (`request_timeout_ms`, ...) are
    `scoring.router.config.RouterLimits`, inherited, and reach the router config file as is."""

    replicas: int = Field(default=1, ge=1, le=20)
    service_type: Literal["NodePort", "LoadBalancer", "ClusterIP"] = "NodePort"
    node_port: int | None = Field(default=None, ge=30000, le=32767)
    public_host: str = "127.0.0.1"
    reload: Literal["rollout", "hot"] = "rollout"
    image: str | None = None
    """Prebuilt router image; unset: built from images/router.Dockerfile on registry.base_image."""
    resources: ResourcesConfig = ResourcesConfig(
        requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "512Mi"}
    )
    """The router container's requests and limits."""

    def limits(self) -> RouterLimits:
        """The `RouterLimits` part alone (what the router config file receives)."""
        return self.part(RouterLimits)


class EndpointConfig(_Section):
    name: str
    auth_mode: Literal["key", "aml_token", "none"] = "key"
    traffic: dict[str, int] = {}
    mirror_traffic: dict[str, int] = {}
    keys: KeysConfig = KeysConfig()
    max_token_lifetime_s: Annotated[int, RouterFile.model_fields["max_token_lifetime_s"]]
    """The router's declaration: longest token lifetime it accepts and issues (`POST /token`)."""
    tls: TlsConfig = TlsConfig()
    router: RouterConfig = RouterConfig()
    ingress: IngressSettings | None = None
    """An Ingress for the cluster's controller (`components._ingress.IngressSettings`, declared
    there once): `class_name`, `host`, `annotations`; clients then use `https://<host>`."""
    rollout: RolloutSpec | None = None
    """Move toward `traffic` in steps the router judges (`scoring.router.rollout.RolloutSpec`,
    declared there once); unset: the shift happens at once."""


class ConfigProblems(ValueError):
    """Cross-field problems, one readable line each (already prefixed with the key path)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StackConfig(_Section):
    """Everything a stack declares. Sections are keys of the `ml-endpoints` config namespace."""

    cluster: ClusterConfig = ClusterConfig()
    registry: RegistryConfig = RegistryConfig()
    models: dict[str, ModelConfig] = {}
    environments: dict[str, EnvironmentConfig] = {}
    endpoint: EndpointConfig
    deployments: list[DeploymentConfig] = Field(min_length=1)
    collection: CollectionStorage = CollectionStorage()
    """Where `data_collection.destination` ships: the S3 connection (keys set with
    `--secret`) and the PVC's size and class (`components._collection`)."""

    @model_validator(mode="after")
    def _cross_field(self) -> StackConfig:
        problems = cross_field_problems(self)
        if problems:
            raise ConfigProblems(problems)
        return self


def cross_field_problems(cfg: StackConfig) -> list[str]:
    """Names, references between sections, traffic and mirror rules."""
    problems = rules.check_name("endpoint.name", cfg.endpoint.name)
    problems += rules.check_name("cluster.namespace", cfg.cluster.namespace)
    seen: set[str] = set()
    for i, dep in enumerate(cfg.deployments):
        where = f"deployments[{i}]"
        name_problems = rules.check_name(f"{where}.name", dep.name)
        if not name_problems and not rules.check_name("endpoint.name", cfg.endpoint.name):
            name_problems = rules.check_object_name(f"{where}.name", cfg.endpoint.name, dep.name)
        problems += name_problems
        if dep.name in seen:
            problems.append(f"{where}.name: {dep.name!r} is used by another deployment")
        seen.add(dep.name)
        if dep.image is None:
            for key, table in (("model", cfg.models), ("environment", cfg.environments)):
                ref = getattr(dep, key)
                if ref is None:
                    problems.append(f"{where}.{key}: missing (or set {where}.image)")
                elif ref not in table:
                    problems.append(
                        f"{where}.{key}: {ref!r} is not declared; declared {key}s: "
                        f"{', '.join(sorted(table)) or 'none'}"
                    )
            if dep.code is None:
                problems.append(f"{where}.code: missing (or set {where}.image)")
        problems += _scaling.check(
            where,
            dep.scale_settings,
            "instance_count" in dep.model_fields_set,
            {k: v for k, v in dep.resources.requests.items()},
        )
    for name, env in cfg.environments.items():
        problems += rules.check_environment_source(f"environments.{name}", env)
    names = [d.name for d in cfg.deployments]
    problems += rules.check_traffic(cfg.endpoint.traffic, names, "endpoint.traffic")
    problems += rules.check_mirror(
        cfg.endpoint.mirror_traffic, cfg.endpoint.traffic, names, "endpoint.mirror_traffic"
    )
    problems += check_rollout(cfg.endpoint.rollout, cfg.endpoint.traffic, names, "endpoint.rollout")
    return problems


class StackConfigError(ValueError):
    """A stack config that cannot be used; the message has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack config:\n  " + "\n  ".join(problems))


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate raw config (section name -> value) into a StackConfig.

    Raises:
        StackConfigError: every problem found, one line each.
    """
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as exc:
        raise StackConfigError(render(exc)) from exc


def render(exc: ValidationError) -> list[str]:
    """One line per pydantic error: `key.path: what is wrong (got VALUE; accepted: ...)`."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigProblems):
            lines += inner.problems
            continue
        path = _path(err["loc"])
        if isinstance(inner, SettingKeyError):  # a key inside the section, named by it
            lines.append(f"{path}.{inner.key}: {inner.message}")
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            accepted = _accepted_keys(err["loc"][:-1])
            lines.append(
                f"{path}: unknown key"
                + (f"; accepted keys: {', '.join(accepted)}" if accepted else "")
            )
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        elif kind in ("literal_error", "enum"):
            expected = (err.get("ctx") or {}).get("expected", "")
            lines.append(f"{path}: {_show(err['input'])} is not accepted; accepted: {expected}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {msg} (got {_show(err['input'])})")
    return lines


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(stack config)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _accepted_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model at `loc` (for 'unknown key' messages)."""
    model: Any = StackConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            # a dict key (models.NAME, environments.NAME): keep the value type
            model = _value_model(model)
            continue
        model = _value_model(field.annotation)
    # A section's other spellings (data_collection: Azure's keys) are accepted too.
    return sorted({*getattr(model, "model_fields", {}), *getattr(model, "AZURE_KEYS", {})})


def _value_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _value_model(arg)
        if found is not None:
            return found
    return None


def raw_from_pulumi() -> dict[str, Any]:
    """Every key of the `ml-endpoints` config namespace, JSON values decoded (objects, lists)."""
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for key, value in merged.items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT or not name:
            continue
        raw[name] = _decode(value)
    return raw


def _decode(value: Any) -> Any:
    if not isinstance(value, str) or not value.lstrip().startswith(("{", "[")):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def project_path(value: str) -> Path:
    """A config path: `~` and `$VARS` expanded, relative paths from the project root."""
    cache = str(cache_root())
    expanded = os.path.expandvars(
        value.replace("$ML_ENDPOINTS_CACHE", cache).replace("${ML_ENDPOINTS_CACHE}", cache)
    )
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path
