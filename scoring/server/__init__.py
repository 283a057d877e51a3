"""The inference server: ``python -m scoring serve`` (docs/server.md).

- ``config``: the settings (CLI > environment > defaults), read once at start-up.
- ``supervisor``: the process model: bind, fork the workers, respawn, drain; a worker's life.
- ``app``: the ASGI app of one worker; translates HTTP to the scorer and back.
- ``scorer``: the ``Scorer`` interface the app calls, and the one that serves a deployment.
- ``script``: an Azure ML entry script's ``init()``/``run()`` as a scorer.
- ``mlflow_model``: an MLflow model folder as a scorer (no script).
- ``runners``: how ``run()`` is called (inline under SIGALRM, or in a thread pool).
- ``body``: reading the request body (media type, size limit).
- ``errors``: the errors a scoring request can end in.
- ``jsonable``: numpy/pandas values as JSON values.
- ``collector``: data collection (``Collector``, ``model_inputs``/``model_outputs`` files).
- ``metrics``: per-worker counters and their Prometheus rendering across workers.
- ``swagger``: the ``/swagger.json`` document.
- ``uvicorn_http``: uvicorn adapted: one write per response, exit 0 once drained.
"""
