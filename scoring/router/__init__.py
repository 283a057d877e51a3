"""The endpoint router: ``python -m scoring router`` (docs/router.md).

- ``config``: the router's config file (pydantic model) and its secrets.
- ``main``: the lifecycle: start, reload on change or SIGHUP, drain on SIGTERM.
- ``protocol``: the lean HTTP/1.1 server side (uvloop + httptools), one connection each.
- ``dispatch``: what a request gets: auth, the deployment chosen, proxying, mirroring.
- ``auth``: keys and signed tokens.
- ``traffic``: traffic and mirror rules and the weighted choice.
- ``mirror``: what mirrored copies tell about a candidate deployment.
- ``upstream``: how the router reaches deployments (pooled keep-alive client).
- ``metrics``: the router's counters in Prometheus text format.
"""
