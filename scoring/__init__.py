"""What runs inside the pods: the inference server and the endpoint router.

Two programs, one command each (``python -m scoring serve`` and ``python -m scoring router``,
see ``__main__``), and a few primitives both use:

- ``server/``: the inference server (an Azure ML scoring script or an MLflow model behind
  ``/score``); docs/server.md.
- ``router/``: the endpoint router (auth, traffic split, pinning, mirroring in front of the
  deployments); docs/router.md.
- ``common/``: what both programs share (request ids, error bodies, log lines, histograms).
- ``_compat/``: stand-ins for ``azureml.*`` put on a script's ``sys.path`` (not imported here).
"""
