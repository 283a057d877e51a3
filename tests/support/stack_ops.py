"""Stack operations the end-to-end tests share: a logged `up`, an `up` that must fail, and a
folder holding one scoring script."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto

from mlendpoints._project import EndpointProject


def up(project: EndpointProject) -> auto.UpResult:
    with project.logged("pulumi up") as out:
        return project.stack.up(on_output=out)


def failed_up(project: EndpointProject) -> str:
    """`up` that must fail; its whole output."""
    with pytest.raises(auto.CommandError) as failure:
        up(project)
    return str(failure.value)


def script_folder(tmp: Path, name: str, text: str) -> Path:
    """TMP/NAME/score.py holding TEXT (a deployment's `code.path`)."""
    folder = tmp / name
    folder.mkdir()
    (folder / "score.py").write_text(text)
    return folder
