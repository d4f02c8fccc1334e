# Portico — every target a user runs. `make` (or `make help`) lists them.
# Bun is taken from PATH; on a machine with only Node.js and npm, the pinned Bun from package.json
# is installed into .tools/ first, so `make dev` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BUN_VERSION := $(shell node -p "require('./package.json').devDependencies.bun" 2>/dev/null || echo 1.4.5)
BUN ?= $(shell command -v bun 2>/dev/null || echo $(CURDIR)/.tools/node_modules/.bin/bun)
export PATH := $(dir $(BUN)):$(PATH)
SERVICE ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/node_modules/.bin/bun:
	@echo "bun not found on PATH: installing bun@$(BUN_VERSION) from npm into .tools/"
	npm install --prefix .tools --no-save --no-audit --no-fund bun@$(BUN_VERSION)

node_modules/.installed: package.json bun.lock | $(BUN)
	$(BUN) install --frozen-lockfile
	@touch $@

.PHONY: install
install: node_modules/.installed ## Install dependencies (Bun first, if missing)

.PHONY: dev
dev: install ## Run the whole stack locally: 3 gateways, 3 webapps, 3 rpcapps (Ctrl-C stops all)
	$(BUN) scripts/dev.ts

.PHONY: test
test: install typecheck lint ## Typecheck, lint, then run every test (CI=true: any skip or todo fails)
	$(BUN) scripts/test.ts

.PHONY: typecheck
typecheck: install ## Type-check the whole repository (strict)
	$(BUN) x tsc --noEmit -p .

ROUTES ?= gateway/routes.yaml

.PHONY: check-config
check-config: install ## Validate a routes file as the gateway would load it, like nginx -t (ROUTES=path; gateway/routes.yaml)
	$(BUN) gateway/src/main.ts --check $(ROUTES)

.PHONY: lint
lint: install ## Format and lint check (Biome); `make format` rewrites files in place
	$(BUN) x biome check .

.PHONY: format
format: install ## Format every source file and apply safe lint fixes (Biome)
	$(BUN) x biome check --write .

.PHONY: smoke
smoke: install ## Seed requests + load-balancing check through the gateway (GATEWAY_URL, else make dev / minikube)
	$(BUN) scripts/smoke.ts

.PHONY: build
build: install ## Compile each service into a single binary in dist/
	$(BUN) scripts/build.ts

.PHONY: bench
bench: install ## Proxy benchmark: direct, bare Bun, nginx, HAProxy, Portico lean/full/gRPC (BENCH_SECONDS; BENCH_STACK=1 adds the full stack)
	$(BUN) bench/run.ts

.PHONY: up
up: install ## Build images in minikube and deploy k8s/ (prints the gateway URL)
	$(BUN) scripts/up.ts

.PHONY: down
down: install ## Delete the portico namespace from the cluster
	$(BUN) scripts/down.ts

.PHONY: monitor
monitor: install ## Run Prometheus locally against the make dev processes (needs prometheus)
	$(BUN) scripts/monitor.ts

.PHONY: rollout
rollout: install ## Roll SERVICE=<gateway|webapp|rpcapp> to a new image under load; fails if any request failed
	$(BUN) scripts/rollout.ts $(SERVICE)

.PHONY: rollback
rollback: install ## Undo the last rollout of SERVICE=<…> under load, with the same check
	$(BUN) scripts/rollback.ts $(SERVICE)

.PHONY: load
load: install ## Drive steady traffic through the gateway (LOAD_RPS, LOAD_DURATION_S) to show autoscaling
	$(BUN) scripts/load.ts

.PHONY: docs
docs: install ## Regenerate docs/config-reference.md from the routes.yaml schema
	$(BUN) scripts/docs/config-reference.ts

.PHONY: clean
clean: ## Remove build output and local data
	rm -rf dist .data .artifacts
