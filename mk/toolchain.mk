# Pulumi toolchain and image pipeline (issue 3; docs/toolchain.md). Each target is cached and
# idempotent: a second run takes seconds. Shell use: `. scripts/env.sh` puts pulumi on PATH.
.PHONY: toolchain docker registry base-image wheelhouse images-setup test-toolchain test-images

toolchain: ## Pulumi CLI, Python language host, Kubernetes provider (release binaries online, built from Go modules offline)
	@scripts/setup_pulumi.sh

docker: ## Docker engine from Debian's packages, started and left running
	@scripts/setup_docker.sh

registry: ## local image registry on 127.0.0.1:5000 (Debian's docker-registry), left running
	@scripts/registry.sh

base-image: docker registry ## Python 3.11 base image: python:3.11-slim if pullable, else debootstrap (cached)
	@scripts/base_image.sh

wheelhouse: python ## wheels for the sample scoring image, so image builds run with --network none
	@scripts/wheelhouse.sh >/dev/null

images-setup: docker registry base-image wheelhouse ## everything image builds need

test-toolchain: python toolchain ## real Pulumi CLI + Kubernetes provider through the Automation API
	@$(PY) -m pytest -q -m toolchain tests/toolchain

test-images: python toolchain images-setup ## build, run, score and push a scoring image offline
	@$(PY) -m pytest -q -m images tests/toolchain
