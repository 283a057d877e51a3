"""Benchmarks (not tests): each ``python -m bench.<name>`` prints a table.

- ``bench.server``: the inference server vs azmlinfsrv, MLServer and a bare Starlette app.
- ``bench.router``: the endpoint router (see docs/router.md).
"""
