"""docs/server.md's settings table is the declaration in `scoring/server/config.py`, row for row.

On a mismatch the assertion shows the table to paste (generated here from the declaration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args, get_origin

from scoring.server.config import DeploymentSettings, Settings

NONE = "\N{EN DASH}"  # an empty cell
DOC = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def _show(value: object) -> str:
    if value is None:
        return NONE
    return f"`{'true' if value is True else 'false' if value is False else value}`"


def settings_table() -> str:
    """The Markdown table of every server setting, from the declaration."""
    keys = DeploymentSettings.key_paths()
    lines = [
        "| option | environment | default | range | stack config `deployments[i].` | what |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
        bounds = "" if low is None and high is None else f"{low if low is not None else ''}.."
        bounds += "" if high is None else f"{high}"
        if get_origin(info.annotation) is Literal:
            bounds = ", ".join(get_args(info.annotation))
        cells = [
            " / ".join(f"`{flag}`" for flag in Settings.flags(name)),
            ", ".join(f"`{var}`" for var in Settings.env_vars(name)),
            _show(info.default),
            bounds,
            f"`{keys[name]}`" if name in keys else NONE,
            (info.description or "").replace("``", "`").replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_docs_table_is_the_declaration() -> None:
    table = settings_table()
    assert table in DOC.read_text(), f"docs/server.md: replace the settings table with\n{table}"
