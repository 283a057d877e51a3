"""Stand-in for ``azureml.contrib.services.aml_request``: ``@rawhttp`` and ``AMLRequest``.

As in Microsoft's module, applying ``@rawhttp`` anywhere sets ``_rawHttpRequested``; the
server then calls ``run(request)`` with the whole request (``scoring.server.raw_request``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from scoring.server.raw_request import AMLRequest

__all__ = ["AMLRequest", "rawhttp"]

_rawHttpRequested = False
F = TypeVar("F", bound=Callable[..., object])


def rawhttp(func: F) -> F:
    """Mark ``run()`` as taking the raw request rather than the body as a string."""
    global _rawHttpRequested
    _rawHttpRequested = True
    return func
