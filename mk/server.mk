# Inference server (scoring/server/, docs/server.md): its tests, the sample model,
# and the benchmark against azmlinfsrv / MLServer / bare Starlette.
.PHONY: test-server sample-model bench-server

# Its tests: the modules marked `server` (pytestmark; markers registered in pyproject.toml).

test-server: python ## inference server: unit + real-HTTP + hardening tests (servers on 127.0.0.1)
	@$(PY) -m pytest -q -m server tests/unit tests/http tests/hardening

sample-model: python ## train samples/diabetes/model (v1) and model-v2 (for a green deployment)
	@$(PY) samples/diabetes/train.py --out samples/diabetes/model
	@$(PY) samples/diabetes/train.py --out samples/diabetes/model-v2 --version 2

bench-server: python ## benchmark (not a test): needs wrk (apt-get install -y wrk); peers cached
	@command -v wrk >/dev/null || { echo "bench-server: wrk missing: apt-get install -y wrk"; exit 1; }
	@$(PY) -m bench.server
