"""A client of a deployed endpoint, reached the way a user's code does: scoring_uri plus a
credential.

    from mlendpoints.client import Endpoint
    Endpoint.from_stack("dev").invoke({"data": [[...]]}, deployment=None)

The end-to-end tests and the rollout benchmark use it too (with the sample's known answers:
mlendpoints/_sample.py), so every response can be checked against the model of the
deployment that says it answered (response header `azureml-model-deployment`).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

DEPLOYMENT_HEADER = "azureml-model-deployment"


class EndpointError(Exception):
    """The endpoint answered with an error status; the message has the status and body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:500].decode(errors='replace')}")
        self.status, self.body = status, body


class Endpoint:
    """The deployed endpoint at SCORING_URI. CREDENTIAL (a key or token) is sent as a bearer
    credential unless a call passes its own; BODY is what `post` sends by default; EXPECTED
    maps a deployment to the answer `ask` accepts from it (None: any 200 is right)."""

    def __init__(
        self,
        scoring_uri: str,
        credential: str | None = None,
        *,
        body: bytes = b"",
        expected: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(scoring_uri)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self.credential, self.body, self.expected = credential, body, expected
        self.timeout = timeout

    @classmethod
    def from_stack(cls, stack: str, key: str = "primary") -> Endpoint:
        """The endpoint a deployed stack serves, with the credential its auth mode needs
        (KEY picks the primary or secondary key in `key` mode; a fresh token in
        `aml_token` mode)."""
        from mlendpoints import cli
        from mlendpoints import stack as stackmod

        outputs = stackmod.read_outputs(stack)
        auth = cli.authorization(outputs, stack, key=key)
        return cls(str(outputs["scoring_uri"]), auth.removeprefix("Bearer ") if auth else None)

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

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
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, str, bytes]:
        """(status, deployment that answered, body); a fresh connection unless CONN is given."""
        headers = {"Content-Type": "application/json"}
        credential = credential if credential is not None else self.credential
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        if pin is not None:
            headers[DEPLOYMENT_HEADER] = pin
        own = conn is None
        conn = conn or self._connection()
        try:
            conn.request(
                "POST", self.path, body=self.body if body is None else body, headers=headers
            )
            resp = conn.getresponse()
            return resp.status, resp.getheader(DEPLOYMENT_HEADER) or "", resp.read()
        finally:
            if own:
                conn.close()

    def get(self, path: str, credential: str) -> Any:
        conn = self._connection()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {credential}"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (path, resp.status, body)
            return json.loads(body)
        finally:
            conn.close()

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
        conn = self._connection()
        try:
            for _ in range(n):
                status, who, body = self.post(credential=key, conn=conn)
                assert status == 200, (status, body)
                counts[who] = counts.get(who, 0) + 1
        finally:
            conn.close()
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
