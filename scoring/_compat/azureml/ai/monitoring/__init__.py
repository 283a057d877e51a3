"""Stand-in for ``azureml.ai.monitoring``: the server's own data collector."""

from scoring.server.collector import Collector

__all__ = ["Collector"]
