"""Stand-in for ``azureml.ai.monitoring.context``."""

from scoring.server.collector import BasicCorrelationContext

__all__ = ["BasicCorrelationContext"]
