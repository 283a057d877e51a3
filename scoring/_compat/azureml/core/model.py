"""``Model.get_model_path(name)`` resolved against ``AZUREML_MODEL_DIR`` (the mounted model)."""

from __future__ import annotations

import os
from pathlib import Path

_IGNORED = {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt", "metadata.json"}


class Model:
    """Only what scoring scripts call inside a deployment."""

    @staticmethod
    def get_model_path(
        model_name: str, version: int | None = None, _workspace: object = None
    ) -> str:
        """The path of model ``model_name`` in the model folder.

        Looks for, in order: ``<dir>/<name>[/<version>]``, ``<dir>/<name>.*`` (one match),
        then the only file in the folder. Azure returns the registered file itself for a
        single-file model, which is what tutorial scripts pass to ``joblib.load``.
        """
        root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
        direct = root / model_name
        if direct.exists():
            if version is not None and (direct / str(version)).exists():
                direct = direct / str(version)
            return str(_single_file(direct) if direct.is_dir() else direct)
        matches = sorted(root.glob(f"{model_name}.*"))
        if len(matches) == 1:
            return str(matches[0])
        files = (
            [
                p
                for p in sorted(root.iterdir())
                if not p.name.startswith(".") and p.name not in _IGNORED
            ]
            if root.is_dir()
            else []
        )
        if len(files) == 1:
            return str(files[0])
        listing = ", ".join(p.name for p in files) or "(empty or missing)"
        raise FileNotFoundError(
            f"Model.get_model_path({model_name!r}): no such model under AZUREML_MODEL_DIR="
            f"{str(root)!r}; it holds: {listing}"
        )


def _single_file(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_file() else folder
