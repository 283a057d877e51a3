"""Compose the components from validated stack config; export what clients need."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import (
    CodeConfiguration,
    Environment,
    EnvironmentArgs,
    InternalCredential,
    InternalCredentialArgs,
    KeyVersions,
    ModelAsset,
    ModelAssetArgs,
    OnlineDeployment,
    OnlineDeploymentArgs,
    OnlineEndpoint,
    OnlineEndpointArgs,
    Probe,
    Resources,
    RouterSettings,
    RoutingPolicy,
    TlsSettings,
)
from components._collection import SERVER_EXTRAS_ARG
from components._collection import kind as collection_kind
from components._naming import collection_claim
from infra import config as cfgmod
from infra.config import StackConfig, StackConfigError


def main() -> None:
    """Read config, build the graph, export outputs. Every user error is a clean `RunError`."""
    try:
        cfg = cfgmod.parse(cfgmod.raw_from_pulumi())
    except StackConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    try:
        build(cfg, previous_routing())
    except ValueError as exc:  # component argument checks (paths, conda files, ...)
        raise pulumi.RunError(str(exc)) from None


def provider(cluster: cfgmod.ClusterConfig) -> k8s.Provider:
    """Explicit provider. It receives the kubeconfig *content* and a stable `cluster_identifier`:
    moving the file or rotating its credentials updates the provider in place instead of
    replacing every object on the cluster."""
    args: dict[str, Any] = {
        "cluster_identifier": cluster.cluster_id,
        "namespace": cluster.namespace,
        # Traffic changes update the router ConfigMap / key Secret in place (same name).
        "enable_config_map_mutable": True,
        "enable_secret_mutable": True,
    }
    path = cfgmod.project_path(cluster.kubeconfig)
    if cluster.render_yaml_to:
        args["render_yaml_to_directory"] = str(cfgmod.project_path(cluster.render_yaml_to))
    elif not path.is_file():
        raise ValueError(
            f"cluster.kubeconfig: {str(path)!r} does not exist; start the local cluster "
            f"(make cluster-up) or point cluster.kubeconfig at your cluster's kubeconfig"
        )
    else:  # the provider refuses a kubeconfig together with renderYamlToDirectory
        args["kubeconfig"] = pulumi.Output.secret(path.read_text())
        if cluster.context:
            args["context"] = cluster.context
    return k8s.Provider("k8s", **args)


def images_provider(registry: cfgmod.RegistryConfig) -> list[pulumi.ProviderResource]:
    """The image provider logged in to `registry` when the stack gives credentials (none: the
    default provider, for a registry that needs no login such as the local one)."""
    if not registry.username and registry.password is None:
        return []
    if not registry.username or registry.password is None:
        raise ValueError("registry: set both username and password (or neither)")
    import pulumi_docker_build as dbuild  # the infra extra; only a logged-in stack needs it here

    login = dbuild.RegistryArgs(
        address=registry.url,
        username=registry.username,
        password=pulumi.Output.secret(registry.password.get_secret_value()),
    )
    return [dbuild.Provider("images", registries=[login])]


def previous_routing() -> tuple[pulumi.Output[Any], pulumi.Output[Any], pulumi.Output[Any]]:
    """This stack's own last outputs (traffic, mirror_traffic), for the plan and removal check,
    and where its router answers (scoring_uri, primary_key, ca_certificate), for the
    rollout's evidence in `preview`."""
    # The file backend's organization is always "organization".
    org = pulumi.get_organization() or "organization"
    ref = pulumi.StackReference(
        "previous-routing", stack_name=f"{org}/{pulumi.get_project()}/{pulumi.get_stack()}"
    )
    endpoint = pulumi.Output.all(
        ref.get_output("scoring_uri"),
        ref.get_output("primary_key"),
        ref.get_output("ca_certificate"),
    ).apply(lambda v: {"scoring_uri": v[0], "primary_key": v[1], "ca_certificate": v[2]})
    return ref.get_output("traffic"), ref.get_output("mirror_traffic"), endpoint


def build(cfg: StackConfig, previous: tuple[Any, ...] = (None, None, None)) -> OnlineEndpoint:
    """Every component of the stack, parented to the stack, on one explicit provider."""
    k8s_provider = provider(cfg.cluster)
    # Explicit provider for the dynamic resources (keys, images): the default one would receive
    # the whole stack config as inputs, so every traffic change would also "update" it.
    dynamic = pulumi.ProviderResource("pulumi-python", "dynamic", {})
    providers: list[pulumi.ProviderResource] = [dynamic, *images_provider(cfg.registry)]
    on_cluster = pulumi.ResourceOptions(providers=[k8s_provider, *providers])
    depends: list[pulumi.Resource] = []
    if cfg.cluster.create_namespace:
        depends.append(
            k8s.core.v1.Namespace(
                "namespace",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=cfg.cluster.namespace,
                    labels={"app.kubernetes.io/part-of": "ml-endpoints"},
                ),
                opts=pulumi.ResourceOptions(provider=k8s_provider),
            )
        )
    used_models = {d.model for d in cfg.deployments if d.image is None}
    used_envs = {d.environment for d in cfg.deployments if d.image is None}
    # An S3 destination needs boto3 in the image: the server's `s3` extra, in the environment.
    s3_envs = {
        d.environment
        for d in cfg.deployments
        if d.image is None and collection_kind(d.data_collection) == "s3"
    }
    models = {
        name: ModelAsset(
            name,
            ModelAssetArgs(
                path=str(cfgmod.project_path(m.path)),
                version=m.version,
                description=m.description,
                tags=dict(m.tags),
            ),
        )
        for name, m in cfg.models.items()
        if name in used_models
    }
    envs = {
        name: Environment(
            name,
            EnvironmentArgs(
                conda_file=_opt_path(e.conda_file),
                requirements_file=_opt_path(e.requirements_file),
                requirements=e.requirements,
                image=e.image,
                base_image=e.base_image or cfg.registry.base_image,
                python=cfg.registry.python,
                registry=cfg.registry.url,
                extra_build_args={SERVER_EXTRAS_ARG: "s3"} if name in s3_envs else {},
            ),
            pulumi.ResourceOptions(providers=providers),
        )
        for name, e in cfg.environments.items()
        if name in used_envs
    }
    model_paths = [cfgmod.project_path(m.path) for m in cfg.models.values()]
    ep = cfg.endpoint
    credential = InternalCredential(
        ep.name,
        InternalCredentialArgs(namespace=cfg.cluster.namespace, version=ep.keys.internal_version),
        pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=depends)),
    )
    deployments = []
    for d in cfg.deployments:
        deployments.append(
            OnlineDeployment(
                d.name,
                OnlineDeploymentArgs(
                    endpoint_name=cfg.endpoint.name,
                    namespace=cfg.cluster.namespace,
                    model=models.get(d.model or ""),
                    environment=envs.get(d.environment or ""),
                    code_configuration=CodeConfiguration(
                        code=str(cfgmod.project_path(d.code.path)),
                        scoring_script=d.code.scoring_script,
                        exclude=model_paths,
                    )
                    if d.code
                    else None,
                    image=d.image,
                    instance_count=d.instance_count,
                    scale_settings=d.scale_settings,
                    worker_count=d.worker_count,
                    resources=Resources(
                        requests={k: v for k, v in d.resources.requests.items()},
                        limits={k: v for k, v in d.resources.limits.items()},
                    ),
                    request_settings=d.request_settings,
                    data_collection=d.data_collection,
                    routing=d.part(RoutingPolicy),
                    collection_storage=cfg.collection,
                    liveness_probe=Probe(**d.liveness_probe.model_dump()),
                    readiness_probe=Probe(**d.readiness_probe.model_dump()),
                    environment_variables=dict(d.environment_variables),
                    secret_environment_variables={
                        k: pulumi.Output.secret(v.get_secret_value())
                        for k, v in d.secret_environment_variables.items()
                    },
                    internal_credential=credential,
                    rollout_timeout_s=d.rollout_timeout_s,
                    registry=cfg.registry.url,
                ),
                pulumi.ResourceOptions.merge(
                    on_cluster, pulumi.ResourceOptions(depends_on=depends)
                ),
            )
        )
    endpoint = OnlineEndpoint(
        ep.name,
        OnlineEndpointArgs(
            deployments=deployments,
            namespace=cfg.cluster.namespace,
            auth_mode=ep.auth_mode,
            traffic=dict(ep.traffic),
            mirror_traffic=dict(ep.mirror_traffic),
            key_versions=KeyVersions(
                primary=ep.keys.primary_version,
                secondary=ep.keys.secondary_version,
                token_signing=ep.keys.token_signing_version,
            ),
            router=RouterSettings(
                image=ep.router.image,
                base_image=cfg.registry.base_image,
                registry=cfg.registry.url,
                replicas=ep.router.replicas,
                service_type=ep.router.service_type,
                node_port=ep.router.node_port,
                public_host=ep.router.public_host,
                limits=ep.router.limits(),
                reload=ep.router.reload,
                resources={
                    "requests": {k: v for k, v in ep.router.resources.requests.items()},
                    "limits": {k: v for k, v in ep.router.resources.limits.items()},
                },
                tls=TlsSettings(**ep.tls.model_dump()),
                ingress=ep.ingress,
            ),
            internal_credential=credential,
            max_token_lifetime_s=ep.max_token_lifetime_s,
            previous_traffic=previous[0],
            previous_mirror=previous[1],
            rollout=ep.rollout,
            previous_endpoint=previous[2] if len(previous) > 2 else None,
            # Rendered manifests have no router to wait for (or to ask for evidence).
            wait_for_rollout=not cfg.cluster.render_yaml_to,
        ),
        pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=depends)),
    )
    pulumi.export("endpoint_name", ep.name)
    pulumi.export("namespace", cfg.cluster.namespace)
    pulumi.export("auth_mode", ep.auth_mode)
    pulumi.export("scoring_uri", endpoint.scoring_uri)
    pulumi.export("swagger_uri", endpoint.swagger_uri)
    pulumi.export("primary_key", endpoint.primary_key)
    pulumi.export("secondary_key", endpoint.secondary_key)
    pulumi.export("ca_certificate", endpoint.ca_certificate)
    pulumi.export("traffic", endpoint.traffic)
    pulumi.export("mirror_traffic", endpoint.mirror_traffic)
    # The router's verdict, live split and step as of the last `up` (or `refresh --run-program`):
    # plain, it holds no secret. None without rollout gates.
    pulumi.export("rollout", endpoint.rollout)
    pulumi.export(
        "deployments",
        {
            d.deployment_label: {
                "kubernetes_name": d.deployment_name,
                "service_url": d.service_url,
                "image": d.image_ref,
            }
            for d in deployments
        },
    )
    pulumi.export("image_digests", {d.deployment_label: d.image_digest for d in deployments})
    pulumi.export("collection", {d.name: _sink(d, cfg) for d in cfg.deployments})
    return endpoint


def _sink(d: cfgmod.DeploymentConfig, cfg: StackConfig) -> dict[str, str]:
    """Where a deployment's collected data goes (`ml-endpoints collected` reads it there)."""
    dest = d.data_collection.collect_destination
    sink = {"destination": dest}
    if collection_kind(d.data_collection) == "s3" and cfg.collection.s3.endpoint_url:
        sink["endpoint_url"] = cfg.collection.s3.endpoint_url
    if collection_kind(d.data_collection) == "pvc":
        sink["claim"] = collection_claim(cfg.endpoint.name, d.name)
    return sink


def _opt_path(value: str | None) -> str | None:
    return None if value is None else str(cfgmod.project_path(value))
