"""Where ml-endpoints answers differently from Microsoft's ``azmlinfsrv``, on purpose.

The one source of the list: ``test_azure_compat.py`` asserts each row exactly (both sides'
status and the row's ``check``) on the requests that name it, and fails on any other
difference; docs/azure-compatibility.md carries ``markdown()`` of this table (a test checks
it is current). A row is added here, with its reason, or the behaviour is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

Check = Callable[[httpx.Response, httpx.Response], None]


def _none(ms: httpx.Response, ours: httpx.Response) -> None:
    """Only the statuses differ (asserted from the row)."""


def _same_structure(ms: httpx.Response, ours: httpx.Response) -> None:
    """Same document version and schemas; the descriptive text is ours."""
    a, b = ms.json(), ours.json()
    assert ("swagger" in a, a.get("openapi", "")[:1]) == ("swagger" in b, b.get("openapi", "")[:1])
    defs = "definitions" if "swagger" in a else "components"
    pick = (
        (lambda d: d["definitions"])
        if defs == "definitions"
        else (lambda d: d["components"]["schemas"])
    )
    ours_input = dict(pick(b)["ServiceInput"])
    required = ours_input.pop("required", [])
    assert set(required) <= set(ours_input.get("properties", {})), required
    assert pick(a)["ServiceInput"] == ours_input
    assert pick(a)["ServiceOutput"] == pick(b)["ServiceOutput"]
    assert set(a["paths"]) >= {"/", "/score"} and set(b["paths"]) >= {"/", "/score"}


def _form_body(ms: httpx.Response, ours: httpx.Response) -> None:
    assert ms.json()["length"] == 0
    assert ours.json()["length"] > 0


def _fresh_id(ms: httpx.Response, ours: httpx.Response) -> None:
    """Microsoft echoes the id as sent; ours mints a 32-hex-digit one."""
    assert ms.status_code == 200 or ms.status_code == 431
    rid = ours.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    if ms.status_code == 200:
        assert ms.content == ours.content


def _header_lookup(ms: httpx.Response, ours: httpx.Response) -> None:
    """Microsoft's plain dict misses a lower-case name; ours finds the header."""
    assert ms.json() == {"test-header": None}
    assert ours.json() == {"test-header": "v"}


def _options_rawhttp(ms: httpx.Response, ours: httpx.Response) -> None:
    """Microsoft runs run(request) for OPTIONS too (this script answers 400); ours answers
    the preflight itself, empty."""
    assert ours.content == b""


@dataclass(frozen=True)
class Difference:
    """One deliberate difference: what each server does and why ours does it this way."""

    id: str
    topic: str
    microsoft: str
    ours: str
    why: str
    microsoft_status: int | None = None  # None: same status on both sides
    ours_status: int | None = None
    check: Check = _none


ERROR_BODY = Difference(
    "error-body",
    "Error bodies",
    '`{"message": "..."}`',
    '`{"error": "...", "message": "...", "request_id": "..."}`: `message` (read by Azure '
    "clients) and `error` carry the same text, which names the problem and the bad value",
    "the request id ties the answer to the log line; messages say what to change",
)

CORS_WITHOUT_ORIGIN = Difference(
    "cors-no-origin",
    "CORS headers on a request without `Origin` (`AML_CORS_ORIGINS` set)",
    "`Access-Control-Allow-Origin` with the first listed origin (flask-cors' `always_send`)",
    "none: CORS headers only answer an allowed `Origin`",
    "browsers always send `Origin`; other clients ignore CORS headers",
)

DIFFERENCES: tuple[Difference, ...] = (
    ERROR_BODY,
    CORS_WITHOUT_ORIGIN,
    Difference(
        "json-error-in-run",
        "Plain `run(raw_data)` whose `json.loads` fails (malformed or empty body)",
        "500, `An unexpected error occurred in scoring script`",
        "400, `request body is not valid JSON: ...` with the parser's position",
        "the caller sent a bad body: a 4xx tells clients not to retry and alerts not to fire",
        500,
        400,
    ),
    Difference(
        "form-body-plain",
        "Plain `run(raw_data)` sent a form-encoded body (`curl -d`'s default)",
        '`raw_data` is `""` (Flask consumed the body as a form)',
        "`raw_data` is the body",
        "the script gets what was sent",
        None,
        None,
        _form_body,
    ),
    Difference(
        "schema-conversion",
        "inference-schema cannot convert a value to the declared type",
        "500",
        "400, `request body does not match run()'s input schema: ...`",
        "the input is wrong, not the script",
        500,
        400,
    ),
    Difference(
        "schema-content-type",
        "Schema script sent `text/plain` or no Content-Type",
        "415, `Expects Content-Type to be application/json`",
        "200: the body is parsed as JSON (`curl -d` sends form-encoded; a missing header is "
        "common in scripts)",
        "accepting a JSON body whatever its label breaks no client; other media types "
        "(e.g. `application/octet-stream`) still get 415",
        415,
        200,
    ),
    Difference(
        "request-id-quote",
        '`x-request-id` containing `"` or `\\\\` (or control characters)',
        "echoed",
        "a new 32-hex-digit id is used and echoed",
        "ids go into JSON log lines unescaped; every other printable character is echoed",
        None,
        None,
        _fresh_id,
    ),
    Difference(
        "request-id-too-long",
        "`x-request-id` over 100 characters",
        "431",
        "200, with a new 32-hex-digit id",
        "a tracing header is no reason to fail a scoring request",
        431,
        200,
        _fresh_id,
    ),
    Difference(
        "request-headers-lookup",
        "`request_headers.get('test-header')` (name in another case)",
        "`None`: a plain dict under title-cased names (`Test-Header`)",
        "the header: same title-cased names, lookups ignore case",
        "HTTP header names are case-insensitive; iterating gives Microsoft's names",
        None,
        None,
        _header_lookup,
    ),
    Difference(
        "swagger-text",
        "`/swagger.json` generated for a script",
        "Microsoft's template (title `ML service`, its descriptions)",
        "same version, paths and `ServiceInput`/`ServiceOutput` schemas, plus `required` "
        "naming `run()`'s arguments without a default; title is the script's name, "
        "descriptions ours, `ErrorResponse` lists `error` and `request_id` too",
        "the schemas are what clients generate code from; `required` tells them which "
        "keys they must send",
        None,
        None,
        _same_structure,
    ),
    Difference(
        "rawhttp-options",
        "`OPTIONS /score` to a `@rawhttp` script",
        "calls `run(request)` with the OPTIONS request",
        "200, empty (with CORS headers when the origin is allowed)",
        "a browser preflight must not reach scoring code",
        400,
        200,
        _options_rawhttp,
    ),
)
BY_ID = {d.id: d for d in DIFFERENCES}

#: Behaviours outside the differential requests (no peer run), listed for the doc only.
NOT_DIFFERENTIAL: tuple[tuple[str, str, str, str], ...] = (
    (
        "`run()` over its time limit",
        "500, `Scoring timeout after N ms` (`SCORING_TIMEOUT_MS`, default 1 hour)",
        "504 after `request_timeout_ms` (default 5000, Azure's `request_settings` default; "
        "`SCORING_TIMEOUT_MS` is read too)",
        "a gateway timeout is what clients and proxies expect",
    ),
    (
        "MLflow no-code models",
        "Azure's MLflow scoring script in the MLflow image (not part of `azmlinfsrv`)",
        "the same input shapes (`input_data` split/rows/records/columns, `params`), values "
        "widened to the signature's types (int → double, ISO string → datetime); also "
        "MLflow's `dataframe_split`/`dataframe_records`/`instances`/`inputs`",
        "Microsoft's script is not on PyPI, so the compat tier checks ours against "
        "`predict()` called directly",
    ),
)


def markdown() -> str:
    """The doc's table of differences (docs/azure-compatibility.md carries it verbatim)."""
    lines = [
        "| what | Microsoft's `azmlinfsrv` | ml-endpoints | why |",
        "|---|---|---|---|",
    ]
    for d in DIFFERENCES:
        lines.append(f"| {d.topic} | {d.microsoft} | {d.ours} | {d.why} |")
    for topic, ms, ours, why in NOT_DIFFERENTIAL:
        lines.append(f"| {topic} | {ms} | {ours} | {why} |")
    return "\n".join(lines)
