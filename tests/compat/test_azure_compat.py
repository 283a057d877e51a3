"""Differential tier: the same Azure-style scripts under Microsoft's ``azmlinfsrv`` and ours.

Each script in tests/compat/scripts is started once under each server on loopback (module
fixtures) with ``AML_CORS_ORIGINS`` set, and every request in ``CASES`` goes to both. Both
must answer the same status, content type and body, and the same request-id, CORS and
``x-ms-run-function-failed`` headers, unless the case names a row of ``differences.py``:
then the row is asserted as documented. Errors must carry ``message`` on both sides (ours
as the ``error-body`` row says). The peer is installed from PyPI on first use (cached).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from mlendpoints._procs import Proc
from tests.compat.differences import (
    BY_ID,
    CORS_WITHOUT_ORIGIN,
    DIFFERENCES,
    ERROR_BODY,
    markdown,
)
from tests.support.azure_peer import serve_azmlinfsrv
from tests.support.serving import serve

pytestmark = pytest.mark.server

SCRIPTS = Path(__file__).parent / "scripts"
DOC = Path(__file__).resolve().parents[2] / "docs" / "azure-compatibility.md"
ORIGIN = "http://app.example"
ENV = {"AML_CORS_ORIGINS": f"{ORIGIN}, http://other.example"}
COMPARED_HEADERS = (
    "x-request-id",
    "x-ms-request-id",
    "x-ms-client-request-id",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "vary",
)


@dataclass
class Case:
    """One request sent to both servers; ``differs`` names a row of ``differences.py``."""

    id: str
    script: str
    method: str = "POST"
    path: str = "/score"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    differs: str | None = None
    also: tuple[str, ...] = ()  # more response headers that must match


def post(
    case_id: str, script: str, payload: object, differs: str | None = None, **kw: object
) -> Case:
    """A JSON POST (``Content-Type: application/json``)."""
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return Case(
        case_id, script, body=json.dumps(payload).encode(), headers=headers, differs=differs, **kw
    )  # type: ignore[arg-type]


def multipart() -> tuple[bytes, str]:
    boundary = "compatboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\ncat\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + bytes(range(256))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


FORM, FORM_TYPE = multipart()
ROWS = [[1, 2, 3], [4.5, 5, 6]]
CASES = [
    # plain run(raw_data, request_headers): valid, malformed, empty, wrong shape, GET, types
    post("valid", "plain", {"data": ROWS}, headers={"x-request-id": "plain-1"}),
    post("ints", "plain", {"data": [[1, 2, 3]]}),
    Case(
        "malformed",
        "plain",
        body=b'{"data": [[1,2',
        differs="json-error-in-run",
        headers={"Content-Type": "application/json"},
    ),
    Case(
        "empty",
        "plain",
        body=b"",
        differs="json-error-in-run",
        headers={"Content-Type": "application/json"},
    ),
    post("wrong-shape", "plain", {"data": [[1, 2]]}),
    Case("get-query", "plain", "GET", "/score?data=[[1,2,3]]"),
    Case("get-no-query", "plain", "GET", "/score"),
    Case(
        "octet-stream",
        "plain",
        body=json.dumps({"data": ROWS}).encode(),
        headers={"Content-Type": "application/octet-stream"},
    ),
    Case("no-content-type", "plain", body=json.dumps({"data": ROWS}).encode()),
    post(
        "odd-request-id",
        "plain",
        {"data": ROWS},
        headers={"x-request-id": "a b{c}/d+e=f", "x-ms-client-request-id": "client 1/2"},
    ),
    post(
        "legacy-ms-request-id",
        "plain",
        {"data": ROWS},
        headers={"x-request-id": "r-1", "x-ms-request-id": "legacy-1"},
    ),
    post(
        "quote-request-id",
        "plain",
        {"data": ROWS},
        "request-id-quote",
        headers={"x-request-id": 'has"quote'},
    ),
    post(
        "long-request-id",
        "plain",
        {"data": ROWS},
        "request-id-too-long",
        headers={"x-request-id": "x" * 101},
    ),
    post(
        "request-headers",
        "plain",
        {"headers": ["Test-Header", "Content-Type"]},
        headers={"Test-Header": "v"},
    ),
    post(
        "request-headers-case",
        "plain",
        {"headers": ["test-header"]},
        "request-headers-lookup",
        headers={"test-header": "v"},
    ),
    post("cors-simple", "plain", {"data": ROWS}, headers={"Origin": ORIGIN}),
    post("cors-other-origin", "plain", {"data": ROWS}, headers={"Origin": "http://evil.example"}),
    Case(
        "cors-preflight",
        "plain",
        "OPTIONS",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    ),
    Case("options", "plain", "OPTIONS"),
    Case("put", "plain", "PUT", body=b"{}"),
    Case("health", "plain", "GET", "/", headers={"x-request-id": "h1"}),
    Case("unknown-path", "plain", "GET", "/nope"),
    Case("swagger", "plain", "GET", "/swagger.json", differs="swagger-text"),
    Case("swagger-3", "plain", "GET", "/swagger.json?version=3", differs="swagger-text"),
    Case("swagger-bad-version", "plain", "GET", "/swagger.json?version=7"),
    # run(raw_data) that never parses: any media type reaches it
    Case("csv", "raw_text", body=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}),
    Case("xml", "raw_text", body=b"<a>1</a>", headers={"Content-Type": "application/xml"}),
    Case(
        "form-urlencoded",
        "raw_text",
        body=b"a=1&b=2",
        differs="form-body-plain",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case("not-utf8", "raw_text", body=b"\xff\xfe", headers={"Content-Type": "text/plain"}),
    Case(
        "huge",
        "raw_text",
        body=b"[" + b"1," * 2_500_000 + b"1]",
        headers={"Content-Type": "application/json"},
    ),
    # inference-schema: numpy, pandas and standard parameter types
    post("numpy", "schema_numpy", {"data": ROWS}),
    post("numpy-extra-key", "schema_numpy", {"data": ROWS, "extra": 1}),
    post("numpy-missing", "schema_numpy", {"other": 1}),
    post("numpy-not-object", "schema_numpy", [1, 2]),
    post("numpy-bad-value", "schema_numpy", {"data": "abc"}, "schema-conversion"),
    Case(
        "numpy-malformed", "schema_numpy", body=b"{", headers={"Content-Type": "application/json"}
    ),
    Case("numpy-empty", "schema_numpy", body=b"", headers={"Content-Type": "application/json"}),
    Case(
        "numpy-text-plain",
        "schema_numpy",
        body=json.dumps({"data": ROWS}).encode(),
        headers={"Content-Type": "text/plain"},
        differs="schema-content-type",
    ),
    Case(
        "numpy-octet-stream",
        "schema_numpy",
        body=b"{}",
        headers={"Content-Type": "application/octet-stream"},
    ),
    Case("numpy-get", "schema_numpy", "GET", "/score?data=[[1,2,3]]"),
    Case("numpy-swagger", "schema_numpy", "GET", "/swagger.json", differs="swagger-text"),
    post(
        "pandas",
        "schema_pandas",
        {
            "frame": [
                {"count": 2, "price": 1.5, "name": "x"},
                {"count": 1, "price": 3, "name": "y"},
            ],
            "options": {"scale": 2.0, "tag": "t"},
        },
    ),
    post(
        "pandas-no-options", "schema_pandas", {"frame": [{"count": 2, "price": 1.5, "name": "x"}]}
    ),
    Case(
        "pandas-swagger-3",
        "schema_pandas",
        "GET",
        "/swagger.json?version=3",
        differs="swagger-text",
    ),
    # @rawhttp: binary, form and JSON bodies, query arguments
    Case("raw-get", "rawhttp", "GET", "/score?a=1&a=2&b=x"),
    Case("raw-image", "rawhttp", body=bytes(range(256)) * 4, headers={"Content-Type": "image/png"}),
    Case("raw-multipart", "rawhttp", body=FORM, headers={"Content-Type": FORM_TYPE}),
    Case(
        "raw-form",
        "rawhttp",
        body=b"a=1&b=two",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "raw-json-query",
        "rawhttp",
        path="/score?q=1",
        body=b'{"k": [1]}',
        headers={"Content-Type": "application/json"},
    ),
    Case("raw-text", "rawhttp", body=b"words", headers={"Content-Type": "text/plain"}),
    Case("raw-options", "rawhttp", "OPTIONS", differs="rawhttp-options"),
    # the user's own swagger documents, served as they are
    Case("own-swagger", "own_swagger/score", "GET", "/swagger.json"),
    Case("own-swagger-3", "own_swagger/score", "GET", "/swagger.json?version=3"),
    Case(
        "own-swagger-3.1",
        "own_swagger/score",
        "GET",
        "/swagger.json?version=3.1",
        differs="swagger-text",
    ),
    # AMLResponse in every form
    *[
        post(f"response-{form}", "response", {"form": form})
        for form in (
            "json_str",
            "none",
            "text",
            "text_status",
            "content_type",
            "failed",
            "raise",
            "dict",
        )
    ],
    post("response-headers", "response", {"form": "headers"}, also=("x-one", "x-many")),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny linear model, trained here (3 features)."""
    out = tmp_path_factory.mktemp("compat-model")
    x = np.array([[1.0, 2, 3], [2, 1, 0], [0, 1, 1], [3, 3, 1]])
    joblib.dump(LinearRegression().fit(x, x @ [0.5, -1.0, 2.0] + 0.25), out / "model.pkl")
    return out


@pytest.fixture(scope="module")
def servers(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Every script under both servers: {script: (microsoft, ours)}."""
    names = sorted({c.script for c in CASES})
    with contextlib.ExitStack() as stack:
        found = {}
        for name in names:
            script = SCRIPTS / f"{name}.py"
            collect = tmp_path_factory.mktemp("collect")
            ms = stack.enter_context(serve_azmlinfsrv(script, model_dir, env=ENV))
            ours = stack.enter_context(
                serve(
                    script,
                    model_dir,
                    "--max-concurrent-requests-per-instance",
                    "0",
                    env={**ENV, "DATA_COLLECTION_DIR": str(collect)},
                )
            )
            found[name] = (ms, ours)
        yield found


def send(proc: Proc, case: Case) -> httpx.Response:
    return httpx.request(
        case.method, proc.url + case.path, content=case.body, headers=case.headers, timeout=60
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_answer(servers: dict, case: Case) -> None:
    ms_proc, ours_proc = servers[case.script]
    ms, ours = send(ms_proc, case), send(ours_proc, case)
    row = BY_ID.get(case.differs or "")
    where = (
        f"{case.id}: microsoft {ms.status_code} {ms.headers.get('content-type')} "
        f"{ms.text[:300]!r} / ours {ours.status_code} {ours.headers.get('content-type')} "
        f"{ours.text[:300]!r}"
    )
    if row is not None:
        assert ms.status_code == (row.microsoft_status or ms.status_code), where
        assert ours.status_code == (row.ours_status or ms.status_code), where
        row.check(ms, ours)
    else:
        assert ours.status_code == ms.status_code, where
        assert ours.headers.get("content-type") == ms.headers.get("content-type"), where
        if ms.status_code < 400:
            assert ours.content == ms.content, where
        else:
            assert_error_bodies(ms, ours)
    sent = {k.lower() for k in case.headers}
    sent_ids = sent & {"x-request-id", "x-ms-client-request-id", "x-ms-request-id"}
    if "origin" not in sent:  # the cors-no-origin row
        first = ENV["AML_CORS_ORIGINS"].split(",")[0]
        ms_origin = ms.headers.get("access-control-allow-origin")
        assert ms_origin in (first, None), CORS_WITHOUT_ORIGIN.microsoft  # None: Flask's own
        assert "access-control-allow-origin" not in ours.headers, CORS_WITHOUT_ORIGIN.ours
    for name in COMPARED_HEADERS + case.also:
        if (name.startswith("access-control-") or name == "vary") and "origin" not in sent:
            continue
        if name in ("x-request-id", "x-ms-request-id") and not sent_ids:
            continue  # both minted one
        if row is not None and row.check.__name__ == "_fresh_id":
            continue
        if case.method == "OPTIONS" and row is not None:
            continue
        assert ours.headers.get(name) == ms.headers.get(name), (name, where)
    if case.path.startswith("/score") and row is None and case.method != "OPTIONS":
        assert ours.headers.get("x-ms-run-function-failed") == ms.headers.get(
            "x-ms-run-function-failed"
        ), where


def assert_error_bodies(ms: httpx.Response, ours: httpx.Response) -> None:
    """The ``error-body`` row: Microsoft's ``{"message"}``, ours with the same field. An
    error the script chose (``AMLResponse``) must be the same bytes."""
    try:
        is_server_error = list(json.loads(ms.content)) == ["message"]
    except (ValueError, TypeError):
        is_server_error = False
    if not is_server_error:
        assert ours.content == ms.content
        return
    body = ours.json()
    assert set(body) == {"error", "message", "request_id"}, ERROR_BODY.ours
    assert body["error"] == body["message"] and body["message"]
    assert body["request_id"] == ours.headers["x-request-id"]


def test_every_documented_difference_is_exercised() -> None:
    used = {c.differs for c in CASES if c.differs} | {ERROR_BODY.id, CORS_WITHOUT_ORIGIN.id}
    assert {d.id for d in DIFFERENCES} == used


def test_doc_carries_the_table() -> None:
    assert markdown() in DOC.read_text(), "paste differences.markdown() into " + str(DOC)
