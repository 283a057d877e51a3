"""What runs inside the pods: the inference server and the endpoint router.

Public entry points are the ``python -m scoring serve`` and ``python -m scoring router``
commands; modules are one concern each (see docs/).
"""
