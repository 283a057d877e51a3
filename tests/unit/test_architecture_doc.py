"""docs/architecture.md names the one file that owns each concept: every path it names must exist.

A file moved or renamed without the page following fails here, naming the stale path, so the map
stays true.
"""

from __future__ import annotations

import re

from mlendpoints.paths import REPO

DOC = REPO / "docs" / "architecture.md"
# What a backticked path looks like: no spaces, no placeholders, not a route (`/metrics`).
_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*/?")
_SUFFIXES = (".py", ".md", ".sh", ".toml", ".env", ".go", ".mod", ".yaml", ".Dockerfile")


def _backticked_paths(text: str) -> list[str]:
    """Backticked tokens that name a file or folder: they hold a `/` or end in a file suffix."""
    spans = re.findall(r"`([^`\n]+)`", text)
    return [
        s
        for s in spans
        if _PATH.fullmatch(s) and ("/" in s or s.endswith(_SUFFIXES) or s == "Makefile")
    ]


def _linked_pages(text: str) -> list[str]:
    """Relative Markdown link targets (other docs pages), without their #anchor."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")]


def test_the_path_filter_takes_paths_and_leaves_code() -> None:
    text = (
        "`scoring/router/main.py` `Makefile` `tests/support/` "
        "`/metrics` `init()` `a b/c` `RouterLimits` `Pulumi.<stack>.yaml`"
    )
    assert _backticked_paths(text) == ["scoring/router/main.py", "Makefile", "tests/support/"]


def test_every_path_named_exists() -> None:
    text = DOC.read_text()
    paths = _backticked_paths(text)
    assert len(paths) > 60, f"expected the page to name its owners, found only {paths}"
    missing = sorted({p for p in paths if not (REPO / p).exists()})
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_linked_page_exists() -> None:
    pages = _linked_pages(DOC.read_text())
    assert pages, "the page links the reference pages"
    missing = sorted({p for p in pages if not (DOC.parent / p).exists()})
    assert not missing, f"docs/architecture.md links pages that do not exist: {missing}"
