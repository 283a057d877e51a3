"""Every setting of the inference server, declared once, read once at start-up.

Each setting is one pydantic field: its default, its bounds (``ge``/``le``) and a one-line
docstring. Its environment variable is the field name in capitals and its flag the field name
with dashes, unless ``setting(env=..., flags=...)`` declares other spellings beside it (Azure
ML's and ``azmlinfsrv``'s names, kept for compatibility: ``--entry_script``, ``WORKER_COUNT``).

The settings a deployment chooses (``Workers``, ``RequestSettings``, ``DataCollection``,
bundled as ``DeploymentSettings``) are this file's fields and nobody else's: the stack config
(``infra/config.py``) and the components' ``OnlineDeploymentArgs`` use these models, and
``DeploymentSettings.to_env()`` renders the pod's environment that ``load()`` reads back.
``Settings`` is what the server runs with: those fields, flat, plus the server-only ones.

Kept apart from the server's lifecycle (uvicorn's ``Config``/``Server`` split): ``load()``
returns a frozen ``Settings`` (CLI > environment > default); nothing on the request path reads
the environment again.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.fields import FieldInfo

MiB = 1024 * 1024
_PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,62}")
COLLECTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
"""A collection's name, a folder of the collected data: ``Collector(name=...)`` and the keys of
the stack config's ``data_collection.collections``."""
AUTOMATIC_COLLECTIONS = ("model_inputs", "model_outputs")
"""The collections the server writes itself: each sampled request's body and its answer."""


class SettingsError(ValueError):
    """A setting has a bad value; the message names the option, the env var and the value."""


class SettingKeyError(ValueError):
    """A bad key or value inside a settings section; ``key`` is relative to the section (the
    stack config prefixes it with the section's path, e.g. ``deployments[0].data_collection``)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def setting(
    default: Any,
    *,
    ge: float | None = None,
    le: float | None = None,
    env: Sequence[str] = (),
    flags: Sequence[str] = (),
) -> Any:
    """One declared setting: default and bounds; ``env``/``flags`` only for other spellings.

    Without ``env`` the variable is ``NAME`` (the field name in capitals); ``flags`` come before
    the mechanical ``--field-name``, the first one naming the setting in error messages.
    """
    return Field(default, ge=ge, le=le, json_schema_extra={"env": list(env), "flags": list(flags)})


class Declared(BaseModel):
    """Base of every settings section: unknown keys fail, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def env_vars(cls, name: str) -> tuple[str, ...]:
        """The environment variables of setting ``name``, in priority order (first: rendered)."""
        return _env_vars(name, cls.model_fields[name])

    @classmethod
    def flags(cls, name: str) -> tuple[str, ...]:
        """The command-line spellings of setting ``name`` (first: the one errors name)."""
        mechanical = "--" + name.replace("_", "-")
        declared = _extra(cls.model_fields[name], "flags")
        return tuple(declared) + (() if mechanical in declared else (mechanical,))

    @classmethod
    def leaves(cls) -> dict[str, FieldInfo]:
        """Every setting, nested sections flattened (name -> field; names are unique)."""
        return {name: info for name, (_, info) in _walk(cls).items()}

    @classmethod
    def key_paths(cls) -> dict[str, str]:
        """Every setting's key path in this model (name -> ``section.name`` when nested)."""
        return {name: path for name, (path, _) in _walk(cls).items()}

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every environment variable the server reads for these settings -> its key path."""
        leaves = cls.leaves()
        return {
            var: path
            for name, path in cls.key_paths().items()
            for var in _env_vars(name, leaves[name])
        }

    def to_env(self) -> dict[str, str]:
        """Every setting as environment variables (``load()`` reads them back unchanged).

        Only ``setting()`` fields and sections count: a model that adds other fields (the
        stack config's deployment: name, model, ...) renders just its settings.
        """
        env: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, Declared):
                env.update(value.to_env())
            elif value is not None and _is_setting(info):
                env[self.env_vars(name)[0]] = _text(value)
        return env


class Workers(Declared):
    """How many server processes a pod runs (stack config: ``deployments[i].worker_count``)."""

    worker_count: int = setting(1, ge=1, le=64, flags=("--workers", "-w", "--worker_count"))
    """Worker processes per pod, each with its own copy of the model (``run()`` holds the GIL)."""


class RequestSettings(Declared):
    """Azure ML's ``request_settings``: per-request limits the server enforces."""

    request_timeout_ms: int = setting(
        5000, ge=0, le=600_000, env=("REQUEST_TIMEOUT_MS", "SCORING_TIMEOUT_MS")
    )
    """A ``run()`` longer than this answers 504 (0 = no limit)."""
    max_concurrent_requests_per_instance: int = setting(1, ge=0, le=1000)
    """``run()`` calls at once per pod, split over the workers (0 = no limit, no queue)."""
    max_queue_wait_ms: int = setting(500, ge=0, le=600_000)
    """With a concurrency limit, how long a request may wait for a slot before 429."""
    max_request_body_bytes: int = setting(100 * MiB, ge=1, le=1024 * MiB)
    """Bodies over this answer 413 without being read."""
    max_request_bytes_in_flight: int = setting(0, ge=0, le=64 * 1024 * MiB)
    """Body bytes held at once per pod, split over workers: past it 429, 413 if one never fits (0 = memory limit / 32, else 512 MiB)."""  # noqa: E501
    max_request_header_bytes: int = setting(64 * 1024, ge=1024, le=16 * MiB)
    """Request line + headers larger than this answer 431 and close, as the bytes arrive."""
    max_connections: int = setting(2048, ge=1, le=100_000)
    """Open connections per pod, split over the workers; past it a new one gets 503, closed."""
    request_read_timeout_ms: int = setting(30_000, ge=100, le=600_000)
    """Time to send a whole request (from connecting, or its first byte) before 408 and close."""
    max_batch_size: int = setting(32, ge=1, le=4096)
    """Most requests merged into one model call (MLflow models; scripts with ``run_batch``; row-wise inference-schema scripts); 1 = off."""  # noqa: E501
    max_batch_wait_ms: float = setting(2.0, ge=0, le=1000)
    """Longest a request waits for others to join its batch, only while more are arriving."""


class DataCollection(Declared):
    """Collect sampled requests' inputs and outputs as JSONL (Azure's ``data_collector``).

    The stack config also takes Azure's key names (``AZURE_KEYS``, the documented spelling):
    ``collections: {model_inputs: {enabled: true}, ...}``, ``sampling_rate``, ``rolling_rate``
    and ``destination`` become the fields below, whose names are the server's settings.
    """

    AZURE_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "collections": ("collect", "collect_collections"),
        "sampling_rate": ("collect_sampling_rate",),
        "rolling_rate": ("collect_rolling_rate",),
        "destination": ("collect_destination",),
    }
    """Azure's ``data_collector`` key -> the fields it sets (``destination`` is ours)."""

    collect: bool = setting(False, env=("DATA_COLLECTION_ENABLED",))
    """Collect sampled requests' inputs and outputs (``model_inputs``/``model_outputs``; Azure's ``collections``)."""  # noqa: E501
    collect_collections: Literal["both", "model_inputs", "model_outputs"] = setting(
        "both", env=("DATA_COLLECTION_COLLECTIONS",)
    )
    """Which of the two ``collect`` writes: ``both`` (a request's pair, kept together) or only one."""  # noqa: E501
    collect_sampling_rate: float = setting(1.0, ge=0, le=1, env=("DATA_COLLECTION_SAMPLING_RATE",))
    """Share of requests collected, 0..1 (Azure's ``sampling_rate``; also a script's ``Collector``)."""  # noqa: E501
    collect_max_file_bytes: int = setting(
        10 * MiB, ge=1, le=1024 * MiB, env=("DATA_COLLECTION_MAX_FILE_BYTES",)
    )
    """A JSONL file rolls over to a new one past this size (and every ``collect_rolling_rate``)."""
    collect_rolling_rate: Literal["minute", "hour", "day"] = setting(
        "hour", env=("DATA_COLLECTION_ROLLING_RATE",)
    )
    """How often a collection starts a new file (Azure's ``rolling_rate``)."""
    collect_payload_max_bytes: int = setting(
        4 * MiB, ge=1, le=1024 * MiB, env=("DATA_COLLECTION_PAYLOAD_MAX_BYTES",)
    )
    """A record's data larger than this goes to its own file, referenced by ``dataref``."""
    collect_destination: str = setting("", env=("DATA_COLLECTION_DESTINATION",))
    """Where closed files are shipped: ``s3://bucket/prefix`` or a folder; empty = kept here (stack: ``destination``)."""  # noqa: E501
    collect_spool_max_bytes: int = setting(
        1024 * MiB, ge=64 * 1024, le=1024 * 1024 * MiB, env=("DATA_COLLECTION_SPOOL_MAX_BYTES",)
    )
    """With a destination: spooled bytes not yet shipped past which new records are dropped."""

    @model_validator(mode="before")
    @classmethod
    def _azure_keys(cls, data: Any) -> Any:
        """Azure's ``data_collector`` keys onto the fields (one spelling per setting)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if "request_logging" in out:
            raise SettingKeyError(
                "request_logging",
                "Azure's header capture is not supported: records carry the request id "
                "(xrequestid, correlationid), no headers; remove it",
            )
        for azure, fields in cls.AZURE_KEYS.items():
            if azure not in out:
                continue
            value = out.pop(azure)
            both = [name for name in fields if name in out]
            if both:
                raise SettingKeyError(
                    azure,
                    f"also set as {' and '.join(both)} (the server's name); set one of the two",
                )
            if azure == "collections":
                out.update(_collections(value))
            else:
                out[fields[0]] = _checked(cls.model_fields[fields[0]], azure, value)
        return out


class DeploymentSettings(Workers):
    """What one deployment chooses for its servers: the stack config's ``deployments[i]``
    keys ``worker_count``, ``request_settings`` and ``data_collection``; ``to_env()`` is the
    pod's environment for them."""

    request_settings: RequestSettings = Field(default_factory=RequestSettings)
    """Per-request limits."""
    data_collection: DataCollection = Field(default_factory=DataCollection)
    """Request and response collection."""


class _Where(Declared):
    """What to serve and where: never a deployment's choice (the components set them)."""

    entry_script: Path | None = setting(
        None, flags=("--entry-script", "--entry_script"), env=("AZUREML_ENTRY_SCRIPT",)
    )
    """Scoring script with ``init()`` and ``run()``; none = the model folder is an MLflow model."""
    model_dir: Path | None = setting(
        None, flags=("--model-dir", "--model_dir"), env=("AZUREML_MODEL_DIR",)
    )
    """Folder holding the model (an MLmodel file and no script = MLflow no-code)."""
    host: str = setting("0.0.0.0", env=("ML_ENDPOINTS_HOST",))
    """Address to bind (tests: 127.0.0.1)."""
    port: int = setting(
        5001,
        ge=0,
        le=65535,
        flags=("--port", "-p"),
        env=("ML_ENDPOINTS_PORT", "AZUREML_SERVER_PORT"),
    )
    """TCP port."""


class Settings(DataCollection, RequestSettings, Workers, _Where):
    """The inference server's configuration: ``DeploymentSettings`` flat, plus the rest."""

    collect_dir: Path = setting(Path("data-collection"), env=("DATA_COLLECTION_DIR",))
    """The spool: collected files are written here (``<endpoint>/<deployment>/<collection>/…``)."""
    endpoint_name: str = setting("local", env=("ML_ENDPOINTS_ENDPOINT",))
    """The endpoint's name, in collected records' paths and ``source`` (set by the components)."""
    deployment_name: str = setting("default", env=("ML_ENDPOINTS_DEPLOYMENT",))
    """The deployment's name, in collected records' paths and ``source`` (set by the components)."""
    access_log: bool = setting(True)
    """One JSON line per request on stdout (passing probes left out; `/metrics` counts them)."""
    log_level: Literal["debug", "info", "warning", "error"] = setting("info")
    """Log level of the server's own lines."""
    graceful_timeout_s: float = setting(30.0, ge=0, env=("GRACEFUL_SHUTDOWN_TIMEOUT_S",))
    """On SIGTERM, how long in-flight requests may take before they are cut."""
    execution: Literal["auto", "inline", "thread"] = setting(
        "auto", env=("ML_ENDPOINTS_EXECUTION",)
    )
    """Where ``run()`` executes: ``inline``, ``thread``, or ``auto`` (thread with a queue limit)."""
    metrics_dir: Path | None = setting(None, env=("ML_ENDPOINTS_METRICS_DIR",))
    """Where workers share their Prometheus counters (set by the supervisor; internal)."""
    cors_origins: str | None = setting(None, env=("AML_CORS_ORIGINS",))
    """Browser origins allowed by CORS, comma-separated, or ``*`` (Azure's ``AML_CORS_ORIGINS``)."""
    internal_credential_file: Path | None = setting(None)
    """Router's credential file (a Secret); then all but probes need x-ml-endpoints-credential."""

    @property
    def workers(self) -> int:
        """``worker_count`` (the supervisor's name for it)."""
        return self.worker_count

    @property
    def run_in_thread(self) -> bool:
        if self.execution == "auto":
            return self.max_concurrent_requests_per_instance > 0
        return self.execution == "thread"

    @property
    def bytes_in_flight_per_worker(self) -> int:
        """This worker's share of ``max_request_bytes_in_flight`` (0 = derived: see there)."""
        total = self.max_request_bytes_in_flight or default_bytes_in_flight(memory_limit())
        return max(1, total // self.worker_count)

    @property
    def connections_per_worker(self) -> int:
        """This worker's share of ``max_connections`` (at least 1)."""
        return max(1, self.max_connections // self.worker_count)

    @property
    def slots_per_worker(self) -> int:
        """This worker's share of ``max_concurrent_requests_per_instance`` (at least 1)."""
        total = self.max_concurrent_requests_per_instance
        return max(1, -(-total // self.worker_count)) if total > 0 else 0


BYTES_IN_FLIGHT_NO_LIMIT = 512 * MiB
"""Default request bytes in flight per pod when the pod has no memory limit."""
MEMORY_PER_BODY_BYTE = 32
"""Pod memory counted per request byte held: a script's ``json.loads`` makes ~25x the body."""
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def memory_limit(files: Sequence[Path] = _CGROUP_LIMITS) -> int | None:
    """The pod's (container's) memory limit in bytes from its cgroup, or None if unlimited."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit():
            return None
        limit = int(text)
        return limit if limit < 1 << 60 else None  # v1 says "unlimited" with a huge number
    return None


def default_bytes_in_flight(limit: int | None) -> int:
    """``max_request_bytes_in_flight``'s default for a pod with memory limit ``limit``."""
    return BYTES_IN_FLIGHT_NO_LIMIT if limit is None else max(MiB, limit // MEMORY_PER_BODY_BYTE)


def _collections(value: Any) -> dict[str, Any]:
    """Azure's ``collections`` map as ``collect`` and ``collect_collections``.

    ``model_inputs``/``model_outputs`` are the server's own collections (either, or both); any
    other valid name is a script's ``Collector(name=...)``, which records whenever it is called,
    so it is accepted enabled only. A collection left out is off, as in Azure.
    """
    if not isinstance(value, dict):
        raise SettingKeyError(
            "collections",
            f"must be a map: collection name -> {{enabled: true or false}} (got {value!r})",
        )
    enabled: dict[str, bool] = {}
    for name, spec in value.items():
        key = f"collections.{name}"
        if name in ("request", "response"):
            raise SettingKeyError(
                key,
                "Azure's payload-logging names are not used here: the request and response "
                "bodies are the collections model_inputs and model_outputs; enable those",
            )
        if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
            raise SettingKeyError(
                key,
                "is not a collection name (1-128 of A-Z, a-z, 0-9, '_', '.', '-'; as "
                "Collector(name=...))",
            )
        if not isinstance(spec, dict):
            raise SettingKeyError(key, f"must be a map with enabled: true or false (got {spec!r})")
        for extra in spec:
            if extra == "enabled":
                continue
            if extra in ("data", "client_id"):
                raise SettingKeyError(
                    f"{key}.{extra}",
                    "Azure's per-collection storage is not supported: every collection ships to "
                    "data_collection.destination; remove it",
                )
            raise SettingKeyError(f"{key}.{extra}", "unknown key; accepted keys: enabled")
        if "enabled" not in spec:
            raise SettingKeyError(f"{key}.enabled", "required key is missing (true or false)")
        on = _enabled(spec["enabled"])
        if on is None:
            raise SettingKeyError(
                f"{key}.enabled", f"{spec['enabled']!r} is not accepted; accepted: true, false"
            )
        if not on and name not in AUTOMATIC_COLLECTIONS:
            raise SettingKeyError(
                f"{key}.enabled",
                f"false is not supported for a script's own collection: Collector(name={name!r})"
                ".collect() always records here (sampled); remove the call, or this entry",
            )
        enabled[name] = on
    inputs, outputs = (enabled.get(name, False) for name in AUTOMATIC_COLLECTIONS)
    which = "both" if inputs == outputs else "model_inputs" if inputs else "model_outputs"
    return {"collect": inputs or outputs, "collect_collections": which}


def _enabled(value: Any) -> bool | None:
    """A collection's ``enabled``: a boolean, or Azure's ``'True'``/``'False'``; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _checked(info: FieldInfo, key: str, value: Any) -> Any:
    """``value`` validated as field ``info`` (type and bounds), errors naming ``key``."""
    try:
        return _adapter(info).validate_python(value)
    except ValidationError as exc:
        raise SettingKeyError(key, f"{exc.errors()[0]['msg']} (got {value!r})") from None


@cache
def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    """A validator of one field's type and bounds (``ge``/``le``), built once."""
    kind: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(kind)


def _extra(info: FieldInfo, key: str) -> list[str]:
    extra = info.json_schema_extra
    names = extra.get(key) if isinstance(extra, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def _is_setting(info: FieldInfo) -> bool:
    return isinstance(info.json_schema_extra, dict) and "env" in info.json_schema_extra


def _walk(cls: type[Declared]) -> dict[str, tuple[str, FieldInfo]]:
    """Every setting of ``cls``, sections flattened: name -> (key path, field)."""
    found: dict[str, tuple[str, FieldInfo]] = {}
    for name, info in cls.model_fields.items():
        section = _section(info)
        if section:
            nested = _walk(section).items()
            found.update({leaf: (f"{name}.{path}", sub) for leaf, (path, sub) in nested})
        elif _is_setting(info):
            found[name] = (name, info)
    return found


def _env_vars(name: str, info: FieldInfo) -> tuple[str, ...]:
    declared = _extra(info, "env")
    return tuple(declared) if declared else (name.upper(),)


def _section(info: FieldInfo) -> type[Declared] | None:
    kind = info.annotation
    return kind if isinstance(kind, type) and issubclass(kind, Declared) else None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bool(value: str) -> bool:
    low = value.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    return low, high


def parse_value(info: FieldInfo, raw: str) -> Any:
    """A setting's value from its text (a flag or an env var).

    Raises:
        ValueError: saying what is accepted (the caller adds the name and the value).
    """
    kind = info.annotation
    if get_origin(kind) is Literal:
        allowed = get_args(kind)
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw
    if kind is bool:
        return _bool(raw)
    if kind is int or kind is float:
        number = kind(raw)
        low, high = _bounds(info)
        if (low is not None and number < low) or (high is not None and number > high):
            if low is not None and high is not None:
                raise ValueError(f"must be between {low:g} and {high:g}")
            raise ValueError(f"must be >= {low:g}" if low is not None else f"must be <= {high:g}")
        return number
    if kind is str or kind == str | None:
        return raw
    return Path(raw)  # Path and Path | None


def parser() -> argparse.ArgumentParser:
    """The ``python -m scoring serve`` argument parser (values parsed later, to name errors)."""
    p = argparse.ArgumentParser(
        prog="python -m scoring serve",
        description="Serve an Azure ML style scoring script (init()/run()) or an MLflow model.",
    )
    for name, info in Settings.model_fields.items():
        doc = (info.description or "").split("\n")[0]
        p.add_argument(
            *Settings.flags(name),
            dest=name,
            metavar="BOOL" if info.annotation is bool else "V",
            help=f"{doc} [env {', '.join(Settings.env_vars(name))}; default {_text(info.default)}]",
        )
    return p


def load(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``argv`` and ``environ`` into ``Settings``.

    Raises:
        SettingsError: naming the flag or env var and the bad value.
    """
    env = os.environ if environ is None else environ
    args = parser().parse_args(list(argv))
    values: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        raw, source = getattr(args, name), Settings.flags(name)[0]
        if raw is None:
            for var in Settings.env_vars(name):
                if env.get(var, "") != "":
                    raw, source = env[var], var
                    break
        if raw is None:
            continue
        try:
            values[name] = parse_value(info, raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {raw!r} is not valid ({exc})") from exc
    try:
        settings = Settings(**values)
    except ValidationError as exc:  # parse_value checked every field; a programmer error
        raise SettingsError(str(exc)) from exc
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
    if s.internal_credential_file is not None:
        read_credential(s.internal_credential_file)
    for flag, name in (
        ("--endpoint-name", s.endpoint_name),
        ("--deployment-name", s.deployment_name),
    ):
        if not _PATH_NAME.fullmatch(name):
            raise SettingsError(
                f"{flag}: {name!r} is not a name (1-63 of a-z, A-Z, 0-9, '-', '_'); it is a "
                "folder of the collected data's paths"
            )
    if s.execution == "inline" and s.max_concurrent_requests_per_instance > 0:
        raise SettingsError(
            "--execution: 'inline' cannot queue requests; set "
            "--max-concurrent-requests-per-instance 0 (its default is 1) or use --execution thread"
        )


def read_credential(path: Path) -> bytes:
    """The internal credential in ``path`` (surrounding whitespace dropped).

    Raises:
        SettingsError: the file cannot be read or is empty.
    """
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(
            f"--internal-credential-file: cannot read {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    if not value:
        raise SettingsError(f"--internal-credential-file: {str(path)!r} is empty")
    return value
