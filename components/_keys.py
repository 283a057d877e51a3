"""Endpoint keys generated once, kept in Pulumi state as secrets, regenerated one at a time.

No `pulumi_random` plugin exists offline, so a tiny Pulumi dynamic provider generates each key with
`secrets.token_urlsafe` on create. The key's inputs are its purpose and a version number taken from
stack config; bumping one version replaces that key alone (create-before-delete), the others keep
their state. The value is an `additional_secret_outputs` entry, so state and outputs hold it
encrypted; it never appears in plain text in previews or logs.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

KEY_BYTES = 32


class GeneratedOnce(ResourceProvider):
    """Something generated on create and kept in state: a change to one of `replacing_inputs`
    means a new one (create-before-delete); nothing else counts, so a new SDK or provider code
    never regenerates it."""

    replacing_inputs: tuple[str, ...] = ()

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in self.replacing_inputs if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class _KeyProvider(GeneratedOnce):
    """Creates a random urlsafe key; any change to its inputs means a new key."""

    replacing_inputs = ("purpose", "version", "nbytes")

    def create(self, props: dict[str, Any]) -> CreateResult:
        value = secrets.token_urlsafe(int(props.get("nbytes", KEY_BYTES)))
        return CreateResult(id_=uuid.uuid4().hex, outs={**props, "value": value})


class GeneratedKey(Resource):
    """One generated secret (primary key, secondary key or token signing key)."""

    value: pulumi.Output[str]
    version: pulumi.Output[int]

    def __init__(
        self, name: str, purpose: str, version: int, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            _KeyProvider(),
            name,
            {"purpose": purpose, "version": version, "nbytes": KEY_BYTES, "value": None},
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["value"])
            ),
        )
