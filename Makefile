# workerscale's two commands are `make demo` (the main job, on the example rules) and
# `make test` (every test, against a real Prometheus and a real kube-apiserver). Both do
# their own set-up.
SHELL := bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN := bin/workerscale
EXAMPLES := rules/examples/luneo-render.yaml rules/examples/blizzard-workers.yaml
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test testenv demo lint bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/workerscale

# Installs prometheus/promtool (Debian), and builds etcd and kube-apiserver into
# ~/.cache/workerscale/bin when they are missing (about 5-10 minutes the first time).
testenv:
	hack/install-testenv.sh

# WORKERSCALE_TESTENV=required makes a test that needs a missing component fail, never skip.
test: testenv
	WORKERSCALE_TESTENV=required $(GO) test -count=1 ./...

bench: testenv
	WORKERSCALE_TESTENV=required $(GO) test -run '^$$' -bench . -benchmem ./...

demo: build
	@for f in $(EXAMPLES); do echo "\$$ workerscale check --rules $$f"; ./$(BIN) check --rules $$f || exit 1; echo; done
	@echo "\$$ workerscale concurrency --cpu 1 --memory 2Gi --rules rules/examples/luneo-render.yaml"
	@./$(BIN) concurrency --cpu 1 --memory 2Gi --rules rules/examples/luneo-render.yaml
	@echo
	@echo "\$$ workerscale concurrency --cpu 2 --memory 4Gi --rules rules/examples/luneo-render.yaml"
	@./$(BIN) concurrency --cpu 2 --memory 4Gi --rules rules/examples/luneo-render.yaml
	@echo
	@echo "\$$ workerscale explain --rules rules/examples/luneo-render.yaml --workload render --replicas 2 --class medium --set queueDepth=500 --set cpu=0.6 --set memory=0.5"
	@./$(BIN) explain --rules rules/examples/luneo-render.yaml --workload render --replicas 2 --class medium --set queueDepth=500 --set cpu=0.6 --set memory=0.5

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin
