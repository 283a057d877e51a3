# Components and stacks (issue 6): fast tiers while you work, and the real-CLI preview tier.
.PHONY: test-components test-preview

test-components: python ## components: unit + Pulumi-mock tiers (no CLI, no cluster)
	@$(PY) -m pytest -q -m components tests/unit tests/mocks

test-preview: python ## components: real Pulumi CLI via the Automation API (needs `make setup`)
	@$(PY) -m pytest -q tests/preview

.PHONY: bench-rollout
bench-rollout: setup cluster-up ## benchmark (not a test): first up, preview and traffic-shift times on a throwaway dev stack (prints a table)
	@$(PY) -m bench rollout
