"""numpy and pandas values as JSON values: what ``run()``, ``predict()`` and a script's
``Collector`` may hand over without converting them first."""

from __future__ import annotations

from typing import Any


def jsonable(value: Any) -> Any:
    """A DataFrame as records, an array as a list, a numpy scalar as a number; anything
    else is returned as it is (the same object)."""
    if type(value).__name__ == "DataFrame":
        return value.to_dict(orient="records")
    for attr in ("tolist", "item"):
        fn = getattr(value, attr, None)
        if fn is not None:
            return fn()
    return value
