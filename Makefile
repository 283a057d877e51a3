# ml-endpoints: every entry point a person or CI uses. Each target sets up what it needs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python
# Every pinned tool version (PULUMI_VERSION, KUBERNETES_VERSION, ...): the one copy.
include mlendpoints/versions.env
VERSION_KEYS := $(shell sed -n 's/^\([A-Z_]*\)=.*/\1/p' mlendpoints/versions.env)
export PULUMI_SKIP_UPDATE_CHECK := true

.PHONY: help setup python lint test test-fast bench deploy destroy versions

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

python: ## Python venv with the project and pinned deps (.venv)
	@scripts/setup_python.sh

setup: python toolchain images-setup cluster-build sample-model ## everything the tests and deploys need (cached: seconds when warm)

lint: python ## ruff check
	@.venv/bin/ruff check .

test-fast: python ## unit + mock + real-HTTP tiers only (while you work)
	@$(PY) -m pytest -q tests/unit tests/mocks tests/http

test: setup lint cluster-up ## the README's test command: set up everything, run every tier
	@$(PY) -m pytest -q tests

STACK ?= dev
deploy: setup cluster-up sample-model ## the main job: deploy the sample stack, score a request, print the scoring URI
	@scripts/deploy.sh $(STACK)

destroy: ## delete everything the stack deployed (keeps the cluster and caches)
	@scripts/deploy.sh --destroy $(STACK)

versions: ## the pinned tool versions (mlendpoints/versions.env), KEY=VALUE
	@$(foreach k,$(VERSION_KEYS),echo '$(k)=$($(k))';)

bench: python ## benchmarks (not tests): prints tables
	@$(PY) -m bench

# Each area keeps its targets in its own file: mk/toolchain.mk (Pulumi CLI, Docker, base
# image, wheelhouse, registry), mk/cluster.mk (local Kubernetes), mk/server.mk (sample model,
# server tests and bench), mk/router.mk, mk/components.mk.
-include mk/*.mk
