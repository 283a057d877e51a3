"""``python -m scoring serve|router ...``: one command, a subcommand per process kind."""

from __future__ import annotations

import sys

USAGE = """usage: python -m scoring {serve,router} [options]

  serve    run the inference server (init()/run() scoring script or MLflow model)
  router   run the endpoint router (auth, traffic split, mirroring)

Run `python -m scoring SUBCOMMAND --help` for the options of each."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        from scoring.server.supervisor import main as serve_main

        return serve_main(rest)
    if command == "router":
        from scoring.router.main import main as router_main

        return router_main(rest)
    print(f"unknown subcommand {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
