"""Stand-in for ``azureml.ai.monitoring.context``."""

from scoring.collector import BasicCorrelationContext

__all__ = ["BasicCorrelationContext"]
