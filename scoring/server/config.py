"""Every setting of the inference server, read once at start-up (CLI > environment > default).

Kept apart from the server's lifecycle (uvicorn's ``Config``/``Server`` split): ``load()``
returns a frozen ``Settings``; nothing on the request path reads the environment again.
Both spellings of Microsoft's ``azmlinfsrv`` options (``--entry_script``, ``--model_dir``)
are accepted next to ours (``--entry-script``, ``--model-dir``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a bad value; the message names the option, the env var and the value."""


@dataclass(frozen=True)
class Settings:
    """The inference server's configuration. Attribute docs say what each one is for."""

    entry_script: Path | None = None
    """Scoring script with ``init()`` and ``run()``; none = the model folder is an MLflow model."""
    model_dir: Path | None = None
    """Folder holding the model; exported to the script as ``AZUREML_MODEL_DIR``."""
    host: str = "0.0.0.0"
    port: int = 5001
    workers: int = 1
    """Worker processes, each with its own copy of the model (``run()`` holds the GIL)."""
    request_timeout_ms: int = 5000
    """A ``run()`` longer than this answers 504 (0 = no limit). Azure's default is 5000."""
    max_concurrent_requests_per_instance: int = 0
    """Requests run at once per instance (split across workers); 0 = no queue limit."""
    max_queue_wait_ms: int = 500
    """With a concurrency limit, how long a request may wait for a slot before 429."""
    max_request_body_bytes: int = 100 * MiB
    """Bodies over this answer 413 without being read."""
    collect: bool = False
    """Collect every sampled request's input and output (``model_inputs``/``model_outputs``)."""
    collect_dir: Path = Path("data-collection")
    """Where collected JSONL files go (``<collection>/YYYY/MM/DD/HH/*.jsonl``)."""
    collect_sampling_rate: float = 1.0
    """Share of requests collected, 0..1 (also applies to a script's ``Collector``)."""
    collect_max_file_bytes: int = 10 * MiB
    """A JSONL file rolls over to a new one past this size (and every hour)."""
    access_log: bool = True
    """One JSON line per request on stdout."""
    log_level: str = "info"
    graceful_timeout_s: float = 30.0
    """On SIGTERM, how long in-flight requests may take before they are cut."""
    execution: str = "auto"
    """``inline`` (run() on the event loop; timeouts by SIGALRM), ``thread`` (run() in a
    thread; needed for queue limits), or ``auto`` (thread only when a queue limit is set)."""
    metrics_dir: Path | None = None
    """Where workers share their Prometheus counters (set by the supervisor)."""

    @property
    def run_in_thread(self) -> bool:
        if self.execution == "auto":
            return self.max_concurrent_requests_per_instance > 0
        return self.execution == "thread"

    @property
    def slots_per_worker(self) -> int:
        """This worker's share of ``max_concurrent_requests_per_instance`` (at least 1)."""
        total = self.max_concurrent_requests_per_instance
        return max(1, -(-total // self.workers)) if total > 0 else 0


def _bool(value: str) -> bool:
    low = value.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _int_min(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise ValueError(f"must be >= {minimum}")
        return number

    return parse


def _rate(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be between 0 and 1")
    return number


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


# setting -> (CLI flags, environment variables in priority order, parser)
OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[[str], Any]]] = {
    "entry_script": (("--entry-script", "--entry_script"), ("AZUREML_ENTRY_SCRIPT",), Path),
    "model_dir": (("--model-dir", "--model_dir"), ("AZUREML_MODEL_DIR",), Path),
    "host": (("--host",), ("ML_ENDPOINTS_HOST",), str),
    "port": (("--port", "-p"), ("ML_ENDPOINTS_PORT", "AZUREML_SERVER_PORT"), _int_min(0)),
    "workers": (("--workers", "-w", "--worker_count"), ("WORKER_COUNT",), _int_min(1)),
    "request_timeout_ms": (
        ("--request-timeout-ms",),
        ("REQUEST_TIMEOUT_MS", "SCORING_TIMEOUT_MS"),
        _int_min(0),
    ),
    "max_concurrent_requests_per_instance": (
        ("--max-concurrent-requests-per-instance",),
        ("MAX_CONCURRENT_REQUESTS_PER_INSTANCE",),
        _int_min(0),
    ),
    "max_queue_wait_ms": (("--max-queue-wait-ms",), ("MAX_QUEUE_WAIT_MS",), _int_min(0)),
    "max_request_body_bytes": (
        ("--max-request-body-bytes",),
        ("MAX_REQUEST_BODY_BYTES",),
        _int_min(1),
    ),
    "collect": (("--collect",), ("DATA_COLLECTION_ENABLED",), _bool),
    "collect_dir": (("--collect-dir",), ("DATA_COLLECTION_DIR",), Path),
    "collect_sampling_rate": (
        ("--collect-sampling-rate",),
        ("DATA_COLLECTION_SAMPLING_RATE",),
        _rate,
    ),
    "collect_max_file_bytes": (
        ("--collect-max-file-bytes",),
        ("DATA_COLLECTION_MAX_FILE_BYTES",),
        _int_min(1),
    ),
    "access_log": (("--access-log",), ("ACCESS_LOG",), _bool),
    "log_level": (("--log-level",), ("LOG_LEVEL",), _choice("debug", "info", "warning", "error")),
    "graceful_timeout_s": (("--graceful-timeout-s",), ("GRACEFUL_SHUTDOWN_TIMEOUT_S",), float),
    "execution": (
        ("--execution",),
        ("ML_ENDPOINTS_EXECUTION",),
        _choice("auto", "inline", "thread"),
    ),
    "metrics_dir": (("--metrics-dir",), ("ML_ENDPOINTS_METRICS_DIR",), Path),
}


def parser() -> argparse.ArgumentParser:
    """The ``python -m scoring serve`` argument parser (values parsed later, to name errors)."""
    p = argparse.ArgumentParser(
        prog="python -m scoring serve",
        description="Serve an Azure ML style scoring script (init()/run()) or an MLflow model.",
    )
    for name, (flags, envs, _) in OPTIONS.items():
        doc = _DOCS.get(name, "")
        p.add_argument(
            *flags,
            dest=name,
            metavar="V" if name != "collect" else "BOOL",
            help=f"{doc} [env {', '.join(envs)}; default {_default(name)}]",
        )
    return p


def _default(name: str) -> Any:
    return next(f.default for f in fields(Settings) if f.name == name)


_DOCS = {
    "entry_script": "scoring script with init() and run(raw_data)",
    "model_dir": "model folder (an MLmodel file here and no script = MLflow no-code)",
    "host": "address to bind (tests: 127.0.0.1)",
    "port": "TCP port",
    "workers": "worker processes",
    "request_timeout_ms": "504 past this many ms in run() (0 = off)",
    "max_concurrent_requests_per_instance": "concurrent run() calls per instance (0 = no limit)",
    "max_queue_wait_ms": "429 after waiting this long for a slot",
    "max_request_body_bytes": "413 over this many bytes",
    "collect": "collect model_inputs/model_outputs of sampled requests",
    "collect_dir": "folder for collected JSONL files",
    "collect_sampling_rate": "share of requests collected (0..1)",
    "collect_max_file_bytes": "roll JSONL files past this size",
    "access_log": "one JSON log line per request",
    "log_level": "debug|info|warning|error",
    "graceful_timeout_s": "drain time on SIGTERM",
    "execution": "auto|inline|thread (where run() executes)",
    "metrics_dir": "shared folder for per-worker metrics (internal)",
}


def load(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``argv`` and ``environ`` into ``Settings``.

    Raises:
        SettingsError: naming the flag or env var and the bad value.
    """
    env = os.environ if environ is None else environ
    args = parser().parse_args(list(argv))
    values: dict[str, Any] = {}
    for name, (flags, envs, parse) in OPTIONS.items():
        raw, source = getattr(args, name), flags[0]
        if raw is None:
            for var in envs:
                if env.get(var, "") != "":
                    raw, source = env[var], var
                    break
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {raw!r} is not valid ({exc})") from exc
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.entry_script is not None and not s.entry_script.is_file():
        raise SettingsError(f"--entry-script: {str(s.entry_script)!r} is not a file")
    if s.model_dir is not None and not s.model_dir.is_dir():
        raise SettingsError(f"--model-dir: {str(s.model_dir)!r} is not a folder")
    if s.entry_script is None and s.model_dir is None:
        raise SettingsError(
            "--entry-script: not given (nor AZUREML_ENTRY_SCRIPT); pass a scoring script, or "
            "--model-dir pointing at an MLflow model folder (with an MLmodel file)"
        )
    if s.execution == "inline" and s.max_concurrent_requests_per_instance > 0:
        raise SettingsError(
            "--execution: 'inline' cannot queue requests; drop "
            "--max-concurrent-requests-per-instance or use --execution thread"
        )
