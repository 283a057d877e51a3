"""`ml-endpoints` command-line tool: invoke, keys, token, status, traffic, logs of a stack.

Public: `main` (the CLI entry point, `ml-endpoints`), `read_outputs` / `read_cluster` (a
stack's outputs and cluster config through the Pulumi Automation API) and `StackError`.
"""

from mlendpoints.cli import main
from mlendpoints.stack import StackError, read_cluster, read_outputs

__all__ = ["StackError", "main", "read_cluster", "read_outputs"]
