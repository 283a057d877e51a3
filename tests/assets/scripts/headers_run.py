"""run() with the optional ``request_headers`` parameter (azmlinfsrv's contract)."""

import json


def init():
    pass


def run(raw_data, request_headers):
    if raw_data == '"a set"':
        return {1, 2}  # not JSON: the server must say so
    return {
        "raw": json.loads(raw_data),
        "custom": request_headers.get("X-Custom-Header"),
        "content_type": request_headers.get("content-type"),
    }
