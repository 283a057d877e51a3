"""Where things are: the checkout and the cache. The one owner of both roots.

`REPO` is the checkout this package runs from (tests, benchmarks, the Pulumi program and the
components use it to find `Pulumi.yaml`, `samples/`, `images/`, `scripts/`). `cache_root()` is
`$ML_ENDPOINTS_CACHE`, default `~/.cache/ml-endpoints`, the same default `scripts/lib.sh` and
`scripts/env.sh` give it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "diabetes"
"""The shipped sample (scoring script, training script, models once trained)."""
DEFAULT_CACHE = "~/.cache/ml-endpoints"


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """`$ML_ENDPOINTS_CACHE` from ENVIRON (default: this process's), else ~/.cache/ml-endpoints."""
    env = os.environ if environ is None else environ
    return Path(env.get("ML_ENDPOINTS_CACHE") or DEFAULT_CACHE).expanduser()
