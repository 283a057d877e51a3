"""OnlineEndpoint: the stable front door — keys, router config, router Deployment and Service
(and an optional Ingress, `components._ingress`)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components import _build, _ingress, _labels, _naming, _pods, _scaling, rules
from components._certs import GeneratedCertificate
from components._hashing import hash_parts
from components._ingress import IngressSettings
from components._keys import GeneratedKey
from components._rollout import (
    RolloutVerdict,
    fail_on_verdict,
    preview_evidence,
    verdict_timeout_s,
)
from components.internal_credential import InternalCredential
from components.online_deployment import OnlineDeployment
from scoring.router.config import SERVICE_ACCOUNT_DIR, RouterConfig, RouterLimits
from scoring.router.rollout import RolloutSpec, check_rollout, rollout_id

AuthMode = Literal["key", "aml_token", "none"]
ServiceType = Literal["NodePort", "LoadBalancer", "ClusterIP"]
ReloadMode = Literal["rollout", "hot"]


@dataclass
class KeyVersions:
    """Bump one number to regenerate that key alone on the next `pulumi up`."""

    primary: int = 1
    secondary: int = 1
    token_signing: int = 1


@dataclass
class TlsSettings:
    """How the router gets its certificate (HTTPS unless `enabled` is False).

    Attributes:
        enabled: serve HTTPS; False serves plain HTTP (a local experiment only: preview warns).
        version: bump to generate a new CA and certificate on the next `pulumi up`.
        secret_name: an existing kubernetes.io/tls Secret in the namespace to serve instead.
        issuer: a cert-manager Issuer (or ClusterIssuer, `issuer_kind`) that issues the
            certificate into the Secret `{endpoint}-router-tls` (needs cert-manager).
        dns_names: more names the certificate must cover (a DNS name clients use).
    """

    enabled: bool = True
    version: int = 1
    secret_name: str | None = None
    issuer: str | None = None
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    dns_names: list[str] = field(default_factory=list)


#: What the router may do through the Kubernetes API, in its own namespace: the one list of its
#: permissions (its Role is declared from it; add a rule here when the router needs one more).
ROUTER_RULES: list[k8s.rbac.v1.PolicyRuleArgs] = [
    # discovery.py: each deployment's ready pods, read from its Service's EndpointSlices.
    k8s.rbac.v1.PolicyRuleArgs(
        api_groups=["discovery.k8s.io"],
        resources=["endpointslices"],
        verbs=["get", "list", "watch"],
    ),
]

#: With a rollout declared (scoring/router/rollout.py, kube.py): its state in ConfigMap
#: `{router}-rollout` and the Lease that makes one router replica the decider.
ROLLOUT_RULES: list[k8s.rbac.v1.PolicyRuleArgs] = [
    k8s.rbac.v1.PolicyRuleArgs(
        api_groups=[""], resources=["configmaps"], verbs=["get", "create", "update"]
    ),
    k8s.rbac.v1.PolicyRuleArgs(
        api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["get", "create", "update"]
    ),
]

#: Lifetime the kubelet gives the router's projected ServiceAccount token (it renews it at
#: 80 %; the router re-reads the file for every API connection).
ROUTER_TOKEN_S = 3600


DEFAULT_ROUTER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


@dataclass
class RouterSettings:
    """The router pods and how clients reach them.

    Attributes:
        image: a prebuilt router image (`python -m scoring router` on PATH); None builds one
            from images/router.Dockerfile on `base_image` (rebuilt when `scoring/` changes)
            and pushes it to `registry`.
        service_type: NodePort (a local cluster: reached on `public_host:node_port`),
            LoadBalancer, or ClusterIP (in-cluster clients only).
        node_port: fixed NodePort (30000-32767) so `scoring_uri` is stable; None lets
            Kubernetes pick one.
        public_host: host clients use with a NodePort.
        ingress: an Ingress for the cluster's controller (`components._ingress`); clients then
            use `https://<ingress.host>` and the certificate also names that host.
        limits: the router's upstream limits (`request_timeout_ms`, ...), declared with their
            defaults and bounds in `scoring.router.config`; written to the router config file
            under the same names.
        reload: `rollout` puts a hash of the router config in the pod template, so a traffic
            change rolls the router pods (only them) and is in effect when `pulumi up` returns;
            `hot` only updates the ConfigMap and lets the router reload the file when the kubelet
            refreshes the mount (up to about a minute later).
    """

    image: str | None = None
    base_image: str = "ml-endpoints/base:bookworm"
    registry: str = "127.0.0.1:5000"
    replicas: int = 1
    service_type: ServiceType = "NodePort"
    node_port: int | None = None
    public_host: str = "127.0.0.1"
    limits: RouterLimits = field(default_factory=RouterLimits)
    reload: ReloadMode = "rollout"
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_ROUTER_RESOURCES.items()}
    )
    tls: TlsSettings = field(default_factory=TlsSettings)
    ingress: IngressSettings | None = None


@dataclass
class OnlineEndpointArgs:
    """The endpoint and its routing.

    Attributes:
        deployments: the OnlineDeployments behind this endpoint.
        traffic: deployment -> percent of live traffic (sum 0 or 100).
        mirror_traffic: deployment -> percent of requests copied to it (one deployment, <= 50).
        previous_traffic / previous_mirror: what the deployed stack routes now (None on the first
            deployment); used for the traffic plan and to refuse removing a deployment that
            still takes traffic.
        internal_credential: the credential every deployment of this endpoint was given; the
            router sends it upstream (header `x-ml-endpoints-credential`).
        max_token_lifetime_s: longest token lifetime the router accepts and issues.
    """

    deployments: Sequence[OnlineDeployment]
    namespace: str = "default"
    auth_mode: AuthMode = "key"
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    key_versions: KeyVersions = field(default_factory=KeyVersions)
    router: RouterSettings = field(default_factory=RouterSettings)
    internal_credential: InternalCredential | None = None
    max_token_lifetime_s: int = RouterConfig.model_fields["max_token_lifetime_s"].default
    previous_traffic: pulumi.Input[Mapping[str, int] | None] = None
    previous_mirror: pulumi.Input[Mapping[str, int] | None] = None
    rollout: RolloutSpec | None = None
    """Move toward `traffic` in steps judged by the router (`scoring.router.rollout`); `up`
    waits for the verdict. None: the shift happens at once."""
    previous_endpoint: pulumi.Input[Mapping[str, Any] | None] = None
    """The deployed stack's `scoring_uri`, `primary_key`, `ca_certificate`: `preview` asks the
    router for the rollout's evidence with them."""
    wait_for_rollout: bool = True
    """False when the manifests are only rendered (`cluster.render_yaml_to`): no router will
    answer, so `up` must not wait for a verdict nor `preview` ask for evidence."""


class OnlineEndpoint(pulumi.ComponentResource):
    """Keys (Pulumi secrets, in a Kubernetes Secret), router ConfigMap, router Deployment+Service
    (and an Ingress in front of it when `router.ingress` is set).

    The router's ConfigMap and Deployment depend on every deployment it routes to: a new
    deployment's pods are Ready before any router config naming it is written. A traffic or
    mirror change touches only the ConfigMap (updated in place, same name) and, in `rollout`
    reload mode, the router pod template's config hash: no model pod restarts, no replacement.
    """

    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    secondary_key: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    traffic: pulumi.Output[dict[str, int]]
    mirror_traffic: pulumi.Output[dict[str, int]]
    rollout: pulumi.Output[dict[str, Any] | None]
    """The verdict resource's record (`rollout_id`, `status`, `step`, `live`, `declared`,
    `candidate`, `verdict`): as of the last `up` or `pulumi refresh`. None without gates."""

    def __init__(
        self, name: str, args: OnlineEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        names = [d.deployment_label for d in args.deployments]
        _validate(name, args, names)
        super().__init__("mlendpoints:index:OnlineEndpoint", name, {}, opts)
        self.endpoint_label = name
        traffic = {n: int(args.traffic.get(n, 0)) for n in names}
        mirror = {n: int(v) for n, v in args.mirror_traffic.items() if int(v) > 0}
        object_name = _naming.router_object(name)
        selector = _labels.router_selector(name)
        labels = {**_labels.common("router"), **selector}

        # Keys first: they do not depend on anything and are generated once.
        versions = args.key_versions
        self.keys = {
            purpose: GeneratedKey(
                _naming.child(name, purpose.replace("_", "-")),
                purpose,
                version,
                pulumi.ResourceOptions(parent=self),
            )
            for purpose, version in (
                ("primary_key", versions.primary),
                ("secondary_key", versions.secondary),
                ("token_signing_key", versions.token_signing),
            )
        }
        self.secret = k8s.core.v1.Secret(
            _naming.child(name, "keys"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{object_name}-keys", namespace=args.namespace, labels=labels
            ),
            type="Opaque",
            string_data={purpose: key.value for purpose, key in self.keys.items()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        tls = args.router.tls
        tls_deps = self._tls(name, args, labels)
        if not tls.enabled:
            pulumi.log.warn(
                f"endpoint {name!r}: TLS is off (endpoint.tls.enabled: false): keys and tokens "
                "cross the network in clear text; use this for a local experiment only",
                resource=self,
            )

        router_config = {
            "endpoint_name": name,
            "auth_mode": args.auth_mode,
            "deployments": {
                d.deployment_label: {
                    "url": _naming.service_url(name, d.deployment_label, args.namespace),
                    **d.routing.model_dump(),
                }
                for d in args.deployments
            },
            "traffic": traffic,
            "mirror_traffic": mirror,
            "secrets_dir": _naming.SECRETS_DIR,
            "tls": {
                "cert_file": f"{_naming.TLS_DIR}/tls.crt",
                "key_file": f"{_naming.TLS_DIR}/tls.key",
            }
            if tls.enabled
            else None,
            "metrics_port": _naming.ROUTER_METRICS_PORT,
            "max_token_lifetime_s": args.max_token_lifetime_s,
            "internal_credential_file": args.internal_credential.file
            if args.internal_credential
            else None,
            # The router reads each deployment's ready pods with its ServiceAccount (below).
            "discovery": {"namespace": args.namespace},
            **args.router.limits.model_dump(),
        }
        # With a rollout, each deployment's image content tag names it too (`rollout_id`): a
        # fixed script or model is a new rollout. Only then: without one, a new image must not
        # touch the router (its config, its pods). The verdict and preview use the file's own
        # revisions, so they wait for the id the router computes from this very file.
        rollout = args.rollout
        revisions: dict[str, str] = {}
        if rollout is not None:
            for d in args.deployments:
                router_config["deployments"][d.deployment_label]["revision"] = d.revision
                revisions[d.deployment_label] = d.revision
            router_config["rollout"] = rollout.model_dump()
            router_config["rollout_store"] = f"kubernetes:{args.namespace}/{object_name}-rollout"
        # With a rollout, the config also carries the split it starts from (the deployed
        # stack's), an Output; without one, the file is exactly what it was before rollouts.
        config_json: pulumi.Output[str] = pulumi.Output.from_input(args.previous_traffic).apply(
            lambda prev: _config_text(router_config, traffic, prev if rollout else None)
        )
        # The plan (and the "still takes traffic" check) needs the deployed stack's routing, an
        # Output; the ConfigMap consumes the checked value so a refusal stops the update.
        scales = {d.deployment_label: d.scale_settings for d in args.deployments}
        checked = pulumi.Output.all(args.previous_traffic, args.previous_mirror).apply(
            lambda prev: _plan_and_check(self, names, traffic, mirror, prev[0], prev[1], scales)
        )
        routed_to = [r for d in args.deployments for r in (d.deployment, d.service)]
        self.config_map = k8s.core.v1.ConfigMap(
            _naming.child(name, "router-config"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{object_name}-config", namespace=args.namespace, labels=labels
            ),
            data={
                _naming.CONFIG_FILE: pulumi.Output.all(checked, config_json).apply(lambda a: a[1])
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=routed_to),
        )

        identity = self._router_identity(name, args, labels)
        template_annotations: dict[str, pulumi.Input[str]] = {
            "mlendpoints/key-versions": _key_versions(versions),
            "mlendpoints/tls": _tls_version(tls),
            "mlendpoints/internal-credential": str(
                args.internal_credential.version if args.internal_credential else 0
            ),
        }
        if args.router.reload == "rollout":
            template_annotations["mlendpoints/config-hash"] = config_json.apply(
                lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]
            )
        self.router = k8s.apps.v1.Deployment(
            _naming.child(name, "router"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=args.namespace,
                labels=labels,
                annotations={"pulumi.com/waitFor": rollout_done(args.router.replicas)},
            ),
            spec=_router_spec(
                args,
                self._router_image(name, args),
                object_name,
                selector,
                labels,
                template_annotations,
                _tls_secret_name(name, tls),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    self.config_map,
                    self.secret,
                    *tls_deps,
                    *([args.internal_credential.secret] if args.internal_credential else []),
                    *identity,
                    *routed_to,
                ],
            ),
        )
        port_name = _port_name(tls)
        ports: dict[str, Any] = {
            "name": port_name,
            "port": 443 if tls.enabled else 80,
            "target_port": port_name,
        }
        if args.router.service_type == "NodePort" and args.router.node_port:
            ports["node_port"] = args.router.node_port
        self.service = k8s.core.v1.Service(
            _naming.child(name, "router-service"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=args.namespace, labels=labels
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=args.router.service_type,
                selector=selector,
                ports=[k8s.core.v1.ServicePortArgs(**ports)],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.router]),
        )
        self.ingress: k8s.networking.v1.Ingress | None = None
        if args.router.ingress is not None:
            self.ingress = _ingress.declare(
                self,
                _naming.child(name, "ingress"),
                object_name,
                args.namespace,
                labels,
                args.router.ingress,
                args.router.limits,
                port_name,
                _tls_secret_name(name, tls),
                [self.service, *tls_deps],
            )

        base = _base_url(self.service, args, object_name)
        self.scoring_uri = base.apply(lambda b: f"{b}/score")
        self.swagger_uri = base.apply(lambda b: f"{b}/swagger.json")
        self.primary_key = pulumi.Output.secret(self.keys["primary_key"].value)
        self.secondary_key = pulumi.Output.secret(self.keys["secondary_key"].value)
        self.ca_certificate = (
            self.certificate.ca_certificate
            if self.certificate is not None
            else pulumi.Output.from_input("")
        )
        self.verdict: RolloutVerdict | None = None
        self.rollout: pulumi.Output[dict[str, Any] | None] = pulumi.Output.from_input(None)
        if rollout is not None and rollout.gates is not None and args.wait_for_rollout:
            # `up` returns when the router has promoted this rollout, fails when it rolled back
            # (every `up` until the declaration or a target deployment's revision changes;
            # `preview` proposes nothing then).
            self.verdict = RolloutVerdict(
                _naming.child(name, "rollout"),
                base,
                self.primary_key,
                self.ca_certificate,
                rollout_id(rollout, traffic, revisions),
                verdict_timeout_s(rollout),
                pulumi.ResourceOptions(
                    parent=self,
                    # It asks the router where clients reach it: through the Ingress, if any.
                    depends_on=[
                        self.router,
                        self.service,
                        *([self.ingress] if self.ingress else []),
                    ],
                ),
            )
            self.rollout = self.verdict.observed()
            if not pulumi.runtime.is_dry_run():
                self.rollout.apply(fail_on_verdict)
        if rollout is not None and pulumi.runtime.is_dry_run():
            if args.wait_for_rollout:
                pulumi.Output.from_input(args.previous_endpoint).apply(
                    lambda ep: _log_evidence(
                        self,
                        f"endpoint {name!r} ",
                        preview_evidence(rollout, traffic, None, ep, revisions),
                    )
                )
            else:
                pulumi.log.info(
                    f"endpoint {name!r} rollout evidence unavailable (manifests are only rendered: "
                    "no router answers, and `up` waits for no verdict)",
                    resource=self,
                )
        self.traffic = checked.apply(lambda _: traffic)
        self.mirror_traffic = pulumi.Output.from_input(mirror)
        self.register_outputs(
            {
                "scoring_uri": self.scoring_uri,
                "swagger_uri": self.swagger_uri,
                "primary_key": self.primary_key,
                "secondary_key": self.secondary_key,
                "ca_certificate": self.ca_certificate,
                "traffic": self.traffic,
                "mirror_traffic": self.mirror_traffic,
                "rollout": self.rollout,
            }
        )

    def _router_identity(
        self, name: str, args: OnlineEndpointArgs, labels: dict[str, str]
    ) -> list[pulumi.Resource]:
        """The router's ServiceAccount, its Role (``ROUTER_RULES``) and their RoleBinding, all
        named like the router. Only the router container mounts the token (see _router_spec)."""
        object_name = _naming.router_object(name)
        metadata = k8s.meta.v1.ObjectMetaArgs(
            name=object_name, namespace=args.namespace, labels=labels
        )
        opts = pulumi.ResourceOptions(parent=self)
        self.service_account = k8s.core.v1.ServiceAccount(
            _naming.child(name, "router-account"),
            metadata=metadata,
            automount_service_account_token=False,
            opts=opts,
        )
        rules = [*ROUTER_RULES, *(ROLLOUT_RULES if args.rollout is not None else [])]
        self.role = k8s.rbac.v1.Role(
            _naming.child(name, "router-role"), metadata=metadata, rules=rules, opts=opts
        )
        self.role_binding = k8s.rbac.v1.RoleBinding(
            _naming.child(name, "router-role-binding"),
            metadata=metadata,
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=object_name
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(
                    kind="ServiceAccount", name=object_name, namespace=args.namespace
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role, self.service_account]),
        )
        return [self.service_account, self.role_binding]

    def _tls(
        self, name: str, args: OnlineEndpointArgs, labels: dict[str, str]
    ) -> list[pulumi.Resource]:
        """The router's TLS Secret: generated here, the user's own, or cert-manager's."""
        tls, settings = args.router.tls, args.router
        self.certificate: GeneratedCertificate | None = None
        if not tls.enabled or tls.secret_name:
            return []
        extra = [*tls.dns_names, *([settings.ingress.host] if settings.ingress else [])]
        dns, ips = certificate_names(name, args.namespace, settings.public_host, extra)
        secret_name = _naming.tls_secret(name)
        if tls.issuer:
            # Rendered only: cert-manager's controller issues into `secret_name`; the router's
            # pods wait for the Secret (the kubelet retries the volume) until it exists.
            certificate = k8s.apiextensions.CustomResource(
                _naming.child(name, "certificate"),
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=secret_name, namespace=args.namespace, labels=labels
                ),
                spec={
                    "secretName": secret_name,
                    "commonName": dns[0],
                    "dnsNames": dns,
                    "ipAddresses": ips,
                    "issuerRef": {
                        "name": tls.issuer,
                        "kind": tls.issuer_kind,
                        "group": "cert-manager.io",
                    },
                    "privateKey": {"rotationPolicy": "Always"},
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            return [certificate]
        self.certificate = GeneratedCertificate(
            _naming.child(name, "certificate"),
            _naming.router_object(name),
            tls.version,
            dns,
            ips,
            pulumi.ResourceOptions(parent=self),
        )
        self.tls_secret = k8s.core.v1.Secret(
            _naming.child(name, "tls"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=secret_name, namespace=args.namespace, labels=labels
            ),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": self.certificate.certificate,
                "tls.key": self.certificate.private_key,  # a secret output
                "ca.crt": self.certificate.ca_certificate,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [self.tls_secret]

    def _router_image(self, name: str, args: OnlineEndpointArgs) -> pulumi.Input[str]:
        """The router image: prebuilt, or built from images/router.Dockerfile on `up`."""
        settings = args.router
        if settings.image:
            return settings.image
        from components._images import Image, ImageArgs  # owned by the toolchain area

        context = _build.stage("router", hash_parts(["router/v1"]), {"README": "router image\n"})
        self.router_image = Image(
            _naming.child(name, "router-image"),
            ImageArgs(
                context=str(context),
                dockerfile=str(_build.ROUTER_DOCKERFILE),
                build_args={"BASE_IMAGE": settings.base_image},
                repository=f"{settings.registry}/mlendpoints/{name}-router",
            ),
            # Built after the scoring images: one BuildKit build at a time on a small machine
            # (first written for wheelhouse builds that collided; wheelhouses are now made when
            # the program runs, one after another).
            pulumi.ResourceOptions(
                parent=self, depends_on=[d.image for d in args.deployments if d.image]
            ),
        )
        return self.router_image.ref


def _validate(name: str, args: OnlineEndpointArgs, names: list[str]) -> None:
    """Names, traffic and mirror rules, router settings: every problem at once, before children."""
    problems = rules.check_name(f"endpoint {name!r} name", name)
    seen: set[str] = set()
    for deployment in args.deployments:
        if deployment.endpoint_name != name:
            problems.append(
                f"endpoint {name!r} deployments: {deployment.deployment_label!r} was declared for "
                f"endpoint {deployment.endpoint_name!r}"
            )
        if deployment.deployment_label in seen:
            problems.append(
                f"endpoint {name!r} deployments: {deployment.deployment_label!r} appears twice"
            )
        seen.add(deployment.deployment_label)
    problems += rules.check_traffic(dict(args.traffic), names, "endpoint.traffic")
    problems += rules.check_mirror(
        dict(args.mirror_traffic), dict(args.traffic), names, "endpoint.mirror_traffic"
    )
    problems += check_rollout(args.rollout, dict(args.traffic), names, "endpoint.rollout")
    if args.auth_mode not in ("key", "aml_token", "none"):
        problems.append(
            f"endpoint.auth_mode: {args.auth_mode!r} is not one of 'key', 'aml_token', 'none'"
        )
    port = args.router.node_port
    if port is not None and not 30000 <= port <= 32767:
        problems.append(f"endpoint.router.node_port: {port} is outside 30000..32767")
    tls = args.router.tls
    if tls.secret_name and tls.issuer:
        problems.append(
            f"endpoint.tls: both secret_name ({tls.secret_name!r}) and issuer ({tls.issuer!r}) "
            "are set; give one (or neither: the stack generates a certificate)"
        )
    if args.router.ingress is not None and not tls.enabled:
        problems.append(
            "endpoint.ingress: needs endpoint.tls.enabled (the controller terminates TLS with the "
            "endpoint's TLS Secret and re-encrypts to the router); turn TLS on or drop ingress"
        )
    if args.internal_credential is not None:
        for deployment in args.deployments:
            if deployment.internal_credential is not args.internal_credential:
                problems.append(
                    f"endpoint {name!r} deployments: {deployment.deployment_label!r} was not "
                    "given the endpoint's internal_credential; its pods would refuse the router"
                )
    if problems:
        raise ValueError("\n".join(problems))


def _plan_and_check(
    endpoint: OnlineEndpoint,
    names: list[str],
    traffic: dict[str, int],
    mirror: dict[str, int],
    previous: Mapping[str, int] | None,
    previous_mirror: Mapping[str, int] | None,
    scales: Mapping[str, _scaling.ScaleSettings],
) -> bool:
    """Log the traffic plan (with a note for each autoscaled deployment given more traffic);
    refuse to drop a deployment that still takes traffic."""
    previous, previous_mirror = _percents(previous), _percents(previous_mirror)
    problems = rules.check_removal(previous, previous_mirror, names)
    if problems:
        raise pulumi.RunError("\n".join(problems))
    plan = rules.traffic_plan(previous, traffic, previous_mirror, mirror, names)
    plan += _scaling.shift_notes(scales, previous, traffic)
    pulumi.log.info(f"endpoint {endpoint.endpoint_label!r} " + "\n".join(plan), resource=endpoint)
    return True


def _config_text(
    router_config: dict[str, Any], traffic: dict[str, int], previous: Mapping[str, int] | None
) -> str:
    """The router config file; with a rollout, plus the split it starts from (the deployed
    one, when it differs from the target)."""
    start = _percents(previous)
    if start and {k: v for k, v in start.items() if v} != {k: v for k, v in traffic.items() if v}:
        router_config = {**router_config, "rollout_from": start}
    return json.dumps(router_config, indent=2, sort_keys=True)


def _percents(value: Mapping[str, object] | None) -> dict[str, int] | None:
    """Previous stack outputs come back as JSON numbers (floats): make them whole percents."""
    if not isinstance(value, Mapping):
        return None
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float)}


def _key_versions(versions: KeyVersions) -> str:
    return (
        f"primary={versions.primary},secondary={versions.secondary},"
        f"token_signing={versions.token_signing}"
    )


def _tls_version(tls: TlsSettings) -> str:
    if not tls.enabled:
        return "off"
    if tls.secret_name:
        return f"secret={tls.secret_name}"
    if tls.issuer:
        return f"issuer={tls.issuer_kind}/{tls.issuer}"
    return f"generated={tls.version}"


def _port_name(tls: TlsSettings) -> str:
    return "https" if tls.enabled else "http"


def _tls_secret_name(endpoint: str, tls: TlsSettings) -> str:
    """The Secret the router (and an Ingress) serve: the user's, else the one the stack or
    cert-manager writes."""
    return tls.secret_name or _naming.tls_secret(endpoint)


def certificate_names(
    endpoint: str, namespace: str, public_host: str, extra: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the router's certificate covers: the Service's cluster names,
    localhost, the public host (a name or an address) and any extra names; 127.0.0.1 always."""
    dns = [*_naming.router_dns_names(endpoint, namespace), "localhost"]
    ips = ["127.0.0.1"]
    for host in (public_host, *extra):
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            if host not in dns:
                dns.append(host)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def rollout_done(replicas: int) -> str:
    """`pulumi.com/waitFor` conditions meaning "every router pod runs the new template and is
    Ready, and no old pod is left": only then does `pulumi up` go on (or return).

    The provider's built-in Deployment await is not enough for the router: within one `up` it
    shares a watch cache between awaits, and after an earlier await (a new scoring Deployment)
    it can take the router's pre-update status for the finished rollout and return while the
    old router pod still serves the old split (seen in 5 of 9 runs of bench/rollout.py). The
    waitFor conditions ignore objects older than the update and wait for the controller to
    observe it (status.observedGeneration).
    """
    return json.dumps(
        [
            f"jsonpath={{.status.{field}}}={replicas}"
            for field in ("updatedReplicas", "replicas", "availableReplicas")
        ]
    )


def _router_spec(
    args: OnlineEndpointArgs,
    image: pulumi.Input[str],
    object_name: str,
    selector: dict[str, str],
    labels: dict[str, str],
    annotations: dict[str, pulumi.Input[str]],
    tls_secret: str,
) -> k8s.apps.v1.DeploymentSpecArgs:
    settings = args.router
    tls = settings.tls
    port_name = _port_name(tls)
    scheme = "HTTPS" if tls.enabled else "HTTP"
    probe: dict[str, Any] = {"initial_delay_seconds": 1, "period_seconds": 2, "timeout_seconds": 2}
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="config", mount_path=_naming.CONFIG_DIR, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="keys", mount_path=_naming.SECRETS_DIR, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="tmp", mount_path=_pods.TMP_DIR),
        k8s.core.v1.VolumeMountArgs(
            name="kube-api", mount_path=SERVICE_ACCOUNT_DIR, read_only=True
        ),
    ]
    volumes = [
        k8s.core.v1.VolumeArgs(
            name="config",
            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=f"{object_name}-config"),
        ),
        _pods.secret_volume("keys", f"{object_name}-keys"),
        _pods.scratch_volume("tmp", "64Mi"),
        _kube_api_volume(),
    ]
    if tls.enabled:
        mounts.append(
            k8s.core.v1.VolumeMountArgs(name="tls", mount_path=_naming.TLS_DIR, read_only=True)
        )
        volumes.append(_pods.secret_volume("tls", tls_secret))
    if args.internal_credential is not None:
        mounts.append(
            k8s.core.v1.VolumeMountArgs(
                name="internal", mount_path=_naming.INTERNAL_DIR, read_only=True
            )
        )
        volumes.append(_pods.secret_volume("internal", args.internal_credential.secret_name))
    return k8s.apps.v1.DeploymentSpecArgs(
        replicas=settings.replicas,
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
        strategy=k8s.apps.v1.DeploymentStrategyArgs(
            type="RollingUpdate",
            rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
        ),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=annotations),
            spec=k8s.core.v1.PodSpecArgs(
                enable_service_links=False,
                service_account_name=object_name,
                # The token is mounted explicitly, into the router container only.
                automount_service_account_token=False,
                security_context=_pods.pod_security(),
                termination_grace_period_seconds=_pods.TERMINATION_GRACE_S,
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="router",
                        image=image,
                        image_pull_policy="IfNotPresent",
                        command=["python", "-m", "scoring", "router"],
                        args=[
                            "--config",
                            f"{_naming.CONFIG_DIR}/{_naming.CONFIG_FILE}",
                            "--port",
                            str(_naming.ROUTER_PORT),
                            "--host",
                            "0.0.0.0",
                        ],
                        ports=[
                            k8s.core.v1.ContainerPortArgs(
                                name=port_name, container_port=_naming.ROUTER_PORT
                            ),
                            k8s.core.v1.ContainerPortArgs(
                                name="metrics", container_port=_naming.ROUTER_METRICS_PORT
                            ),
                        ],
                        readiness_probe=k8s.core.v1.ProbeArgs(
                            http_get=k8s.core.v1.HTTPGetActionArgs(
                                path="/ready", port=port_name, scheme=scheme
                            ),
                            failure_threshold=3,
                            **probe,
                        ),
                        liveness_probe=k8s.core.v1.ProbeArgs(
                            http_get=k8s.core.v1.HTTPGetActionArgs(
                                path="/", port=port_name, scheme=scheme
                            ),
                            failure_threshold=10,
                            **probe,
                        ),
                        resources=k8s.core.v1.ResourceRequirementsArgs(
                            requests=settings.resources.get("requests"),
                            limits=settings.resources.get("limits"),
                        ),
                        termination_message_policy="FallbackToLogsOnError",
                        lifecycle=_pods.drain_lifecycle(),
                        security_context=_pods.container_security(),
                        volume_mounts=mounts,
                    )
                ],
                volumes=volumes,
            ),
        ),
    )


def _kube_api_volume() -> k8s.core.v1.VolumeArgs:
    """The router's ServiceAccount token, the cluster CA and the namespace, as the kubelet's
    automount would give them (same files and folder), readable by the pod's group only."""
    return k8s.core.v1.VolumeArgs(
        name="kube-api",
        projected=k8s.core.v1.ProjectedVolumeSourceArgs(
            default_mode=0o440,
            sources=[
                k8s.core.v1.VolumeProjectionArgs(
                    service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
                        path="token", expiration_seconds=ROUTER_TOKEN_S
                    )
                ),
                k8s.core.v1.VolumeProjectionArgs(
                    config_map=k8s.core.v1.ConfigMapProjectionArgs(
                        name="kube-root-ca.crt",
                        items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")],
                    )
                ),
                k8s.core.v1.VolumeProjectionArgs(
                    downward_api=k8s.core.v1.DownwardAPIProjectionArgs(
                        items=[
                            k8s.core.v1.DownwardAPIVolumeFileArgs(
                                path="namespace",
                                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                                    field_path="metadata.namespace"
                                ),
                            )
                        ]
                    )
                ),
            ],
        ),
    )


def _log_evidence(resource: pulumi.Resource, prefix: str, said: tuple[bool, str]) -> None:
    """`preview`'s rollout line: a warning when the live split diverges after a rollback (the
    plan proposes nothing then), else information. Never an error."""
    warn, text = said
    (pulumi.log.warn if warn else pulumi.log.info)(prefix + text, resource=resource)


def _base_url(
    service: k8s.core.v1.Service, args: OnlineEndpointArgs, object_name: str
) -> pulumi.Output[str]:
    """Where clients reach the router: the Ingress's host, else by service type."""
    settings = args.router
    if settings.ingress is not None:
        return pulumi.Output.from_input(f"https://{settings.ingress.host}")
    scheme = "https" if settings.tls.enabled else "http"
    if settings.service_type == "NodePort":
        if settings.node_port:
            return pulumi.Output.from_input(
                f"{scheme}://{settings.public_host}:{settings.node_port}"
            )
        return service.spec.apply(
            lambda spec: f"{scheme}://{settings.public_host}:{(spec.ports or [])[0].node_port}"
        )
    if settings.service_type == "LoadBalancer":

        def _lb(status: k8s.core.v1.outputs.ServiceStatus | None) -> str:
            ingress = (status and status.load_balancer and status.load_balancer.ingress) or []
            host = (ingress[0].ip or ingress[0].hostname) if ingress else "pending"
            return f"{scheme}://{host}"

        return service.status.apply(_lb)
    return pulumi.Output.from_input(f"{scheme}://{object_name}.{args.namespace}.svc")
