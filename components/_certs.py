"""The router's certificate, generated offline per stack: a CA and a server certificate it
signs, kept in Pulumi state (the private key as a secret), rotated by bumping a version.

Like `_keys`, a tiny dynamic provider: no `pulumi_tls` plugin exists offline. The certificate
maths is `components._tls` (pure functions on `cryptography`). The CA's private key signs once
and is dropped: nothing else is ever signed with it, and a new certificate (new names, new
version) comes with a new CA, which the stack outputs as `ca_certificate`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource

from components._keys import GeneratedOnce

VALID_DAYS = 825  # the longest lifetime clients (macOS, browsers) accept for a server cert;
# the CA lives as long: it signs this one certificate only.


class _CertificateProvider(GeneratedOnce):
    """Creates a CA and a server certificate; any change to its inputs means new ones."""

    replacing_inputs = ("common_name", "version", "dns_names", "ip_addresses", "valid_days")

    def create(self, props: dict[str, Any]) -> CreateResult:
        from components import _tls

        days = int(props["valid_days"])
        ca_cert, ca_key = _tls.make_ca(f"{props['common_name']} CA", days=days)
        cert, key = _tls.make_server_cert(
            ca_cert,
            ca_key,
            list(props["dns_names"]),
            list(props["ip_addresses"]),
            days=days,
        )
        outs = {
            **props,
            "ca_certificate": ca_cert.decode(),
            "certificate": cert.decode(),
            "private_key": key.decode(),
        }
        return CreateResult(id_=uuid.uuid4().hex, outs=outs)


class GeneratedCertificate(Resource):
    """A server certificate for DNS_NAMES and IP_ADDRESSES, signed by its own new CA."""

    ca_certificate: pulumi.Output[str]
    certificate: pulumi.Output[str]
    private_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        common_name: str,
        version: int,
        dns_names: list[str],
        ip_addresses: list[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            _CertificateProvider(),
            name,
            {
                "common_name": common_name,
                "version": version,
                "dns_names": dns_names,
                "ip_addresses": ip_addresses,
                "valid_days": VALID_DAYS,
                "ca_certificate": None,
                "certificate": None,
                "private_key": None,
            },
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["private_key"])
            ),
        )
