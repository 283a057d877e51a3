"""A client of a deployed endpoint, reached the way a user's code does: scoring_uri, a
credential, and the stack's CA to verify the router's certificate, with `requests` (what
Azure's tutorials use: `requests.post(scoring_uri, json=..., headers=..., verify=CA)`).

    from mlendpoints.client import Endpoint
    Endpoint.from_stack("dev").invoke({"data": [[...]]}, deployment=None)

Tokens (`aml_token` auth) come from the router's `POST /token`, authenticated with a key: the
signing key never leaves the cluster. The end-to-end tests and the rollout benchmark use this
client too (with the sample's known answers: mlendpoints/_sample.py), so every response can be
checked against the model of the deployment that says it answered (response header
`azureml-model-deployment`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import requests

from mlendpoints.paths import cache_root

DEPLOYMENT_HEADER = "azureml-model-deployment"
Verify = bool | str
"""`requests`' `verify=`: a CA bundle path, or True for the system's CAs."""


class EndpointError(Exception):
    """The endpoint answered with an error status; the message has the status and body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:500].decode(errors='replace')}")
        self.status, self.body = status, body


def ca_file(stack: str, ca_pem: str | None) -> Verify:
    """The stack's CA (its `ca_certificate` output) as a file for `verify=`, kept under the
    cache as `tls/<stack>-<digest>.pem` (named by content: two projects' `dev` stacks, or a
    rotated CA, never overwrite each other); True (the system's CAs) when the stack has none
    (its own certificate from a public CA, or plain HTTP)."""
    if not ca_pem:
        return True
    text = ca_pem.strip() + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_root() / "tls" / f"{stack}-{digest}.pem"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


def router_base(scoring_uri: str) -> str:
    """The router's root URL (`/ready`, `/token`, `/mirror/summary` live there)."""
    return scoring_uri.rstrip("/").removesuffix("/score")


def fetch_token(
    scoring_uri: str, key: str, ttl_s: int, verify: Verify = True, timeout: float = 30.0
) -> dict[str, Any]:
    """A token from the router's `POST /token` (Azure's shape: accessToken, expiryTimeUtc,
    refreshAfterTimeUtc, tokenType), authenticated with KEY.

    Raises:
        EndpointError: the router refused (a wrong key, auth mode `key`, ...).
        requests.RequestException: no answer.
    """
    resp = requests.post(
        router_base(scoring_uri) + "/token",
        json={"ttl_s": ttl_s},
        headers={"Authorization": f"Bearer {key}"},
        verify=verify,
        timeout=timeout,
    )
    if resp.status_code != 200:
        raise EndpointError(resp.status_code, resp.content)
    token: dict[str, Any] = resp.json()
    return token


class Endpoint:
    """The deployed endpoint at SCORING_URI. CREDENTIAL (a key or token) is sent as a bearer
    credential unless a call passes its own; BODY is what `post` sends by default; EXPECTED
    maps a deployment to the answer `ask` accepts from it (None: any 200 is right); VERIFY
    is the CA bundle that signed the router's certificate."""

    def __init__(
        self,
        scoring_uri: str,
        credential: str | None = None,
        *,
        body: bytes = b"",
        expected: dict[str, Any] | None = None,
        timeout: float = 10.0,
        verify: Verify = True,
    ) -> None:
        self.scoring_uri = scoring_uri
        self.credential, self.body, self.expected = credential, body, expected
        self.timeout, self.verify = timeout, verify

    @classmethod
    def from_stack(cls, stack: str, key: str = "primary") -> Endpoint:
        """The endpoint a deployed stack serves, verified against the stack's CA, with the
        credential its auth mode needs (KEY picks the primary or secondary key in `key` mode;
        a fresh token from the router in `aml_token` mode)."""
        from mlendpoints import cli
        from mlendpoints import stack as stackmod

        outputs = stackmod.read_outputs(stack)
        verify = ca_file(stack, outputs.get("ca_certificate"))
        auth = cli.authorization(outputs, stack, key=key, verify=verify)
        credential = auth.removeprefix("Bearer ") if auth else None
        return cls(str(outputs["scoring_uri"]), credential, verify=verify)

    def session(self) -> requests.Session:
        """A session (one kept-alive connection); calls pass `verify=` themselves, because a
        session's own `verify` loses to `REQUESTS_CA_BUNDLE` (requests issue #3829)."""
        return requests.Session()

    def invoke(self, data: Any, deployment: str | None = None) -> Any:
        """POST DATA (JSON-encoded unless bytes) and return the decoded answer; DEPLOYMENT
        pins the request to one deployment. Raises EndpointError on an error status."""
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        status, _, answer = self.post(body, pin=deployment)
        if status != 200:
            raise EndpointError(status, answer)
        return json.loads(answer)

    def post(
        self,
        body: bytes | None = None,
        credential: str | None = None,
        pin: str | None = None,
        conn: requests.Session | None = None,
    ) -> tuple[int, str, bytes]:
        """(status, deployment that answered, body); a fresh connection unless CONN (a
        `session()`) is given."""
        headers = {"Content-Type": "application/json"}
        credential = credential if credential is not None else self.credential
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        if pin is not None:
            headers[DEPLOYMENT_HEADER] = pin
        session = conn or self.session()
        try:
            resp = session.post(
                self.scoring_uri,
                data=self.body if body is None else body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
            )
            return resp.status_code, resp.headers.get(DEPLOYMENT_HEADER, ""), resp.content
        finally:
            if conn is None:
                session.close()

    def get(self, path: str, credential: str) -> Any:
        with self.session() as session:
            resp = session.get(
                router_base(self.scoring_uri) + path,
                headers={"Authorization": f"Bearer {credential}"},
                timeout=self.timeout,
                verify=self.verify,
            )
        assert resp.status_code == 200, (path, resp.status_code, resp.content)
        return resp.json()

    def ask(self, key: str, pin: str | None = None) -> tuple[int, str]:
        """One request: (200, who answered) only if that deployment's own predictions came
        back; else the status (-1 for wrong predictions) and what came."""
        status, who, body = self.post(credential=key, pin=pin)
        if status != 200:
            return status, body[:200].decode(errors="replace")
        if self.expected is not None and json.loads(body) != self.expected.get(who):
            return -1, f"{who or 'no deployment header'} answered {body[:80]!r}"
        return 200, who

    def split(self, key: str, n: int) -> dict[str, int]:
        """Who answered N requests sent back to back over one kept-alive connection."""
        counts: dict[str, int] = {}
        with self.session() as conn:
            for _ in range(n):
                status, who, body = self.post(credential=key, conn=conn)
                assert status == 200, (status, body)
                counts[who] = counts.get(who, 0) + 1
        return counts

    def routing(self, key: str) -> tuple[dict[str, int], dict[str, int]]:
        """(live split, mirror split) the router answering a new connection applies now,
        deployments at 0% left out of the live split."""
        summary = self.get("/mirror/summary", key)
        return {k: v for k, v in summary["traffic"].items() if v}, summary["mirror_traffic"]

    def wait_router(
        self, key: str, traffic: dict[str, int], mirror: dict[str, int], timeout: float = 60
    ) -> float:
        """Seconds until the router answering new connections applies TRAFFIC and MIRROR
        (five reads in a row: a replaced router pod drains for a few seconds)."""
        start = time.monotonic()
        wanted = ({k: v for k, v in traffic.items() if v}, mirror)
        streak = 0
        while streak < 5:
            now = self.routing(key)
            streak = streak + 1 if now == wanted else 0
            assert time.monotonic() - start < timeout, f"router still applies {now}"
            time.sleep(0.2)
        return time.monotonic() - start
