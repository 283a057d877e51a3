"""run() with the optional ``request_headers`` parameter (azmlinfsrv's contract)."""

import json


def init():
    pass


def run(raw_data, request_headers):
    return {"raw": json.loads(raw_data),
            "custom": request_headers.get("X-Custom-Header"),
            "content_type": request_headers.get("content-type")}
