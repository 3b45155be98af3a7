#!/usr/bin/env bash
# Installs what the integration tests need, each piece only when it is missing:
#   - prometheus, promtool and redis-server from Debian's packages (node and npm too, when
#     they are missing);
#   - the BullMQ fleet's npm packages (internal/testenv/bullmq), with `npm ci` from its
#     checked-in package-lock.json, into the cache keyed by the lock file's hash;
#   - etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and
#     VictoriaMetrics' single-node server, built from the Go module proxy and cached outside
#     the repository, keyed by version, so a second run costs nothing;
#   - the VerticalPodAutoscaler module, into the Go module cache, for its CRD (the tests read
#     it from there; nothing of it is copied into the repository).
# Prints nothing but progress; the test harness (internal/testenv) finds the binaries
# through the same cache directory (see `hack/install-testenv.sh --print-dir`).
set -euo pipefail

# kube-apiserver follows the client-go in go.mod: client-go v0.X.Y goes with Kubernetes v1.X.Y.
cd "$(dirname "$0")/.."
if [[ -z "${KUBE_VERSION:-}" ]]; then
  client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go \(v0\.[0-9.]*\).*#\1#p' go.mod | head -n 1)
  [[ -n "$client_go" ]] || { echo "install-testenv: go.mod does not require k8s.io/client-go" >&2; exit 1; }
  KUBE_VERSION="v1.${client_go#v0.}"
fi
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
VICTORIA_METRICS_VERSION="${VICTORIA_METRICS_VERSION:-v1.151.0}"
VPA_VERSION="${VPA_VERSION:-v1.8.1}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${WORKERSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workerscale}"
BIN_DIR="$CACHE_ROOT/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

log() { printf '[install-testenv] %s\n' "$*" >&2; }

install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return
  fi
  log "installing prometheus and promtool from Debian's packages"
  local sudo=""
  [[ "$(id -u)" == "0" ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service on boot-capable machines; the tests run their own.
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
}

# install_debian COMMAND PACKAGE: installs a Debian package when its command is missing.
install_debian() {
  command -v "$1" >/dev/null && return
  log "installing $2 from Debian's packages"
  local sudo=""
  [[ "$(id -u)" == "0" ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  # A package may start a system service; the tests run their own server on a free port.
  $sudo systemctl disable --now "$2" >/dev/null 2>&1 || true
}

# install_bullmq_fleet: `npm ci` of internal/testenv/bullmq into the cache, in a directory
# named after the lock file's hash (testenv.BullMQModules computes the same), so a changed
# lock file gets a fresh install and an unchanged one costs nothing.
install_bullmq_fleet() {
  local src="internal/testenv/bullmq"
  local hash
  hash=$(sha256sum "$src/package-lock.json" | cut -c1-12)
  local dir="$CACHE_ROOT/node/bullmq-$hash"
  [[ -f "$dir/node_modules/bullmq/package.json" ]] && return
  log "installing the BullMQ fleet's npm packages with npm ci (a few seconds)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# build_in_helper NAME VERSION DIR: builds in a throwaway module kept under the cache, so
# none of the Kubernetes or etcd dependencies reach the project's own go.mod.
build_etcd() {
  local out="$BIN_DIR/etcd-$ETCD_VERSION"
  [[ -x "$out" ]] && return
  log "building etcd $ETCD_VERSION (about a minute)"
  local dir="$CACHE_ROOT/src/etcd-$ETCD_VERSION"
  mkdir -p "$dir" "$BIN_DIR"
  cat >"$dir/main.go" <<'GO'
// Command etcd is etcd's server, built from its module for the test environment.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$dir"
    [[ -f go.mod ]] || go mod init workerscale.test/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    CGO_ENABLED=0 go build -trimpath -o "$out.tmp" .
  )
  mv "$out.tmp" "$out"
}

# build_victoria_metrics: the single-node server. Its module has no replace directives, so
# `go install pkg@version` builds it in module mode with the module's own go.sum, touching
# no go.mod here. Pure Go (CGO_ENABLED=0), as VictoriaMetrics' own "-pure" builds.
build_victoria_metrics() {
  local out="$BIN_DIR/victoria-metrics-$VICTORIA_METRICS_VERSION"
  [[ -x "$out" ]] && return
  log "building victoria-metrics $VICTORIA_METRICS_VERSION (about a minute on 2 cores)"
  mkdir -p "$BIN_DIR"
  local gobin
  gobin=$(mktemp -d)
  local pkg="github.com/VictoriaMetrics/VictoriaMetrics"
  CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X $pkg/lib/buildinfo.Version=victoria-metrics-$VICTORIA_METRICS_VERSION" \
    "$pkg/app/victoria-metrics@$VICTORIA_METRICS_VERSION"
  mv "$gobin/victoria-metrics" "$out.tmp"
  rmdir "$gobin"
  mv "$out.tmp" "$out"
}

# build_kwok: kwok fakes the kubelet of the nodes it manages (pods become Ready without
# running). Its module builds with `go install pkg@version`, as VictoriaMetrics does; the
# module is then in the module cache too, where testenv reads its Stage files.
build_kwok() {
  local out="$BIN_DIR/kwok-$KWOK_VERSION"
  [[ -x "$out" ]] && return
  log "building kwok $KWOK_VERSION (about 4 minutes on 2 cores)"
  mkdir -p "$BIN_DIR"
  local gobin
  gobin=$(mktemp -d)
  CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$gobin/kwok" "$out.tmp"
  rmdir "$gobin"
  mv "$out.tmp" "$out"
}

# fetch_kwok_stages: kwok's module holds the Stage files (kustomize/stage/*/fast) that make
# nodes and pods Ready; testenv reads them from the module cache.
fetch_kwok_stages() {
  go mod download "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null
}

build_kube() {
  local component="$1"
  local out="$BIN_DIR/$component-$KUBE_VERSION"
  [[ -x "$out" ]] && return
  log "building $component $KUBE_VERSION (about 10 minutes on 2 cores when nothing is cached)"
  local dir="$CACHE_ROOT/src/kubernetes-$KUBE_VERSION"
  mkdir -p "$dir" "$BIN_DIR"
  (
    cd "$dir"
    if [[ ! -f go.mod ]]; then
      local staging="v0.${KUBE_VERSION#v1.}"
      local gomod
      gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
      {
        echo "module workerscale.test/kubernetes"
        echo
        echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
        echo
        echo "require k8s.io/kubernetes $KUBE_VERSION"
        echo
        echo "replace ("
        # k8s.io/kubernetes replaces each staging module with a local path; we use the
        # published module of the matching staging version instead.
        sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$#\t\1 => \1 '"$staging"'#p' "$gomod"
        echo ")"
      } >go.mod.tmp
      mv go.mod.tmp go.mod
    fi
    # Each command built is pinned in tools.go; one not there yet is added and the
    # module tidied again (a helper module made for kube-apiserver alone lacks kubectl's).
    if ! grep -q "\"k8s.io/kubernetes/cmd/$component\"" tools.go 2>/dev/null; then
      {
        echo "//go:build tools"
        echo
        echo "// Package tools pins the Kubernetes commands the test environment builds."
        echo "package tools"
        echo
        echo "import ("
        for c in $(sed -n 's#^[[:space:]]*_ "k8s.io/kubernetes/cmd/\(.*\)"$#\1#p' tools.go 2>/dev/null) "$component"; do
          echo "	_ \"k8s.io/kubernetes/cmd/$c\""
        done
        echo ")"
      } >tools.go.tmp
      mv tools.go.tmp tools.go
      go mod tidy >/dev/null
    fi
    local pkg="k8s.io/component-base/version"
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
      -o "$out.tmp" "k8s.io/kubernetes/cmd/$component"
  )
  mv "$out.tmp" "$out"
}

# fetch_vpa_crd: the VerticalPodAutoscaler's module holds its CRD; testenv.VPACRD reads it.
fetch_vpa_crd() {
  go mod download "k8s.io/autoscaler/vertical-pod-autoscaler@$VPA_VERSION" >/dev/null
}

# fetch_monitoring_crds: the prometheus-operator's module holds its CRDs (ServiceMonitor,
# PrometheusRule); testenv.MonitoringCRD reads them.
fetch_monitoring_crds() {
  go mod download "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" >/dev/null
}

install_prometheus
install_debian redis-server redis-server
install_debian node nodejs
install_debian npm npm
install_bullmq_fleet
fetch_vpa_crd
fetch_monitoring_crds
build_etcd
build_victoria_metrics
build_kube kube-apiserver
# kubectl: the CLI test runs workerscale through it as the kubectl plugin kubectl-workerscale.
build_kube kubectl
# The realistic cluster (testenv.StartRealisticCluster): controllers, scheduler, fake kubelets.
build_kube kube-controller-manager
build_kube kube-scheduler
fetch_kwok_stages
build_kwok
log "ready: $(ls "$BIN_DIR" | tr '\n' ' ')"
