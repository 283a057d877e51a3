# Endpoint router (scoring/router/): its tests and benchmark. Docs: docs/router.md.
.PHONY: test-router bench-router router-bench-tools

# Its tests: the modules marked `router` (pytestmark; markers registered in pyproject.toml).
# The real-server tests and the benchmark serve the sample model (mk/server.mk trains it).
ROUTER_SAMPLE := samples/diabetes/model/model.pkl

$(ROUTER_SAMPLE):
	@$(MAKE) --no-print-directory sample-model

test-router: python $(ROUTER_SAMPLE) ## router: unit + real-HTTP tests (echo upstreams and real inference servers)
	@$(PY) -m pytest -q -m router tests/unit tests/http tests/hardening

router-bench-tools: ## wrk and HAProxy from Debian (the router benchmark's load generator and anchor)
	@command -v wrk >/dev/null && command -v haproxy >/dev/null || apt-get install -y wrk haproxy

bench-router: python router-bench-tools $(ROUTER_SAMPLE) ## router vs HAProxy vs direct, 1/8/64 connections (prints a table)
	@$(PY) -m bench.router
