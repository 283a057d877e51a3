# Pulumi toolchain and image pipeline (issue 3; docs/toolchain.md). Each target is cached and
# idempotent: a second run takes seconds. Shell use: `. scripts/env.sh` puts pulumi on PATH.
.PHONY: toolchain docker registry base-image wheelhouse buildkit images-setup test-toolchain test-images

toolchain: ## Pulumi CLI, Python language host, Kubernetes and docker-build providers (release binaries online, built from Go modules offline)
	@scripts/setup_pulumi.sh

docker: ## Docker engine from Debian's packages, started and left running
	@scripts/setup_docker.sh

registry: ## local image registry on 127.0.0.1:5000 (Debian's docker-registry), left running
	@scripts/registry.sh

base-image: docker registry ## Python 3.11 base image: python:3.11-slim if pullable, else debootstrap (cached)
	@scripts/base_image.sh

wheelhouse: python ## wheels for the sample scoring image, so image builds run with --network none
	@scripts/wheelhouse.sh >/dev/null

buildkit: registry ## buildkitd + buildx built from Go modules, buildkitd started, registered as buildx builder ml-endpoints
	@scripts/buildkit.sh

images-setup: docker registry base-image wheelhouse buildkit ## everything image builds need

test-toolchain: python toolchain ## real Pulumi CLI + Kubernetes provider through the Automation API
	@$(PY) -m pytest -q -m toolchain tests/toolchain

test-images: python toolchain images-setup ## build (pulumi-docker-build + BuildKit), push, run and score a scoring image offline
	@$(PY) -m pytest -q -m images tests/toolchain
