"""Helpers the test tiers share (never test modules or conftests imported by others).

- load.py: a bounded background load (rollouts under traffic)
- serving.py: train the sample model, start the inference server
- attacks.py: scoring scripts that attack the server, log and metric readers (tests/hardening)
- router.py: router test keys, echo upstreams, a router process, Prometheus samples
- pulumi_mocks.py: recording Pulumi mocks (tests/mocks)
- preview.py: the preview tier's throwaway project (tests/preview)
- walkthrough.py: the README's blue/green walkthrough runner (tests/e2e)

Helpers the benchmarks need too live in the package: mlendpoints/_procs.py (loopback processes),
mlendpoints/kube.py (kubectl), mlendpoints/client.py (the endpoint client),
mlendpoints/_project.py (the stack copy), mlendpoints/_sample.py (the sample's answers).
"""
