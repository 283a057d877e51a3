"""Stand-in for ``azureml.contrib.services.aml_response``: a script chooses status and body.

Microsoft's constructor and content-type rules: ``json_str=True`` sends ``json.dumps(message)``
as ``application/json``; ``None`` sends ``{}`` as ``application/json``; a ``str`` or ``bytes``
goes out as it is, labelled ``text/html; charset=utf-8`` unless ``response_headers`` names a
Content-Type. A header value with commas becomes one header per item, and
``x-ms-run-function-failed`` carries ``run_function_failed``. (Microsoft's, built on Flask,
cannot send other values without ``json_str``; this one sends them as JSON.)
"""

from __future__ import annotations

import json
from typing import Any

_HTML = "text/html; charset=utf-8"


class AMLResponse:
    """``return AMLResponse("bad input: ...", 400)`` from ``run()`` sets the HTTP response."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: dict[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        self.status_code = int(status_code)
        given = dict(response_headers or {})
        if message is None:
            body, ctype = b"{}", "application/json"
        elif json_str or not isinstance(message, str | bytes):
            body, ctype = json.dumps(message).encode(), "application/json"
        else:
            body = message.encode() if isinstance(message, str) else bytes(message)
            ctype = next((v for k, v in given.items() if k.lower() == "content-type"), _HTML)
        self.body = body
        self.content_type = ctype
        self.header_list: list[tuple[str, str]] = [
            ("x-ms-run-function-failed", str(bool(run_function_failed)))
        ]
        for name, value in given.items():
            if name.lower() == "content-type":
                continue
            self.header_list += [(name, v.strip()) for v in str(value).split(",")]

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (repeated names joined with ``, ``), Content-Type included."""
        out: dict[str, str] = {"Content-Type": self.content_type}
        for name, value in self.header_list:
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def get_data(self) -> bytes:
        return self.body
