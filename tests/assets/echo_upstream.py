"""A tiny real upstream for router tests and benchmarks (until/besides the inference server).

``python tests/assets/echo_upstream.py --name blue --port P`` runs uvicorn with a raw ASGI
app. ``POST /score`` answers ``{"deployment": NAME, "request_id": ..., "body": ...}``; the
caller steers it per request with headers (forwarded by the router, so mirrored copies
behave the same): ``x-test-delay-ms`` sleeps first, ``x-test-status`` sets the status,
``x-test-same: 1`` leaves the deployment name out so every deployment answers alike.
``--delay-ms`` adds a fixed delay to every ``/score`` answer (a slower pod), and
``--fail-every N`` answers 500 to every Nth: a bad candidate for the rollout tests, whatever
headers the router forwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn


def make_app(name: str, fail_every: int = 0, delay_ms: int = 0):
    scored = 0

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = dict(scope["headers"])
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        path = scope["path"]
        status = 200
        if path == "/score" and scope["method"] == "POST":
            nonlocal scored
            scored += 1
            delay = int(headers.get(b"x-test-delay-ms", b"0")) + delay_ms
            if delay:
                await asyncio.sleep(delay / 1000)
            status = int(headers.get(b"x-test-status", b"200"))
            if fail_every and scored % fail_every == 0:
                status = 500
            out: dict[str, object] = {"body": body.decode("utf-8", "replace")}
            if headers.get(b"x-test-same") != b"1":
                out["deployment"] = name
                out["request_id"] = headers.get(b"x-request-id", b"").decode()
                out["has_authorization"] = b"authorization" in headers
            payload = json.dumps(out).encode()
            ctype = b"application/json"
        elif path == "/swagger.json":
            payload = json.dumps({"swagger": "2.0", "info": {"title": name}}).encode()
            ctype = b"application/json"
        elif path in ("/", "/ready"):
            payload, ctype = b"Healthy", b"text/plain"
        else:
            status, payload, ctype = 404, b"not found", b"text/plain"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"x-upstream", name.encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--delay-ms", type=int, default=0)
    args = p.parse_args()
    uvicorn.run(
        make_app(args.name, args.fail_every, args.delay_ms),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
