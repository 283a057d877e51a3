"""The primitives both programs share, one owner each.

- ``request_id``: echo a sane ``x-request-id`` or mint one.
- ``http_errors``: the error base class and the one JSON error body.
- ``logs``: the one JSON log-line format and its timestamps.
- ``prometheus``: latency histogram buckets and the Prometheus text format.
"""
