"""Stand-in for ``azureml.contrib.services.aml_response``: a script chooses status and body."""

from __future__ import annotations

import json
from typing import Any


class AMLResponse:
    """``return AMLResponse("bad input: ...", 400)`` from ``run()`` sets the HTTP response."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: dict | None = None,
        json_str: bool = False,
    ) -> None:
        self.status_code = int(status_code)
        self.headers = dict(response_headers or {})
        if json_str or not isinstance(message, str | bytes):
            message = json.dumps(message)
        self.body = message.encode() if isinstance(message, str) else message

    def get_data(self) -> bytes:
        return self.body
