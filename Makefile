# workerscale's two commands are `make demo` (the main job, on the example rules) and
# `make test` (every test, against a real Prometheus and a real kube-apiserver). Both do
# their own set-up.
SHELL := bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN := bin/workerscale
EXAMPLES := rules/examples/luneo-render.yaml rules/examples/blizzard-workers.yaml
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test testenv demo lint bench generate clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/workerscale

# Installs prometheus/promtool and redis-server (Debian), the BullMQ fleet's npm packages
# (npm ci), and builds etcd and kube-apiserver into
# ~/.cache/workerscale/bin when they are missing (about 5-10 minutes the first time).
testenv:
	hack/install-testenv.sh

# WORKERSCALE_TESTENV=required makes a test that needs a missing component fail, never skip.
test: testenv
	WORKERSCALE_TESTENV=required $(GO) test -count=1 ./...

# The recorded arrival traces, read from ../shared/traces when they are there.
TRACES := $(if $(wildcard ../shared/traces/*.csv),--trace ../shared/traces --mean-rate 2,)

# Go benchmarks (speed and memory), then the policy benchmark: every built-in scenario and
# every recorded trace, for every policy, on the seed examples' rules (docs/benchmark.md).
bench: build testenv
	WORKERSCALE_TESTENV=required $(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...
	@echo
	./$(BIN) simulate --rules rules/examples/luneo-render.yaml --workload render --scenario all $(TRACES)
	@echo
	./$(BIN) simulate --rules rules/examples/blizzard-workers.yaml --workload characters --scenario all --rate 20 $(subst --mean-rate 2,--mean-rate 20,$(TRACES))

# The main job, for real (hack/demo, internal/demo): the built binary on a realistic cluster
# with a real BullMQ fleet, Prometheus and Redis, through a burst; about 2 minutes. It prints
# the controller's decisions and a summary, and draws the run into bin/demo.svg.
# DRYRUN=1 runs the controller with --dry-run. Ctrl-C stops everything it started.
DRYRUN ?=
demo: build testenv
	@for f in $(EXAMPLES); do echo "\$$ workerscale check --rules $$f"; ./$(BIN) check --rules $$f || exit 1; done
	@$(GO) build -o bin/demo ./hack/demo
	@echo
	@./bin/demo --workerscale $(BIN) --plot bin/demo.svg $(if $(filter 1 true yes,$(DRYRUN)),--dry-run,)

# Regenerates dashboards/, deploy/prometheus/ and deploy/alertmanager/ from the example rules,
# and deploy/components/kube-prometheus-stack/generated/ from deploy/base/rules.yaml (a test
# fails when they differ from what render writes).
generate:
	$(GO) test ./internal/render -run TestCheckedInFilesAreGenerated -update

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin
