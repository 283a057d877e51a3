"""OnlineDeployment: one model version behind an endpoint: scoring image, Deployment, Service."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
from pydantic import ValidationError

from components import _build, _collection, _labels, _naming, _pods, _scaling, rules
from components._collection import CollectionStorage
from components._hashing import hash_parts, hash_tree
from components._scaling import ScaleSettings
from components.environment import Environment
from components.internal_credential import InternalCredential
from components.model_asset import ModelAsset
from scoring.router.config import RoutingPolicy
from scoring.server.config import (
    DataCollection,
    DeploymentSettings,
    RequestSettings,
    Settings,
    Workers,
)

if TYPE_CHECKING:
    from components._images import Image

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COLLECT_DIR = f"{_build.APP_ROOT}/data-collection"
"""The data-collection spool: an emptyDir (the code folder is on the read-only root)."""


@dataclass
class Probe:
    """Kubernetes probe timings (Azure ML's probe settings, same defaults)."""

    initial_delay_s: int = 10
    period_s: int = 10
    timeout_s: int = 2
    failure_threshold: int = 30
    success_threshold: int = 1


@dataclass
class Resources:
    """Container requests and limits, Kubernetes quantities (`cpu: 500m`, `memory: 1Gi`)."""

    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"})
    limits: dict[str, str] = field(default_factory=dict)


@dataclass
class CodeConfiguration:
    """The scoring script and the folder it lives in (copied whole into the image)."""

    code: str
    scoring_script: str = "score.py"
    exclude: list[Path] = field(default_factory=list)
    """Folders inside `code` left out of the image (other models, data)."""


@dataclass
class OnlineDeploymentArgs:
    """One deployment. Either `model` + `environment` + `code_configuration`, or `image`.

    Attributes:
        endpoint_name: the endpoint this deployment serves behind (fixed at creation).
        namespace: Kubernetes namespace of the endpoint.
        image: a prebuilt scoring image (bring your own container); nothing is built.
        worker_count, request_settings, data_collection: the inference server's settings,
            declared (defaults, bounds, docs) in `scoring.server.config`; they reach the pods as the
            environment `DeploymentSettings.to_env()` renders.
        scale_settings: fixed `instance_count` (`default`) or a CPU autoscaler
            (`target_utilization`, then `instance_count` stays at its default 1); see
            `components._scaling`.
        rollout_timeout_s: how long `pulumi up` waits for Ready pods before failing with the
            pods' status (the scoring server's log tail when init() fails), instead of 10 min.
        secret_environment_variables: name -> value (Pulumi secrets); they go to a Kubernetes
            Secret and reach the container by `secretKeyRef`, never in the pod spec.
        internal_credential: the endpoint's credential (`InternalCredential`); the server then
            answers only requests that carry it (the router's), besides its probes.
        routing: how the endpoint's router may treat this deployment's requests (`idempotent`:
            replay once after a dropped connection), declared in `scoring.router.config`; it
            reaches the router config file's entry for this deployment.
        collection_storage: the sinks `data_collection.collect_destination` may name (the S3
            connection and its keys, the PVC's size and class); see `components._collection`.
            An S3 destination needs boto3 in the image: build its environment with
            `extra_build_args={"SERVER_EXTRAS": "s3"}` (the stack program does).
    """

    endpoint_name: str
    namespace: str = "default"
    model: ModelAsset | None = None
    environment: Environment | None = None
    code_configuration: CodeConfiguration | None = None
    image: str | None = None
    instance_count: int = 1
    scale_settings: ScaleSettings = field(default_factory=ScaleSettings)
    worker_count: int = Workers.model_fields["worker_count"].default
    resources: Resources = field(default_factory=Resources)
    request_settings: RequestSettings = field(default_factory=RequestSettings)
    data_collection: DataCollection = field(default_factory=DataCollection)
    liveness_probe: Probe = field(default_factory=Probe)
    readiness_probe: Probe = field(
        default_factory=lambda: Probe(initial_delay_s=2, period_s=2, failure_threshold=3)
    )
    environment_variables: dict[str, str] = field(default_factory=dict)
    rollout_timeout_s: int = 300
    registry: str = "127.0.0.1:5000"
    secret_environment_variables: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    internal_credential: InternalCredential | None = None
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    collection_storage: CollectionStorage = field(default_factory=CollectionStorage)

    def server_settings(self) -> DeploymentSettings:
        """The server settings as one checked model (its bounds apply here too).

        Raises:
            pydantic.ValidationError: a setting out of its declared bounds.
        """
        return DeploymentSettings(
            worker_count=self.worker_count,
            request_settings=self.request_settings,
            data_collection=self.data_collection,
        )


class OnlineDeployment(pulumi.ComponentResource):
    """Scoring image (environment + model + code, tagged by content), Deployment and Service.

    The Deployment's selector holds only labels fixed at creation (endpoint, deployment), so new
    images and model versions roll pods in place, never replace the Deployment. Pods are Ready only
    after the scoring server's init() succeeded (`GET /ready`); the rolling update never removes a
    Ready pod before its successor is Ready (maxUnavailable 0).
    """

    service_url: pulumi.Output[str]
    revision: str
    """What the deployment serves, as the router config's `revision` (a rollout's name counts it):
    the image's content tag (environment, model and code), or a hash of a prebuilt image's
    reference. A plain string, known when the program runs (no Output, no secret in it)."""
    image_ref: pulumi.Output[str]
    image_digest: pulumi.Output[str]
    deployment_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: OnlineDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        _validate(name, args)
        super().__init__("mlendpoints:index:OnlineDeployment", name, {}, opts)
        self.deployment_label = name
        self.endpoint_name = args.endpoint_name
        self.internal_credential = args.internal_credential
        self.routing = args.routing
        self.scale_settings = args.scale_settings  # the endpoint's traffic plan reads it
        object_name = _naming.deployment_object(args.endpoint_name, name)
        selector = _labels.scoring_selector(args.endpoint_name, name)
        labels = {**_labels.common("scoring"), **selector}

        self.image: Image | None = None
        content_tag = ""
        if args.image:
            image_ref: pulumi.Input[str] = args.image
            image_digest: pulumi.Input[str] = ""
        else:
            image_ref, image_digest, content_tag = self._scoring_image(name, args)
        self.revision = content_tag or hash_parts(["image", args.image or ""])[:16]
        model_version = args.model.version_label if args.model else "external"

        container = k8s.core.v1.ContainerArgs(
            name="scoring",
            image=image_ref,
            image_pull_policy="IfNotPresent",
            command=None if args.image else ["python", "-m", "scoring", "serve"],
            args=None
            if args.image
            else [
                "--entry-script",
                _entry_script(args),
                "--model-dir",
                _build.MODEL_DIR,
                "--port",
                str(_naming.SCORING_PORT),
            ],
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=_naming.SCORING_PORT)],
            env=[
                *(k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in _env(name, args).items()),
                *(
                    k8s.core.v1.EnvVarArgs(
                        name=var,
                        value_from=k8s.core.v1.EnvVarSourceArgs(
                            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                                name=_naming.env_secret(args.endpoint_name, name), key=var
                            )
                        ),
                    )
                    for var in sorted(args.secret_environment_variables)
                ),
                *(
                    k8s.core.v1.EnvVarArgs(
                        name=var,
                        value_from=k8s.core.v1.EnvVarSourceArgs(
                            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                                name=_naming.collection_secret(args.endpoint_name, name), key=var
                            )
                        ),
                    )
                    for var in _s3_key_vars(args)
                ),
            ],
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests=args.resources.requests or None, limits=args.resources.limits or None
            ),
            readiness_probe=_probe("/ready", args.readiness_probe),
            liveness_probe=_probe("/", args.liveness_probe),
            # When init() fails the server exits; the kubelet keeps the log tail as the
            # termination message, which the provider's await reports in `pulumi up`.
            termination_message_policy="FallbackToLogsOnError",
            lifecycle=_pods.drain_lifecycle(),
            security_context=_pods.container_security(),
            volume_mounts=_mounts(args),
        )
        template_annotations: dict[str, pulumi.Input[str]] = {
            "mlendpoints/model-version": model_version,
            "mlendpoints/content-tag": content_tag or "external",
        }
        secret_deps: list[pulumi.Resource] = []
        if args.secret_environment_variables:
            self.env_secret = self._secret(
                _naming.child(name, "env"),
                _naming.env_secret(args.endpoint_name, name),
                args.namespace,
                labels,
                args.secret_environment_variables,
            )
            secret_deps.append(self.env_secret)
            # A changed value must roll the pods (env is read at start): a digest of the values,
            # salted, not the values.
            template_annotations["mlendpoints/secret-env"] = _secret_digest(
                args.secret_environment_variables
            )
        secret_deps += self._collection_sink(name, args, labels)
        s3 = args.collection_storage.s3
        if _s3_key_vars(args) and s3.access_key_id and s3.secret_access_key:
            template_annotations["mlendpoints/collection-keys"] = _secret_digest(
                {
                    "id": s3.access_key_id.get_secret_value(),
                    "secret": s3.secret_access_key.get_secret_value(),
                }
            )
        if args.internal_credential is not None:
            secret_deps.append(args.internal_credential.secret)
            template_annotations["mlendpoints/internal-credential"] = str(
                args.internal_credential.version
            )
        self.deployment = k8s.apps.v1.Deployment(
            _naming.child(name, "deployment"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=args.namespace,
                labels={**labels, "mlendpoints/model-version": model_version},
                annotations={"pulumi.com/timeoutSeconds": str(args.rollout_timeout_s)},
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=_scaling.replicas(args.scale_settings, args.instance_count),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_unavailable=0, max_surge=1
                    ),
                ),
                min_ready_seconds=0,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=labels, annotations=template_annotations
                    ),
                    spec=k8s.core.v1.PodSpecArgs(
                        containers=[container],
                        termination_grace_period_seconds=_collection.grace_seconds(
                            args.data_collection
                        ),
                        enable_service_links=False,
                        automount_service_account_token=False,
                        security_context=_pods.pod_security(),
                        volumes=_volumes(name, args),
                        topology_spread_constraints=_scaling.spread(selector),
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=secret_deps,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{args.rollout_timeout_s}s", update=f"{args.rollout_timeout_s}s"
                ),
            ),
        )
        _scaling.declare(
            self,
            name,
            object_name,
            args.namespace,
            labels,
            selector,
            args.scale_settings,
            args.instance_count,
        )
        pulumi.log.info(
            "scale " + _scaling.summary(name, args.scale_settings, args.instance_count),
            resource=self,
        )
        self.service = k8s.core.v1.Service(
            _naming.child(name, "service"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=args.namespace,
                labels=labels,
                # The Deployment's await (bounded by rollout_timeout_s) already waits for Ready
                # pods; the Service's own await would wait up to 10 min for endpoints when
                # init() fails, hiding the Deployment's error behind a hang.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=selector,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="http", port=_naming.SCORING_PORT, target_port="http"
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Only the endpoint's router pods reach the scoring port (where the CNI enforces
        # policies; the internal credential covers the clusters where it does not). Kubelet
        # probes come from the node itself, which enforcing CNIs (Calico, Cilium, kube-router)
        # always admit to its own pods.
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            _naming.child(name, "network-policy"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=args.namespace, labels=labels
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels=_labels.router_selector(args.endpoint_name)
                                )
                            )
                        ],
                        ports=[
                            k8s.networking.v1.NetworkPolicyPortArgs(
                                port=_naming.SCORING_PORT, protocol="TCP"
                            )
                        ],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service_url = pulumi.Output.from_input(
            _naming.service_url(args.endpoint_name, name, args.namespace)
        )
        self.image_ref = pulumi.Output.from_input(image_ref)
        self.image_digest = pulumi.Output.from_input(image_digest)
        self.deployment_name = pulumi.Output.from_input(object_name)
        self.register_outputs(
            {
                "service_url": self.service_url,
                "image_ref": self.image_ref,
                "image_digest": self.image_digest,
                "deployment_name": self.deployment_name,
            }
        )

    def _secret(
        self,
        child: str,
        object_name: str,
        namespace: str,
        labels: dict[str, str],
        values: Mapping[str, pulumi.Input[str]],
    ) -> k8s.core.v1.Secret:
        """An Opaque Secret of the deployment whose values stay Pulumi secrets."""
        return k8s.core.v1.Secret(
            child,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=namespace, labels=labels
            ),
            type="Opaque",
            string_data={k: pulumi.Output.secret(v) for k, v in values.items()},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _collection_sink(
        self, name: str, args: OnlineDeploymentArgs, labels: dict[str, str]
    ) -> list[pulumi.Resource]:
        """The destination's objects (S3 keys Secret, or the PVC) and the preview line saying
        where collected data goes; returns what the pods must wait for."""
        found = _collection.kind(args.data_collection)
        lost = args.data_collection.collect and found == "none"
        (pulumi.log.warn if lost else pulumi.log.info)(
            _collection.summary(
                name, args.endpoint_name, args.data_collection, args.collection_storage
            ),
            resource=self,
        )
        s3 = args.collection_storage.s3
        if found == "s3" and s3.access_key_id is not None and s3.secret_access_key is not None:
            keys = (s3.access_key_id.get_secret_value(), s3.secret_access_key.get_secret_value())
            self.collection_secret = self._secret(
                _naming.child(name, "collection-s3"),
                _naming.collection_secret(args.endpoint_name, name),
                args.namespace,
                labels,
                dict(zip(_collection.S3_KEY_VARS, keys, strict=True)),
            )
            return [self.collection_secret]
        if found == "pvc":
            pvc = args.collection_storage.pvc
            self.collection_claim = k8s.core.v1.PersistentVolumeClaim(
                _naming.child(name, "collected"),
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=_naming.collection_claim(args.endpoint_name, name),
                    namespace=args.namespace,
                    labels=labels,
                    # The first pod binds it (WaitForFirstConsumer classes): the Deployment's
                    # await is the one that waits.
                    annotations={"pulumi.com/skipAwait": "true"},
                ),
                spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                    access_modes=[pvc.access_mode],
                    storage_class_name=pvc.storage_class,
                    resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                        requests={"storage": pvc.size}
                    ),
                ),
                # Removing the deployment never deletes what it collected.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
            return [self.collection_claim]
        return []

    def _scoring_image(
        self, name: str, args: OnlineDeploymentArgs
    ) -> tuple[pulumi.Output[str], pulumi.Output[str], str]:
        """Declare the scoring image: FROM the environment image, plus model and code folders."""
        from components._images import Image, ImageArgs  # owned by the toolchain area

        assert args.model and args.environment and args.code_configuration  # checked in _validate
        code_dir = Path(args.code_configuration.code).expanduser().resolve()
        # A model folder inside the code folder is the model's, not the code's: a new model
        # must not change the code hash of deployments that do not use it.
        exclude = [args.model.local_path, *args.code_configuration.exclude]
        digest = hash_parts(
            [
                "scoring/v1",
                args.environment.digest,
                args.model.content_hash,
                hash_tree(code_dir, exclude),
            ]
        )
        context = _build.stage(
            "scoring",
            digest,
            {
                **_build.tree("model", args.model.local_path),
                **_build.tree("code", code_dir, exclude),
            },
        )
        image = Image(
            _naming.child(name, "image"),
            ImageArgs(
                context=str(context),
                dockerfile=str(_build.SCORING_DOCKERFILE),
                build_args={
                    "ENV_IMAGE": args.environment.image_ref,
                    "ENTRY_SCRIPT": args.code_configuration.scoring_script,
                },
                repository=f"{args.registry}/mlendpoints/{args.endpoint_name}-{name}",
                # No tag: tagged by the pipeline's content key (the environment image's digest
                # is a build arg, so a rebuilt environment gives a new scoring tag too).
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.image = image
        return image.ref, image.digest, digest[:16]


def _validate(name: str, args: OnlineDeploymentArgs) -> None:
    """All argument problems at once, before any child exists."""
    where = f"deployment {name!r}"
    problems = rules.check_name(f"{where} name", name)
    problems += rules.check_name(f"{where} endpoint_name", args.endpoint_name)
    if not problems:
        problems += rules.check_object_name(f"{where} name", args.endpoint_name, name)
    if args.image is None:
        missing = [
            k for k in ("model", "environment", "code_configuration") if getattr(args, k) is None
        ]
        if missing:
            problems.append(f"{where}: needs {', '.join(missing)} (or a prebuilt image)")
        elif args.code_configuration is not None:
            code = Path(args.code_configuration.code).expanduser()
            script = code / args.code_configuration.scoring_script
            if not script.is_file():
                problems.append(
                    f"{where} code_configuration.scoring_script: {str(script)!r} is not a file"
                )
    for key, low in (("instance_count", 0), ("rollout_timeout_s", 10)):
        value = getattr(args, key)
        if not isinstance(value, int) or value < low:
            problems.append(f"{where} {key}: {value!r} must be an integer >= {low}")
    problems += _scaling.check(
        where, args.scale_settings, args.instance_count != 1, args.resources.requests
    )
    settings = DeploymentSettings.variables()
    for var in sorted(settings.keys() & args.environment_variables.keys()):
        problems.append(
            f"{where} environment_variables.{var}: the server reads it for "
            f"{settings[var]}; set that instead (one value, checked, in every layer)"
        )
    reserved = {*settings, *_fixed_env(name, args), *_s3_key_vars(args)}
    for var in sorted(args.secret_environment_variables):
        if not ENV_NAME.match(var):
            problems.append(
                f"{where} secret_environment_variables.{var}: not an environment variable name "
                "(letters, digits, '_', not starting with a digit)"
            )
        elif var in args.environment_variables:
            problems.append(
                f"{where} secret_environment_variables.{var}: also in environment_variables; "
                "keep it in one of them"
            )
        elif var in reserved:
            problems.append(
                f"{where} secret_environment_variables.{var}: the server sets or reads it; "
                "pick another name"
            )
    problems += _collection.check(where, args.data_collection, args.collection_storage)
    try:
        args.server_settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            key = ".".join(str(part) for part in err["loc"])
            problems.append(f"{where} {key}: {err['msg']} (got {err['input']!r})")
    if problems:
        raise ValueError("\n".join(problems))


def _entry_script(args: OnlineDeploymentArgs) -> str:
    assert args.code_configuration is not None
    return f"{_build.CODE_DIR}/{args.code_configuration.scoring_script}"


def _fixed_env(name: str, args: OnlineDeploymentArgs) -> dict[str, str]:
    """What the components decide for every pod: where the model, script, spool and
    credential are, the names in collected data's paths, where collected data goes."""
    env = {
        Settings.env_vars("collect_dir")[0]: COLLECT_DIR,
        Settings.env_vars("endpoint_name")[0]: args.endpoint_name,
        Settings.env_vars("deployment_name")[0]: name,
    }
    dest_var = Settings.env_vars("collect_destination")[0]
    env[dest_var] = _collection.shipped_to(args.data_collection)
    if _collection.kind(args.data_collection) == "s3":
        s3 = args.collection_storage.s3
        if s3.endpoint_url:
            env["AWS_ENDPOINT_URL"] = s3.endpoint_url
        env["AWS_REGION"] = s3.region
    if args.image is None:
        env["AZUREML_MODEL_DIR"] = _build.MODEL_DIR
        env["AZUREML_ENTRY_SCRIPT"] = _entry_script(args)
    if args.internal_credential is not None:
        env[Settings.env_vars("internal_credential_file")[0]] = args.internal_credential.file
    return env


def _env(name: str, args: OnlineDeploymentArgs) -> dict[str, str]:
    """Every server setting as the env var the server reads (`to_env()`), the fixed paths, then
    the user's (never a server setting: `_validate` refuses them)."""
    env = args.server_settings().to_env()
    env.update(_fixed_env(name, args))
    env.update(args.environment_variables)
    return env


def _s3_key_vars(args: OnlineDeploymentArgs) -> tuple[str, ...]:
    """The S3 key variables read from the collection Secret (none without S3 keys)."""
    s3 = args.collection_storage.s3
    if _collection.kind(args.data_collection) != "s3" or s3.access_key_id is None:
        return ()
    return _collection.S3_KEY_VARS


def _mounts(args: OnlineDeploymentArgs) -> list[k8s.core.v1.VolumeMountArgs]:
    """Writable scratch on the read-only root, the collection destination when it is a PVC,
    and the internal credential read-only."""
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="tmp", mount_path=_pods.TMP_DIR),
        k8s.core.v1.VolumeMountArgs(name="data-collection", mount_path=COLLECT_DIR),
    ]
    if _collection.kind(args.data_collection) == "pvc":
        mounts.append(
            k8s.core.v1.VolumeMountArgs(name="collected", mount_path=_collection.DEST_DIR)
        )
    if args.internal_credential is not None:
        mounts.append(
            k8s.core.v1.VolumeMountArgs(
                name="internal", mount_path=_naming.INTERNAL_DIR, read_only=True
            )
        )
    return mounts


def _volumes(name: str, args: OnlineDeploymentArgs) -> list[k8s.core.v1.VolumeArgs]:
    spool = _collection.spool_volume_size(args.data_collection)
    volumes = [_pods.scratch_volume("tmp"), _pods.scratch_volume("data-collection", spool)]
    if _collection.kind(args.data_collection) == "pvc":
        volumes.append(
            k8s.core.v1.VolumeArgs(
                name="collected",
                persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                    claim_name=_naming.collection_claim(args.endpoint_name, name)
                ),
            )
        )
    if args.internal_credential is not None:
        volumes.append(_pods.secret_volume("internal", args.internal_credential.secret_name))
    return volumes


def _secret_digest(values: Mapping[str, pulumi.Input[str]]) -> pulumi.Output[str]:
    """A salted digest of the secret values (rolls the pods when one changes); a secret too."""
    names = sorted(values)

    def digest(plain: list[str]) -> str:
        text = json.dumps(dict(zip(names, plain, strict=True)), sort_keys=True)
        return hashlib.sha256(b"ml-endpoints secret env v1\0" + text.encode()).hexdigest()[:16]

    return pulumi.Output.secret(pulumi.Output.all(*(values[n] for n in names)).apply(digest))


def _probe(path: str, probe: Probe) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="http"),
        initial_delay_seconds=probe.initial_delay_s,
        period_seconds=probe.period_s,
        timeout_seconds=probe.timeout_s,
        failure_threshold=probe.failure_threshold,
        success_threshold=probe.success_threshold,
    )
