// Package testenv starts real components for integration tests: a Prometheus server, a
// VictoriaMetrics server, and etcd with a kube-apiserver (and, for a realistic cluster,
// kube-controller-manager, kube-scheduler and kwok), a Redis with a BullMQ fleet (the npm
// bullmq package's exporter, producers and workers, run by node), each on free loopback
// ports with its data in the test's temporary directory, stopped when the test ends.
//
// A program (the demo) uses the same components through an Env: its methods return errors
// instead of ending a test, and its Close stops everything started, in reverse order, each
// component with its whole process group, and removes the temporary directory. The
// functions taking a testing.TB are thin wrappers over them.
//
// The binaries come from `hack/install-testenv.sh` (Prometheus and redis-server from
// Debian's packages; etcd, the Kubernetes components, kwok and VictoriaMetrics built from
// the Go module proxy into a cache outside the repository; the fleet's npm packages
// installed with `npm ci` into the same cache). `make test` runs that script and sets
// WORKERSCALE_TESTENV=required, under which a missing binary fails the test; a plain
// `go test` skips such tests instead.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// EtcdVersion is the etcd the script builds; keep it equal to ETCD_VERSION in
// hack/install-testenv.sh (a test checks).
const EtcdVersion = "v3.6.16"

// VictoriaMetricsVersion is the single-node VictoriaMetrics the script builds; keep it equal
// to VICTORIA_METRICS_VERSION in hack/install-testenv.sh (a test checks).
const VictoriaMetricsVersion = "v1.151.0"

// RequiredEnv names the environment variable that turns a missing component from a skip
// into a failure. `make test` sets it.
const RequiredEnv = "WORKERSCALE_TESTENV"

// BinDir is where the built binaries are cached: $WORKERSCALE_CACHE/bin, by default
// ~/.cache/workerscale/bin.
func BinDir() string {
	root := os.Getenv("WORKERSCALE_CACHE")
	if root == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		root = filepath.Join(cache, "workerscale")
	}
	return filepath.Join(root, "bin")
}

// KubeVersion is the Kubernetes version matching the client-go this module requires
// (client-go v0.X.Y goes with Kubernetes v1.X.Y), read from the go.mod above the working
// directory, which is the package directory under `go test`.
func KubeVersion() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	m := clientGoRequire.FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s does not require k8s.io/client-go v0.X.Y", filepath.Join(root, "go.mod"))
	}
	return "v1." + string(m[1]), nil
}

// moduleRoot is the directory of the go.mod above the working directory, which is the
// package directory under `go test`.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

var clientGoRequire = regexp.MustCompile(`(?m)^\s*k8s\.io/client-go v0\.(\S+)`)

// Command finds a command the tests need (such as promtool) on PATH, or ends the test: a
// failure under `make test`, a skip under a plain `go test`.
func Command(t testing.TB, name string) string {
	t.Helper()
	return binary(t, name)
}

// Kubectl is the kubectl the install script builds (of the kube-apiserver's version), or
// ends the test as binary does.
func Kubectl(t testing.TB) string {
	t.Helper()
	version, err := KubeVersion()
	if err != nil {
		t.Fatalf("test environment: %v", err)
	}
	return binary(t, filepath.Join(BinDir(), "kubectl-"+version))
}

// httpOK is a readiness check: GET url answers 200.
func httpOK(client *http.Client, url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Workerscale is the workerscale binary for tests that run it as its own process:
// $WORKERSCALE_BIN when set (`make demo` builds it), else one built now into a temporary
// directory.
func Workerscale(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("WORKERSCALE_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "workerscale")
	build := exec.Command("go", "build", "-o", bin, "github.com/workerscale/workerscale/cmd/workerscale")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building workerscale: %v\n%s", err, out)
	}
	return bin
}

// Eventually retries check every 250ms until it returns nil, or fails the test with its
// last error after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
