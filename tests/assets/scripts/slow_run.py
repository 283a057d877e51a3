"""run() sleeps ``{"sleep": seconds}``; it catches Exception like many Azure tutorial scripts.

With ``"mark": path`` it creates that file when run() starts, so a test knows the request
is in flight without sleeping.
"""

import json
import pathlib
import time


def init():
    pass


def run(raw_data):
    body = json.loads(raw_data)
    seconds = body["sleep"]
    if body.get("mark"):
        pathlib.Path(body["mark"]).touch()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # bounded busy wait + sleeps (interruptible)
            time.sleep(0.01)
    except Exception as exc:  # must not swallow the server's timeout
        return {"swallowed": str(exc)}
    return {"slept": seconds}
