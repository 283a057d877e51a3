# Local single-node Kubernetes (scripts/cluster.sh, docs/cluster.md). Root is needed: it runs
# containerd, the kubelet and iptables directly on the machine.
.PHONY: cluster-build cluster-up cluster-down cluster-status test-cluster

cluster-build: ## build-or-reuse the Kubernetes components, CoreDNS, pause and the add-ons (cached)
	@scripts/cluster.sh build

cluster-up: ## start the local cluster; kubeconfig in $ML_ENDPOINTS_CACHE/cluster/kubeconfig
	@scripts/cluster.sh up

cluster-down: ## stop the local cluster and remove its pods, network rules and state
	@scripts/cluster.sh down

cluster-status: ## what the local cluster runs
	@scripts/cluster.sh status

test-cluster: python cluster-up ## the cluster tier: real pods, Services, rollouts, add-ons
	@$(PY) -m pytest -q -m cluster tests/cluster
