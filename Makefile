# Portico — every target a user runs. `make` (or `make help`) lists them.
# Bun is taken from PATH when it is at least the version pinned in package.json; otherwise (none,
# or an older one, which cannot read the lockfile) the pinned Bun is installed from npm into
# .tools/ first, so `make dev` and `make test` work on a fresh clone with only Node.js and npm.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BUN_VERSION := $(shell node -p "require('./package.json').devDependencies.bun" 2>/dev/null || echo 1.4.5)
SYSTEM_BUN := $(shell command -v bun 2>/dev/null)
SYSTEM_BUN_OK := $(if $(SYSTEM_BUN),$(shell printf '%s\n%s\n' "$(BUN_VERSION)" "$$("$(SYSTEM_BUN)" --version 2>/dev/null)" | sort -V -C && echo yes))
BUN ?= $(if $(SYSTEM_BUN_OK),$(SYSTEM_BUN),$(CURDIR)/.tools/node_modules/.bin/bun)
export PATH := $(dir $(BUN)):$(PATH)
SERVICE ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/node_modules/.bin/bun:
	@echo "no bun >= $(BUN_VERSION) on PATH$(if $(SYSTEM_BUN), ($(SYSTEM_BUN) is older)): installing bun@$(BUN_VERSION) from npm into .tools/"
	npm install --prefix .tools --no-save --no-audit --no-fund bun@$(BUN_VERSION)

node_modules/.installed: package.json bun.lock | $(BUN)
	$(BUN) install --frozen-lockfile
	@touch $@

.PHONY: install
install: node_modules/.installed ## Install dependencies (Bun first, if missing)

.PHONY: dev
dev: install ## Run the whole stack locally: 3 gateways, 3 webapps, 3 rpcapps (Ctrl-C stops all)
	$(BUN) scripts/dev.ts

.PHONY: certs
certs: install ## Make the local CA and certificates for TLS=1 make dev in .data/tls (TLS_DIR; EDGE_HOSTS adds names)
	$(BUN) scripts/tls/certs.ts

.PHONY: test
test: install typecheck lint ## Typecheck, lint, then run every test (CI=true: any skip or todo fails; ARGS=paths runs those only)
	$(BUN) scripts/test.ts $(ARGS)

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

.PHONY: bytecode-order
bytecode-order: install ## Re-record <service>/bytecode.order (what each binary runs first; make build lays it out first)
	$(BUN) scripts/bytecode-order.ts

.PHONY: bench
bench: install ## Proxy benchmark: direct, bare and bytes-only Bun proxies, nginx, HAProxy, Portico lean/full/gRPC, TLS rows (BENCH_SECONDS; BENCH_STACK=1 adds the full stack)
	$(BUN) bench/run.ts

.PHONY: up
up: install ## Build images in minikube and deploy k8s/ (prints the gateway URL)
	$(BUN) scripts/up.ts

.PHONY: down
down: install ## Delete the portico namespace from the cluster
	$(BUN) scripts/down.ts

# The cluster's UIs and admin port are ClusterIP only (k8s/networkpolicy.yaml admits no browser):
# each target below port-forwards one to 127.0.0.1 until Ctrl-C. KUBE_CONTEXT as for `make up`.
KUBE_CONTEXT ?= $(or $(MINIKUBE_PROFILE),minikube)
PORT_FORWARD = kubectl --context=$(KUBE_CONTEXT) -n portico port-forward

.PHONY: dashboard
dashboard: ## Port-forward the gateway admin port: http://127.0.0.1:9901/dashboard (after make up)
	$(PORT_FORWARD) svc/gateway-admin 9901

.PHONY: grafana
grafana: ## Port-forward Grafana: http://127.0.0.1:3000 (user admin, password printed by make up)
	$(PORT_FORWARD) svc/grafana 3000

.PHONY: prometheus
prometheus: ## Port-forward the cluster's Prometheus: http://127.0.0.1:9090
	$(PORT_FORWARD) svc/prometheus 9090

.PHONY: alertmanager
alertmanager: ## Port-forward Alertmanager: http://127.0.0.1:9093
	$(PORT_FORWARD) svc/alertmanager 9093

.PHONY: jaeger
jaeger: ## Port-forward Jaeger's UI: http://127.0.0.1:16686
	$(PORT_FORWARD) svc/jaeger 16686

.PHONY: monitor
monitor: install ## Run Prometheus locally against the make dev processes (needs prometheus)
	$(BUN) scripts/monitor.ts

.PHONY: rollout
rollout: install ## Roll SERVICE=<gateway|webapp|rpcapp> to a new image under load; fails if any request failed
	$(BUN) scripts/rollout.ts $(SERVICE)

.PHONY: rollback
rollback: install ## Undo the last rollout of SERVICE=<…> under load, with the same check
	$(BUN) scripts/rollback.ts $(SERVICE)

.PHONY: canary
canary: install ## Release a new SERVICE=<webapp|rpcapp> as a canary the gateways step up, judge, then promote or roll back (CANARY_FAULT=errors|latency: a drill)
	$(BUN) scripts/canary.ts $(SERVICE)

.PHONY: load
load: install ## Drive steady traffic through the gateway (LOAD_RPS, LOAD_NEW_CONN_RPS, LOAD_DURATION_S) to show autoscaling
	$(BUN) scripts/load.ts

.PHONY: docs
docs: install ## Regenerate docs/config-reference.md from the routes.yaml schema
	$(BUN) scripts/docs/config-reference.ts

.PHONY: clean
clean: ## Remove build output and local data
	rm -rf dist .data .artifacts
