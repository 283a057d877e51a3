"""The floor of Python HTTP cost: a bare uvicorn + Starlette app calling the same run().

No metrics, ids, limits, logs or collection: ``POST /score`` reads the body, calls the
script's ``run()`` inline and returns its JSON. Started by ``bench.server`` as
``uvicorn bench.bare_app:app --workers 2``; the script and model come from the
environment (``BENCH_ENTRY_SCRIPT``, ``AZUREML_MODEL_DIR``). ``init()`` runs at import, in
each worker.
"""

from __future__ import annotations

import importlib.util
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

_spec = importlib.util.spec_from_file_location("score", os.environ["BENCH_ENTRY_SCRIPT"])
assert _spec is not None and _spec.loader is not None
_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_script)
_script.init()
_run = _script.run


async def score(request: Request) -> Response:
    body = await request.body()
    return Response(json.dumps(_run(body.decode())), media_type="application/json")


async def health(request: Request) -> Response:
    return PlainTextResponse("Healthy")


app = Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/", health)])
