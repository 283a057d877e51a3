"""The seam between the ASGI app and what scores: the ``Scorer`` interface.

A scorer is an entry script (``script.ScriptScorer``) or an MLflow model folder
(``mlflow_model.MlflowScorer``). The app knows only this interface: ``init()`` once, then
``call(raw, headers)`` per request (picked once so the request path does no inspection),
``classify`` for what ``call`` raised, and ``swagger`` for ``/swagger.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scoring.server.config import Settings
    from scoring.server.errors import ScoringError


class ScriptHeaders(dict[str, str]):
    """Request headers for ``run(..., request_headers=)``: lookups ignore case."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


def headers_from(raw: list[tuple[bytes, bytes]]) -> ScriptHeaders:
    """The ASGI header list as a script sees it."""
    return ScriptHeaders((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)


#: One request: the body as text and the headers (None unless the scorer wants them).
Score = Callable[[str, ScriptHeaders | None], Any]


class Scorer(Protocol):
    """What the app calls; ``init()`` runs before the worker takes traffic."""

    @property
    def source(self) -> str:
        """The script or model file, for log lines."""
        ...

    @property
    def wants_headers(self) -> bool:
        """Whether ``call`` takes the request headers (else it gets None)."""
        ...

    @property
    def call(self) -> Score:
        """Score one request; returns what ``run()``/``predict()`` returned."""
        ...

    def init(self) -> None:
        """Load the script or model. Raises ``script.InitFailed``."""
        ...

    def classify(self, exc: BaseException) -> ScoringError:
        """The error the caller sees for what ``call`` raised."""
        ...

    def swagger(self) -> dict[str, Any]:
        """The ``/swagger.json`` document."""
        ...


def make_scorer(settings: Settings) -> Scorer:
    """A ScriptScorer for an entry script, else an MlflowScorer for the model folder."""
    if settings.entry_script is not None:
        from scoring.server.script import ScriptScorer

        return ScriptScorer(settings.entry_script, settings.model_dir)
    from scoring.server.mlflow_model import MlflowScorer

    assert settings.model_dir is not None  # checked by config
    return MlflowScorer(settings.model_dir)
