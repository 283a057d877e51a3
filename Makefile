# ml-endpoints: every entry point a person or CI uses. Each target sets up what it needs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python
# Every pinned tool version (PULUMI_VERSION, KUBERNETES_VERSION, ...): the one copy.
include mlendpoints/versions.env
VERSION_KEYS := $(shell sed -n 's/^\([A-Z_]*\)=.*/\1/p' mlendpoints/versions.env)
export PULUMI_SKIP_UPDATE_CHECK := true

.PHONY: help setup python lint lint-tools test test-fast bench deploy destroy versions

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

python: ## Python venv with the project and pinned deps (.venv)
	@scripts/setup_python.sh

setup: python toolchain images-setup cluster-build sample-model ## everything the tests and deploys need (cached: seconds when warm)

# Every tracked shell script (scripts/*.sh, .ci/run, ...): by extension or by shebang.
SHELL_SCRIPTS = $(shell git ls-files '*.sh'; git grep -lIE '^\#!.*\b(ba)?sh\b' -- ':!*.sh' ':!*.md' 2>/dev/null)

lint-tools: ## shellcheck from Debian when missing (ruff and mypy come with `make python`)
	@command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null \
	  || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }

lint: python lint-tools ## ruff check, ruff format --check, mypy (pyproject's [tool.mypy]), shellcheck
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@$(PY) -m mypy
	@shellcheck -x $(SHELL_SCRIPTS)

test-fast: python ## the tiers that need no toolchain or cluster (unit, mocks, http, hardening, compat)
	@$(PY) -m pytest -q tests/unit tests/mocks tests/http tests/hardening tests/compat

test: setup lint cluster-up ## the README's test command: set up everything, run every tier
	@$(PY) -m pytest -q --durations=30 tests

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
