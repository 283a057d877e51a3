"""InternalCredential: the per-endpoint secret only the router holds, so a pod that calls a
deployment's Service directly (around the router) gets 401, even on clusters whose CNI does
not enforce NetworkPolicy.

It exists before the deployments (their pods mount it) and outlives any one of them, so it is
its own component, handed to every `OnlineDeployment` and to the `OnlineEndpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import _labels, _naming
from components._keys import GeneratedKey


@dataclass
class InternalCredentialArgs:
    """Attributes:
    namespace: the endpoint's namespace.
    version: bump to generate a new credential (router and scoring pods roll to it).
    """

    namespace: str = "default"
    version: int = 1


class InternalCredential(pulumi.ComponentResource):
    """A generated key (a Pulumi secret) in the Secret `{endpoint}-internal`, key `credential`."""

    secret_name: str
    version: int

    def __init__(
        self,
        endpoint: str,
        args: InternalCredentialArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mlendpoints:index:InternalCredential", endpoint, {}, opts)
        self.endpoint_name = endpoint
        self.secret_name = _naming.internal_secret(endpoint)
        self.version = args.version
        self.key = GeneratedKey(
            _naming.child(endpoint, "internal-credential"),
            "internal_credential",
            args.version,
            pulumi.ResourceOptions(parent=self),
        )
        self.secret = k8s.core.v1.Secret(
            _naming.child(endpoint, "internal"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.secret_name,
                namespace=args.namespace,
                labels={**_labels.common("credential"), _labels.ENDPOINT: endpoint},
            ),
            type="Opaque",
            string_data={_naming.INTERNAL_FILE: self.key.value},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"secret_name": self.secret_name})

    @property
    def file(self) -> str:
        """The credential's path inside router and scoring pods."""
        return f"{_naming.INTERNAL_DIR}/{_naming.INTERNAL_FILE}"
