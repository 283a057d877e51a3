"""``python -m bench [server|router|rollout|collection-loss|batching]``: run the benchmarks
(not tests), each printing a table.

With no name, runs every benchmark one after another with its defaults (rollout needs the
toolchain and the local cluster: `make setup cluster-up`).
"""

from __future__ import annotations

import sys

from bench import batching, collection_loss, router, server


def _rollout(argv: list[str]) -> int:
    from bench import rollout  # the Pulumi SDK and the cluster helpers, only when asked for

    return rollout.main(argv)


BENCHMARKS = {
    "server": server.main,
    "router": router.main,
    "rollout": _rollout,
    "collection-loss": collection_loss.main,
    "batching": batching.main,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in BENCHMARKS:
        return BENCHMARKS[args[0]](args[1:])
    if args:
        known = ", ".join(BENCHMARKS)
        print(f"unknown benchmark {args[0]!r}; choose from {known}", file=sys.stderr)
        return 2
    return max(run([]) for run in BENCHMARKS.values())


if __name__ == "__main__":
    sys.exit(main())
