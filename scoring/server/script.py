"""Load an Azure ML style entry script and call its ``init()`` and ``run()``.

Scripts run unchanged: ``run(raw_data)`` gets the body as a ``str``; a ``request_headers``
parameter, when declared, gets the request headers; ``@input_schema``/``@output_schema``
from ``inference-schema`` make the server parse the JSON body into ``run(**args)`` and
describe it in ``/swagger.json`` (and, for a ``run`` that scores rows one by one, batch it:
``schema_batch``); ``@rawhttp`` makes it take the whole request
(``raw_request.AMLRequest``). When ``azureml-core``/``azureml-ai-monitoring`` are not
installed, small stand-ins (``scoring/_compat``) provide ``Model.get_model_path``,
``Collector``, ``AMLRequest``/``rawhttp`` and ``AMLResponse``. As Microsoft's server, a
schema script's body may carry keys ``run()`` does not take: they are ignored.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoring.server.errors import BadInput, ScoringError, ScriptFailed
from scoring.server.scorer import BATCHED, BatchScore, Score, ScriptHeaders

if TYPE_CHECKING:
    from scoring.server.raw_request import AMLRequest

COMPAT_DIR = Path(__file__).parent.parent / "_compat"


class InitFailed(Exception):
    """Loading the script or its ``init()`` failed; the message says which file and why."""


def install_compat() -> bool:
    """Put the ``azureml.*`` stand-ins on ``sys.path`` (last) if the real ones are absent."""

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if str(COMPAT_DIR) in sys.path:
        return True
    if missing("azureml") or any(
        missing(m) for m in ("azureml.core", "azureml.ai", "azureml.contrib")
    ):
        sys.path.append(str(COMPAT_DIR))
        return True
    return False


def describe_folder(folder: Path | None, limit: int = 50) -> str:
    """``a.pkl (1234 B), sub/`` — the model folder, for init-failure messages."""
    if folder is None:
        return "(no model folder given)"
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        return f"(cannot list {str(folder)!r}: {exc})"
    if not entries:
        return "(empty)"
    parts = []
    for p in entries[:limit]:
        try:
            parts.append(f"{p.name}/" if p.is_dir() else f"{p.name} ({p.stat().st_size} B)")
        except OSError:
            parts.append(p.name)
    more = f", … {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(parts) + more


class ScriptScorer:
    """An entry script: ``init()`` once, then ``call(raw, headers)`` per request (a
    ``Scorer``)."""

    def __init__(self, path: Path, model_dir: Path | None) -> None:
        self.path = path.resolve()
        self.model_dir = model_dir
        self.module: types.ModuleType | None = None
        self.run: Callable[..., Any] | None = None
        self.wants_headers = False
        self.schema_args: tuple[str, ...] = ()
        self.required_args: tuple[str, ...] = ()
        self.accepts_kwargs = False
        self.raw_http = False
        # A plain run(raw) script reads any body as text, as on Microsoft's server.
        self.any_content_type = True
        self.call: Score = self._not_ready
        self.call_batch: BatchScore | None = None

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def code_dir(self) -> Path:
        """The folder of the script: where a user's ``swagger2.json``/``swagger3.json`` lives."""
        return self.path.parent

    def call_request(self, request: AMLRequest) -> Any:
        """``@rawhttp``: ``run(request)`` (with ``request_headers`` when declared)."""
        assert self.run is not None
        if self.wants_headers:
            return self.run(request, request_headers=request.headers)
        return self.run(request)

    def _not_ready(self, raw: str, headers: ScriptHeaders | None) -> Any:
        raise ScoringError("init() has not finished in this worker", 503)

    def init(self) -> None:
        """Import the script and call its ``init()``.

        Raises:
            InitFailed: naming the script, the exception, and listing the model folder.
        """
        if self.model_dir is not None:
            os.environ["AZUREML_MODEL_DIR"] = str(self.model_dir.resolve())
        install_compat()
        folder = str(self.path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        step = "importing"
        try:
            spec = importlib.util.spec_from_file_location(self.path.stem, self.path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {self.path} as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(self.path.stem, module)
            spec.loader.exec_module(module)
            run = getattr(module, "run", None)
            if not callable(run):
                raise AttributeError("the script defines no run() function")
            init = getattr(module, "init", None)
            if init is not None:
                step = "init() of"
                init()
        except (Exception, SystemExit) as exc:
            raise InitFailed(
                f"{step} {self.path} failed: {type(exc).__name__}: {exc}; "
                f"model folder {str(self.model_dir)!r} holds: {describe_folder(self.model_dir)}"
            ) from exc
        self.module = module
        self.run = run
        self._bind(run)

    def _bind(self, run: Callable[..., Any]) -> None:
        """Pick the calling convention once, so the request path does no inspection."""
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(run).parameters
        except (TypeError, ValueError):
            params = {}
        self.wants_headers = "request_headers" in params
        self.accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        raw_module = sys.modules.get("azureml.contrib.services.aml_request")
        self.raw_http = bool(getattr(raw_module, "_rawHttpRequested", False))
        schema = None if self.raw_http else _input_schema(run)
        if schema is not None:
            self.schema_args = tuple(schema.get("properties") or {})
            self.required_args = tuple(
                n for n, p in params.items() if n in self.schema_args and p.default is p.empty
            )
            self.call = self._call_schema
            self.any_content_type = False
        elif getattr(run, BATCHED, False):  # @batched: run takes a list of bodies
            self.call = lambda raw, headers: _one(run([raw]), "run()")
            self.call_batch = lambda raws, headers: run(list(raws))
            return
        elif self.wants_headers:
            self.call = lambda raw, headers: run(raw, request_headers=headers)
        else:
            self.call = lambda raw, headers: run(raw)
        run_batch = getattr(self.module, "run_batch", None)
        if callable(run_batch) and not self.raw_http:
            self.call_batch = _batch_call(run_batch)
        elif self.schema_args:  # batched unasked when it provably scores rows one by one
            from scoring.server.schema_batch import schema_batch

            self.call_batch = schema_batch(run, self.module)

    def _call_schema(self, raw: str, headers: ScriptHeaders | None) -> Any:
        """inference-schema: the body is a JSON object of ``run()``'s arguments."""
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise BadInput(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise BadInput(
                f"request body must be a JSON object with keys {list(self.schema_args)} "
                f"(run()'s inputs); got {type(payload).__name__}"
            )
        missing = [n for n in self.required_args if n not in payload]
        if missing:
            raise BadInput(
                f"request body is missing {missing[0]!r}; run() takes {list(self.schema_args)}"
            )
        if not self.accepts_kwargs:  # other keys are ignored, as Microsoft's server does
            payload = {k: v for k, v in payload.items() if k in self.schema_args}
        if self.wants_headers:
            payload["request_headers"] = headers
        return self.run(**payload)  # type: ignore[misc]

    def classify(self, exc: BaseException) -> ScoringError:
        """Map an exception from ``run()`` to the error the caller sees."""
        if isinstance(exc, ScoringError):
            return exc
        if isinstance(exc, json.JSONDecodeError):
            return BadInput(f"request body is not valid JSON: {exc}")
        if self.schema_args and _raised_by_schema(exc, self.run):
            return BadInput(
                f"request body does not match run()'s input schema: {type(exc).__name__}: {exc}"
            )
        return ScriptFailed(exc)

    def swagger(self, version: str = "2") -> dict[str, Any]:
        from scoring.server.swagger import document, user_document

        own = user_document(self.code_dir, version)
        if own is not None:
            return own
        inputs = outputs = None
        if self.schema_args:
            from inference_schema.schema_util import get_input_schema, get_output_schema

            inputs = dict(get_input_schema(self.run))
            inputs.setdefault("required", list(self.required_args))
            outputs = get_output_schema(self.run) or None
        return document(
            title=self.path.stem, input_schema=inputs, output_schema=outputs, version=version
        )


def _batch_call(run_batch: Callable[..., Any]) -> BatchScore:
    """The script's ``run_batch(raw_data_list)`` (``request_headers_list`` when declared)."""
    try:
        wants_headers = "request_headers_list" in inspect.signature(run_batch).parameters
    except (TypeError, ValueError):
        wants_headers = False
    if wants_headers:
        return lambda raws, headers: run_batch(list(raws), request_headers_list=list(headers))
    return lambda raws, headers: run_batch(list(raws))


def _one(results: Any, name: str) -> Any:
    """The only result of a batch call over one input."""
    if not isinstance(results, list | tuple) or len(results) != 1:
        size = len(results) if isinstance(results, list | tuple) else type(results).__name__
        raise ScoringError(f"{name} returned {size} results for 1 input; return a list", 500)
    return results[0]


def _input_schema(run: Callable[..., Any]) -> Mapping[str, Any] | None:
    """inference-schema's input description of ``run`` (an object schema whose properties are
    run()'s arguments), or None if undecorated or not installed."""
    if "inference_schema" not in sys.modules:
        return None  # the script did not import it, so run() cannot be decorated
    try:
        from inference_schema.schema_util import get_input_schema, is_schema_decorated
    except ImportError:
        return None
    if not is_schema_decorated(run):
        return None
    schema = get_input_schema(run)
    return schema if schema else None


def _raised_by_schema(exc: BaseException, run: Any) -> bool:
    """True when ``exc`` came from inference-schema's parsing, before the script's own code."""
    user = run
    while hasattr(user, "__wrapped__"):
        user = user.__wrapped__
    user_code = getattr(user, "__code__", None)
    tb = exc.__traceback__
    saw_schema = False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is user_code:
            return False
        if "inference_schema" in code.co_filename:
            saw_schema = True
        tb = tb.tb_next
    return saw_schema
