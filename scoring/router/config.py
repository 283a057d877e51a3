"""The router's configuration file: a pydantic model, its rules, and the secrets it points to.

The file is JSON (docs/router.md has the schema). It is checked once, when loaded; the
request path never checks anything. A bad file yields one line per problem naming the field
and the bad value (never a secret), so ``router --config`` can exit 2 with an actionable
message and a reload can be rejected while the old configuration keeps serving.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scoring.router.rollout import RolloutSpec, check_rollout
from scoring.router.traffic import check_mirror, check_traffic, name_problem

#: Secret file names inside ``secrets_dir`` and the env variables that may supply them instead.
SECRET_SOURCES = {
    "primary_key": "ML_ENDPOINTS_PRIMARY_KEY",
    "secondary_key": "ML_ENDPOINTS_SECONDARY_KEY",
    "token_signing_key": "ML_ENDPOINTS_TOKEN_SIGNING_KEY",
}


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class RoutingPolicy(BaseModel):
    """How the router may treat one deployment's requests: the one declaration of each choice.

    The config file's ``deployments`` entries inherit it, and so do the stack config's
    ``deployments[i]`` (the same keys) and the components' ``OnlineDeploymentArgs.routing``, so a
    key set in ``Pulumi.<stack>.yaml`` reaches the router file unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    idempotent: bool = False
    """The deployment's scoring has no side effect, so a request whose connection failed after
    it was sent may be sent again once; otherwise it never is (it may have reached ``run()``)."""


class DeploymentConfig(RoutingPolicy):
    """One upstream deployment: where its inference server listens, and its routing policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    url: str
    """``http://host:port`` of the deployment's Service (an optional path prefix is kept)."""
    revision: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")
    """What the deployment serves, as a short opaque string (the components write its image's
    content tag); a new revision of a deployment with a target share is a new rollout
    (``rollout_id``). Empty: not known (a config written by hand)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http":
            raise ValueError(
                f"{value!r} must start with http:// (the router speaks plain HTTP "
                "to deployments inside the cluster)"
            )
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"{value!r} has a bad port") from exc
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r} must not have a query or fragment")
        return value


class RouterLimits(BaseModel):
    """The router's limits: the one declaration of each, with its default and bounds.

    The stack config's ``endpoint.router`` section and the components' ``RouterSettings.limits``
    use this model, and the config file carries its fields at the top level under the same
    names, so a key set in ``Pulumi.<stack>.yaml`` reaches the router unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    request_timeout_ms: int = Field(default=5000, ge=1, le=600_000)
    """Time a deployment has to answer one request before the router returns 504."""
    connect_timeout_ms: int = Field(default=2000, ge=1, le=60_000)
    """Time to get a connection to a deployment: open one (else 502), or wait for a busy pool
    to free one (else 503)."""
    max_connections_per_deployment: int = Field(default=256, ge=1, le=10_000)
    """Pooled keep-alive connections per deployment; when all are busy a request waits, then 503."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    """Largest request body accepted: 413 from Content-Length before reading it, or as a chunked
    body passes the limit."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    """Largest request line plus headers: 431 and close, refused as the bytes arrive."""
    max_url_bytes: int = Field(default=8 * 1024, ge=256, le=1024 * 1024)
    """Longest request target (path and query): 414 and close."""
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest deployment response relayed; a larger one becomes 502 and its connection closes."""
    max_buffered_bytes: int = Field(
        default=128 * 1024 * 1024, ge=1024 * 1024, le=16 * 1024 * 1024 * 1024
    )
    """Request and response bodies held in the router's memory at once; past it, 503."""
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    """Open client connections; one more gets 503 and is closed."""
    header_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    """Time from a request's first byte to the end of its headers: 408 and close."""
    body_timeout_ms: int = Field(default=30_000, ge=100, le=3_600_000)
    """Time from the end of a request's headers to the end of its body: 408 and close."""
    keep_alive_timeout_ms: int = Field(default=60_000, ge=100, le=3_600_000)
    """An idle client connection (nothing in flight, nothing arriving) is closed after this."""
    upstream_connection_max_age_ms: int = Field(default=1000, ge=1, le=3_600_000)
    """A pooled connection older than this is closed after its response instead of reused:
    behind a Service each connection sticks to one pod, so recycling spreads requests onto
    pods added by a scale-out or rollout within about this time."""


class TlsConfig(BaseModel):
    """The router's HTTPS certificate: PEM files from a mounted TLS Secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    cert_file: str
    """PEM certificate chain (``tls.crt`` of a kubernetes.io/tls Secret); re-read on reload."""
    key_file: str
    """PEM private key (``tls.key``); re-read on reload."""


#: Where every pod finds its ServiceAccount token, the cluster CA and its namespace.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class DiscoveryConfig(BaseModel):
    """Where the router reads its deployments' ready pods (EndpointSlices, Kubernetes API).

    With it, the router sends each request to the ready pod of the deployment with the fewest
    requests in flight; without it (or while the API cannot be read), to the Service's address.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    namespace: str
    """Namespace of a deployment's Service when its URL host does not name one (``svc.ns``)."""
    api_url: str = "https://kubernetes.default.svc"
    """The Kubernetes API; ``https://`` (``http://`` only to a loopback address, for tests)."""
    token_file: str = f"{SERVICE_ACCOUNT_DIR}/token"
    """Bearer token file (the ServiceAccount's projected token); re-read on every connection."""
    ca_file: str | None = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    """CA bundle that signed the API's certificate; ``None``: the system's."""

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(
                f"{value!r} must start with https:// (http:// only to a loopback address): "
                "the router sends its ServiceAccount token there"
            )
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        return value.rstrip("/")


class _Routing(BaseModel):
    """The config file's routing part: names, auth, upstreams, traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    endpoint_name: str
    """The endpoint's name (DNS-1123); the audience of its tokens."""
    auth_mode: Literal["key", "aml_token", "none"] = "key"
    """``key``: Bearer primary or secondary key; ``aml_token``: Bearer signed token; ``none``."""
    deployments: dict[str, DeploymentConfig] = Field(min_length=1)
    """Deployment name → upstream."""
    traffic: dict[str, int] = {}
    """Deployment name → percent of live traffic; values sum to 0 or 100."""
    mirror_traffic: dict[str, int] = {}
    """Deployment name → percent of unpinned requests copied to it (one deployment, ≤ 50)."""
    secrets_dir: str | None = None
    """Folder with files primary_key, secondary_key, token_signing_key (a mounted Secret)."""
    tls: TlsConfig | None = None
    """HTTPS certificate and key; ``None`` serves plain HTTP (local experiments only: the
    router logs a warning at start)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """When set, ``/metrics`` is served only on this second port (0.0.0.0, plain HTTP, no key,
    not exposed by the public Service) and the main port answers 404 for it."""
    internal_credential_file: str | None = None
    """File (from a Secret) whose content the router sends upstream in header
    ``x-ml-endpoints-credential`` on every proxied and mirrored request; re-read on reload."""
    max_token_lifetime_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    """Longest token lifetime (``exp - iat``) accepted, and the cap of ``POST /token``'s ttl_s."""
    rollout: RolloutSpec | None = None
    """Move toward ``traffic`` in judged steps (``scoring.router.rollout``); none: at once."""
    rollout_from: dict[str, int] = {}
    """The split served before this config (the components write the deployed stack's): a
    rollout starts from it when neither the store nor this process knows the live split."""
    rollout_store: str | None = None
    """Where the rollout's state lives so a restart resumes it: a file path, or
    ``kubernetes:NAMESPACE/NAME`` (a ConfigMap and a Lease, one decider among replicas);
    unset: memory only."""
    discovery: DiscoveryConfig | None = None
    """Balance over each deployment's ready pods, read from the Kubernetes API (EndpointSlices
    of its Service); ``None``: send to the Service's address (kube-proxy picks a pod per
    connection). Written by the components with the router's ServiceAccount."""

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("deployments")
    @classmethod
    def _deployment_names(cls, value: dict[str, DeploymentConfig]) -> dict[str, DeploymentConfig]:
        problems = [p for p in map(name_problem, value) if p]
        if problems:
            raise ValueError(problems[0])
        return value


class RouterConfig(RouterLimits, _Routing):
    """The whole router config file (one router per endpoint): routing, then ``RouterLimits``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    def revisions(self) -> dict[str, str]:
        """Deployment name → ``revision``: what ``rollout_id`` names a rollout by, with
        ``rollout`` and ``traffic``."""
        return {name: d.revision for name, d in self.deployments.items()}

    @model_validator(mode="after")
    def _traffic_rules(self) -> RouterConfig:
        names = list(self.deployments)
        problems = check_traffic(self.traffic, names, "traffic") + check_mirror(
            self.mirror_traffic, self.traffic, names, "mirror_traffic"
        )
        if not problems:
            problems = check_rollout(self.rollout, self.traffic, names, "rollout")
        if problems:
            raise ValueError("\n".join(problems))
        return self


@dataclass(frozen=True, repr=False)
class Secrets:
    """Keys read from ``secrets_dir`` files or env, the internal credential and the TLS
    context built from the certificate files; ``repr`` never shows them."""

    primary_key: bytes | None
    secondary_key: bytes | None
    token_signing_key: bytes | None
    internal_credential: bytes | None = None
    tls_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        have = [k for k in (*SECRET_SOURCES, "internal_credential") if getattr(self, k)]
        return f"Secrets(present={have}, tls={self.tls_context is not None})"


def secret_paths(config: RouterConfig) -> list[Path]:
    """The secret files this config reads (watched for changes, like the config file)."""
    paths = (
        [Path(config.secrets_dir) / name for name in SECRET_SOURCES] if config.secrets_dir else []
    )
    if config.internal_credential_file:
        paths.append(Path(config.internal_credential_file))
    if config.tls:
        paths += [Path(config.tls.cert_file), Path(config.tls.key_file)]
    return paths


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server-side context (TLS 1.2+) with the certificate chain and key of ``tls``.

    Raises:
        ConfigError: a file is missing or unreadable, not PEM, or the key does not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except FileNotFoundError as exc:
        raise ConfigError("tls", [f"tls: cannot read {exc.filename}: no such file"]) from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "tls",
            [
                f"tls: cannot use cert_file {tls.cert_file!r} with key_file {tls.key_file!r} "
                f"({getattr(exc, 'reason', None) or exc}); they must be a PEM certificate "
                "chain and its PEM private key"
            ],
        ) from exc
    return context


def _read_credential(path: str) -> bytes:
    try:
        value = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            "secrets", [f"internal_credential_file: cannot read {path}: {exc.strerror or exc}"]
        ) from exc
    if not value:
        raise ConfigError("secrets", [f"internal_credential_file: {path} is empty"])
    return value


def load_secrets(config: RouterConfig, env: Mapping[str, str] | None = None) -> Secrets:
    """Read each secret from its file in ``secrets_dir`` if present, else from env; read the
    internal credential file and build the TLS context when the config names them.

    Raises:
        ConfigError: when ``auth_mode`` needs a secret that neither source has, or the
            credential or certificate files cannot be used.
    """
    source: Mapping[str, str] = os.environ if env is None else env
    values: dict[str, bytes | None] = {}
    for name, var in SECRET_SOURCES.items():
        value: str | None = None
        if config.secrets_dir:
            path = Path(config.secrets_dir) / name
            try:
                value = path.read_text().strip()
            except FileNotFoundError:
                value = None
            except OSError as exc:
                raise ConfigError("secrets", [f"secrets_dir: cannot read {path}: {exc}"]) from exc
        if not value:
            value = source.get(var, "").strip()
        values[name] = value.encode() if value else None
    secrets = Secrets(
        **values,
        internal_credential=(
            _read_credential(config.internal_credential_file)
            if config.internal_credential_file
            else None
        ),
        tls_context=tls_context(config.tls) if config.tls else None,
    )
    where = (f"file {config.secrets_dir}/{{name}} or " if config.secrets_dir else "") + "env {var}"
    needs = {"key": ["primary_key"], "aml_token": ["token_signing_key"], "none": []}
    need = needs[config.auth_mode]
    problems = [
        f"secrets.{name}: auth_mode {config.auth_mode!r} needs it; none found in "
        + where.format(name=name, var=SECRET_SOURCES[name])
        for name in need
        if values[name] is None
    ]
    if problems:
        raise ConfigError("secrets", problems)
    return secrets


def _render(exc: ValidationError) -> list[str]:
    """One line per pydantic error: ``field.path: message (got VALUE)``."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field (got {err['input']!r}); check its spelling")
            continue
        for part in msg.split("\n"):
            if loc:
                got = "" if err["type"] == "value_error" else f" (got {err['input']!r})"
                lines.append(f"{loc}: {part}{got}")
            else:
                lines.append(part)
    return lines


def parse_config(text: str, source: str = "config") -> RouterConfig:
    """Parse and check config JSON text.

    Raises:
        ConfigError: one line per problem, naming field and bad value.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, [f"not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, [f"top level must be a JSON object (got {type(data).__name__})"])
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _render(exc)) from exc


def load_config(
    path: str | Path, env: dict[str, str] | None = None
) -> tuple[RouterConfig, Secrets]:
    """Read the config file at ``path`` and the secrets it names.

    Raises:
        ConfigError: unreadable file, bad JSON, a broken rule, or a missing secret.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    config = parse_config(text, str(path))
    try:
        return config, load_secrets(config, env)
    except ConfigError as exc:
        raise ConfigError(str(path), exc.problems) from exc
