"""Pulumi components for ml-endpoints: what users may import.

Layout: one public module per component (`model_asset`, `environment`, `online_deployment`,
`online_endpoint`, `internal_credential`), pure validation rules in `rules`, and private helpers
in `_*` modules
(labels, naming, hashing, conda translation, build contexts, generated keys; `_images` belongs to
the toolchain area and builds/pushes images on `pulumi up` only). The server and router settings
(`RequestSettings`, `DataCollection`, `RouterLimits`, `RoutingPolicy`) are declared once in
`scoring` and re-exported here.
"""

from components._ingress import IngressSettings
from components._scaling import ScaleSettings
from components.environment import Environment, EnvironmentArgs
from components.internal_credential import InternalCredential, InternalCredentialArgs
from components.model_asset import ModelAsset, ModelAssetArgs
from components.online_deployment import (
    CodeConfiguration,
    DataCollection,
    OnlineDeployment,
    OnlineDeploymentArgs,
    Probe,
    RequestSettings,
    Resources,
    RoutingPolicy,
)
from components.online_endpoint import (
    KeyVersions,
    OnlineEndpoint,
    OnlineEndpointArgs,
    RouterLimits,
    RouterSettings,
    TlsSettings,
)

__all__ = [
    "CodeConfiguration",
    "DataCollection",
    "Environment",
    "EnvironmentArgs",
    "IngressSettings",
    "InternalCredential",
    "InternalCredentialArgs",
    "KeyVersions",
    "ModelAsset",
    "ModelAssetArgs",
    "OnlineDeployment",
    "OnlineDeploymentArgs",
    "OnlineEndpoint",
    "OnlineEndpointArgs",
    "Probe",
    "RequestSettings",
    "Resources",
    "RouterLimits",
    "RouterSettings",
    "RoutingPolicy",
    "ScaleSettings",
    "TlsSettings",
]
