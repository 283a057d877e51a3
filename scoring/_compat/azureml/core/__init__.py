"""Stand-in for ``azureml.core`` inside ml-endpoints pods: only ``Model.get_model_path``."""

from azureml.core.model import Model

__all__ = ["Model"]
