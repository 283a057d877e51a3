"""The local cluster's S3 server (versitygw): its settings file and a boto3 client."""

from __future__ import annotations

from typing import Any

from mlendpoints.kube import CACHE

S3_ENV = CACHE / "cluster" / "s3.env"


def s3_env() -> dict[str, str]:
    """``s3.env`` as a dict (endpoint, bucket, region, keys); asserts it exists and is 0600."""
    assert S3_ENV.exists(), f"{S3_ENV} is missing: run `make cluster-up`"
    assert S3_ENV.stat().st_mode & 0o077 == 0, f"{S3_ENV} must be private (0600)"
    pairs = (
        line.split("=", 1)
        for line in S3_ENV.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return dict(pairs)


def s3_client(env: dict[str, str], endpoint: str) -> Any:
    """A boto3 S3 client for ``endpoint`` with the keys in ``env``."""
    import boto3  # the dev extra; only the tiers that talk to S3 need it
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        # SigV4 for presigned URLs too (boto3 presigns S3 with SigV2 unless told), path-style.
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
