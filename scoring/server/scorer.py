"""The seam between the ASGI app and what scores: the ``Scorer`` interface.

A scorer is an entry script (``script.ScriptScorer``) or an MLflow model folder
(``mlflow_model.MlflowScorer``). The app knows only this interface: ``init()`` once, then
``call(raw, headers)`` per request (picked once so the request path does no inspection;
``call_request(request)`` for ``@rawhttp`` scripts), ``call_batch`` when it can score many
requests in one call (``batcher``),
``classify`` for what ``call`` raised, and ``swagger`` for ``/swagger.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from scoring.server.raw_request import Headers, title_headers

if TYPE_CHECKING:
    from scoring.server.config import Settings
    from scoring.server.errors import ScoringError
    from scoring.server.raw_request import AMLRequest


#: Request headers for ``run(..., request_headers=)``: Flask's title-cased names
#: (``Test-Header``), as Microsoft's server passes them; lookups ignore case.
ScriptHeaders = Headers
headers_from = title_headers
"""The ASGI header list as a script sees it."""


#: One request: the body as text and the headers (None unless the scorer wants them).
Score = Callable[[str, ScriptHeaders | None], Any]


class Failed:
    """One request's error among a batch's outcomes (the others still succeed)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


BATCHED = "__ml_endpoints_batched__"


def batched(run: Callable[[list[str]], list[Any]]) -> Callable[[list[str]], list[Any]]:
    """Decorate a script's ``run`` that takes a list of request bodies and returns one result
    per body (as ``run_batch``): the server then calls it with batches of requests, and with
    a list of one for a request alone."""
    setattr(run, BATCHED, True)
    return run


#: Many requests in one call: their bodies and headers; one outcome per request, in order
#: (an outcome that is a ``batcher.Failed`` is that request's own error).
BatchScore = Callable[[Sequence[str], Sequence[ScriptHeaders | None]], list[Any]]


def split_rows(out: Any, sizes: Sequence[int]) -> list[Any] | None:
    """A batch call's answer cut back into consecutive parts of ``sizes`` rows (each part of
    the type the input alone gets: a list, an array, a frame), or None when the answer has not
    one row per input row (a dict, a scalar, another length)."""
    pd, np = sys.modules.get("pandas"), sys.modules.get("numpy")
    if pd is not None and isinstance(out, pd.DataFrame | pd.Series):
        rows = out.iloc
    elif isinstance(out, list | tuple) or (
        np is not None and isinstance(out, np.ndarray) and out.ndim > 0
    ):
        rows = out
    else:
        return None
    if len(out) != sum(sizes):
        return None
    parts, at = [], 0
    for n in sizes:
        parts.append(rows[at : at + n])
        at += n
    return parts


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
    def any_content_type(self) -> bool:
        """Whether any Content-Type passes (a plain ``run(raw)`` script); else JSON/text only."""
        ...

    @property
    def raw_http(self) -> bool:
        """Whether ``run()`` takes the whole request (``@rawhttp``): ``call_request`` then."""
        ...

    def call_request(self, request: AMLRequest) -> Any:
        """Score one ``@rawhttp`` request (only when ``raw_http``)."""
        ...

    @property
    def call(self) -> Score:
        """Score one request; returns what ``run()``/``predict()`` returned."""
        ...

    @property
    def call_batch(self) -> BatchScore | None:
        """Score several requests in one call (set by ``init()``), or None: never batched."""
        ...

    def init(self) -> None:
        """Load the script or model. Raises ``script.InitFailed``."""
        ...

    def classify(self, exc: BaseException) -> ScoringError:
        """The error the caller sees for what ``call`` raised."""
        ...

    def swagger(self, version: str = "2") -> dict[str, Any]:
        """The ``/swagger.json`` document in ``version`` (``swagger.VERSIONS``' values)."""
        ...


def make_scorer(settings: Settings) -> Scorer:
    """A ScriptScorer for an entry script, else an MlflowScorer for the model folder."""
    if settings.entry_script is not None:
        from scoring.server.script import ScriptScorer

        return ScriptScorer(settings.entry_script, settings.model_dir)
    from scoring.server.mlflow_model import MlflowScorer

    assert settings.model_dir is not None  # checked by config
    return MlflowScorer(settings.model_dir)
