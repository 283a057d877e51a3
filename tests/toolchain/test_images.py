"""Images built offline by `components._images` through the real CLI, run, scored and pulled back.

The program builds the environment image (base + project wheel + the sample's requirements from
the host wheelhouse, no network) and the scoring image (model + code) with the pulumi-docker-build
provider on the local buildkitd, pushes both to the local registry, then this test runs the
scoring image on loopback, scores the sample request, and reads the manifest back from the
registry by tag.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi import automation as auto

from components._images import Image, ImageArgs
from mlendpoints._procs import free_port
from mlendpoints.paths import REPO as ROOT
from tests.support.inline import inline_stack, summary

pytestmark = pytest.mark.images

REGISTRY = "127.0.0.1:5000"
# BuildKit pushes OCI manifests (Docker 20.10 and containerd 1.6 pull them).
MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"


def _http(
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _base_image(env: dict[str, str]) -> str:
    ref = Path(env["ML_ENDPOINTS_CACHE"]) / "images" / "base-image.ref"
    if not ref.is_file():
        pytest.fail(f"{ref} missing: run `make images-setup` (scripts/base_image.sh)")
    return ref.read_text().strip()


@pytest.fixture(autouse=True)
def buildkit(toolchain_env: dict[str, str]) -> None:
    """The builder every image names: buildkitd running and registered with buildx."""
    status = subprocess.run(
        ["bash", str(ROOT / "scripts" / "buildkit.sh"), "status"],
        capture_output=True,
        text=True,
        env=toolchain_env,
        timeout=30,
        check=False,
    )
    if status.returncode != 0:
        pytest.fail(f"{status.stdout.strip()}: run `make buildkit` (scripts/buildkit.sh)")


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[Path, Path]:
    """Build contexts: the sample's requirements; the sample's trained model and script."""
    env_ctx = tmp_path / "env"
    env_ctx.mkdir()
    shutil.copy(ROOT / "samples" / "diabetes" / "requirements.txt", env_ctx / "requirements.txt")
    scoring_ctx = tmp_path / "scoring"
    (scoring_ctx / "code").mkdir(parents=True)
    # A line of its own per run: the scoring build is never wholly cached, so BuildKit has
    # steps to report (a wholly cached build streams only its "building with" line).
    script = (ROOT / "samples" / "diabetes" / "score.py").read_text()
    (scoring_ctx / "code" / "score.py").write_text(f"{script}\n# test build {uuid.uuid4()}\n")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "samples" / "diabetes" / "train.py"),
            "--out",
            str(scoring_ctx / "model"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_ctx, scoring_ctx


def _expected_predictions(model_dir: Path, request: dict[str, Any]) -> list[Any]:
    import joblib
    import numpy as np

    model = joblib.load(model_dir / "model.pkl")
    return model.predict(np.array(request["data"])).tolist()


# A cold build (new wheelhouse, environment image from scratch) takes minutes on 2 busy cores.
@pytest.mark.timeout(900)
def test_scoring_image_builds_offline_runs_and_is_pushed(
    toolchain_env: dict[str, str], contexts: tuple[Path, Path], tmp_path: Path
) -> None:
    import docker

    env_ctx, scoring_ctx = contexts
    base = _base_image(toolchain_env)
    repo = f"{REGISTRY}/mlendpoints-test"

    def program() -> None:
        env_image = Image(
            "env",
            ImageArgs(
                context=str(env_ctx),
                dockerfile=str(ROOT / "images" / "environment.Dockerfile"),
                repository=f"{repo}/env",
                build_args={"BASE_IMAGE": base, "PYTHON_VERSION": "3.11"},
            ),
        )
        scoring = Image(
            "scoring",
            ImageArgs(
                context=str(scoring_ctx),
                dockerfile=str(ROOT / "images" / "scoring.Dockerfile"),
                repository=f"{repo}/scoring",
                build_args={"ENV_IMAGE": env_image.ref},
            ),
        )
        pulumi.export("env_ref", env_image.ref)
        pulumi.export("scoring_ref", scoring.ref)
        pulumi.export("scoring_digest", scoring.digest)

    stack = inline_stack(toolchain_env, "toolchain-images", program)
    client = docker.from_env()
    container = None
    try:
        assert summary(stack.preview().change_summary) == {"create": 3}
        progress: list[tuple[str, str]] = []  # (resource name, message)

        def on_event(event: auto.EngineEvent) -> None:
            diag = event.diagnostic_event
            if diag is not None and diag.urn:
                progress.append((diag.urn.rsplit("::", 1)[-1], diag.message))

        up = stack.up(on_event=on_event)
        assert up.summary.result == "succeeded"
        assert summary(up.summary.resource_changes) == {"create": 3}
        # Progress a person can follow: BuildKit's steps stream during `up`, per image.
        assert any(
            name == "scoring" and "load build definition from scoring.Dockerfile" in message
            for name, message in progress
        ), progress[-20:]

        scoring_ref = up.outputs["scoring_ref"].value
        digest = up.outputs["scoring_digest"].value
        assert digest.startswith("sha256:") and len(digest) == 71
        name, _, pinned = scoring_ref.partition("@")
        assert pinned == digest
        assert name.startswith(f"{repo}/scoring:")
        assert up.outputs["env_ref"].value.startswith(f"{repo}/env:")

        # Unchanged inputs: nothing to build.
        assert summary(stack.preview().change_summary) == {"same": 3}

        # The registry serves the manifest under the tag, with the digest we recorded.
        tag = name.rsplit(":", 1)[1]
        status, headers, body = _http(
            f"http://{REGISTRY}/v2/mlendpoints-test/scoring/manifests/{tag}",
            headers={"Accept": MANIFEST_OCI},
        )
        assert status == 200, body[:300]
        assert headers.get("Docker-Content-Digest") == digest
        assert json.loads(body)["mediaType"] == MANIFEST_OCI

        # Run it on loopback and score the sample request.
        port = free_port()
        container = client.containers.run(
            scoring_ref,
            detach=True,
            ports={"5001/tcp": ("127.0.0.1", port)},
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _http(f"{url}/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(
                "scoring container not ready in 120 s:\n"
                + container.logs(tail=40).decode(errors="replace")
            )
        status, _, body = _http(f"{url}/")
        assert (status, body) == (200, b"Healthy")
        request = json.loads((ROOT / "samples" / "diabetes" / "sample-request.json").read_text())
        status, _, body = _http(
            f"{url}/score",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        assert status == 200, body
        assert json.loads(body) == _expected_predictions(scoring_ctx / "model", request)

        status, _, body = _http(
            f"{url}/score",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        assert status == 400, body
        assert json.loads(body)["error"].startswith("request body is not valid JSON")
    finally:
        if container is not None:
            container.remove(force=True)
        stack.workspace.remove_stack("test", force=True)


# The RUN step succeeds only when the socket finds no network at all (ENETUNREACH, at once);
# with a network it times out or connects, and the build fails.
_NO_NETWORK_PROBE = (
    "import errno, socket, sys\n"
    "try:\n"
    "    socket.create_connection(('10.0.0.1', 80), timeout=5)\n"
    "except OSError as exc:\n"
    "    sys.exit(0 if exc.errno == errno.ENETUNREACH else f'a network answered: {exc!r}')\n"
    "sys.exit('a network answered: connected')\n"
)


@pytest.mark.timeout(300)
def test_image_builds_run_with_no_network(toolchain_env: dict[str, str], tmp_path: Path) -> None:
    """RUN steps cannot reach anything: the wheels come from the host, never from an index."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "probe.py").write_text(_NO_NETWORK_PROBE)
    dockerfile = tmp_path / "net.Dockerfile"
    dockerfile.write_text(
        "# check=skip=InvalidDefaultArgInFrom\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "COPY probe.py /probe.py\nRUN python3 /probe.py\n"
    )
    base = _base_image(toolchain_env)

    def program() -> None:
        Image(
            "net",
            ImageArgs(
                context=str(context),
                dockerfile=str(dockerfile),
                repository=f"{REGISTRY}/mlendpoints-test/net",
                build_args={"BASE_IMAGE": base},
                push=False,
            ),
        )

    stack = inline_stack(toolchain_env, "toolchain-images-net", program, "net")
    try:
        up = stack.up()
        assert up.summary.result == "succeeded"
    finally:
        stack.workspace.remove_stack("net", force=True)
