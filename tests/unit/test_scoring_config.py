"""scoring.server.config: CLI > env > defaults, azmlinfsrv spellings, errors naming the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scoring.server.config import Settings, SettingsError, load

pytestmark = pytest.mark.server


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "score.py"
    path.write_text("def init(): pass\ndef run(raw): return raw\n")
    return path


def test_defaults(script: Path) -> None:
    s = load(["--entry-script", str(script)], {})
    assert (s.host, s.port, s.workers, s.request_timeout_ms) == ("0.0.0.0", 5001, 1, 5000)
    assert s.max_concurrent_requests_per_instance == 1  # Azure's default
    assert s.run_in_thread


def test_azmlinfsrv_spellings_and_env(script: Path, tmp_path: Path) -> None:
    s = load(
        ["--entry_script", str(script), "--model_dir", str(tmp_path), "--worker_count", "3"],
        {"WORKER_COUNT": "9", "SCORING_TIMEOUT_MS": "250"},
    )
    assert s.entry_script == script and s.model_dir == tmp_path
    assert (s.workers, s.request_timeout_ms) == (3, 250)


def test_env_names_and_cli_precedence(script: Path, tmp_path: Path) -> None:
    env = {
        "AZUREML_ENTRY_SCRIPT": str(script),
        "AZUREML_MODEL_DIR": str(tmp_path),
        "WORKER_COUNT": "2",
        "REQUEST_TIMEOUT_MS": "100",
        "MAX_QUEUE_WAIT_MS": "7",
        "MAX_CONCURRENT_REQUESTS_PER_INSTANCE": "5",
        "DATA_COLLECTION_ENABLED": "true",
        "DATA_COLLECTION_SAMPLING_RATE": "0.25",
    }
    s = load(["--workers", "4"], env)
    assert s.workers == 4  # CLI wins
    assert (s.request_timeout_ms, s.max_queue_wait_ms) == (100, 7)
    assert s.collect and s.collect_sampling_rate == 0.25
    assert s.run_in_thread and s.slots_per_worker == 2  # ceil(5 / 4)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers: '0' is not valid (must be between 1 and 64)"),
        (
            [],
            {"WORKER_COUNT": "x"},
            "WORKER_COUNT: 'x' is not valid (invalid literal for int() with base 10: 'x')",
        ),
        (
            ["--collect-sampling-rate", "2"],
            {},
            "--collect-sampling-rate: '2' is not valid (must be between 0 and 1)",
        ),
        (["--collect", "maybe"], {}, "--collect: 'maybe' is not valid (expected true or false)"),
        (
            ["--execution", "fast"],
            {},
            "--execution: 'fast' is not valid (must be one of auto, inline, thread)",
        ),
    ],
)
def test_bad_values_are_named(
    script: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(["--entry-script", str(script), *argv], env)
    assert str(info.value) == message


def test_missing_script_and_model(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^--entry-script: not given"):
        load([], {})
    with pytest.raises(SettingsError) as info:
        load(["--entry-script", str(tmp_path / "nope.py")], {})
    assert str(info.value) == f"--entry-script: {str(tmp_path / 'nope.py')!r} is not a file"


def test_inline_cannot_queue(script: Path) -> None:
    with pytest.raises(SettingsError, match="'inline' cannot queue requests"):
        load(
            [
                "--entry-script",
                str(script),
                "--execution",
                "inline",
                "--max-concurrent-requests-per-instance",
                "2",
            ],
            {},
        )


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        Settings().port = 1  # type: ignore[misc]
