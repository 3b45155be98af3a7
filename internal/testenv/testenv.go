// Package testenv starts real components for integration tests: a Prometheus server, a
// VictoriaMetrics server, and etcd with a kube-apiserver (and, for a realistic cluster,
// kube-controller-manager, kube-scheduler and kwok), a Redis with a BullMQ fleet (the npm
// bullmq package's exporter, producers and workers, run by node), each on free loopback
// ports with its data in the test's temporary directory, stopped when the test ends.
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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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

// binary finds a component, or ends the test: a failure under `make test`, a skip under
// a plain `go test`.
func binary(t testing.TB, path string) string {
	t.Helper()
	if filepath.Base(path) == path {
		if p, err := exec.LookPath(path); err == nil {
			return p
		}
	} else if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return path
	}
	msg := fmt.Sprintf("test environment: %s not found; run hack/install-testenv.sh (make test does)", path)
	if os.Getenv(RequiredEnv) == "required" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a started component.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs a component with its output in a log file, killed with the test (and with
// the test binary, should that die first).
func start(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	return startWithEnv(t, name, nil, bin, args...)
}

// startWithEnv is start with variables added to the test's environment.
func startWithEnv(t testing.TB, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	p, err := startIn(t.TempDir(), name, env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("last lines of %s's log (%s):\n%s", name, p.log, tail(p.log, 30))
		}
	})
	return p
}

// startIn runs a component with its output in dir/name.log, killed with the test binary
// should that die first. The caller stops it; startIn may be called from any goroutine.
func startIn(dir, name string, env []string, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after 10 s. Stopping twice is harmless.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls check until it succeeds, the process exits, or the timeout passes.
func (p *process) waitReady(t testing.TB, timeout time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready (%v); its log:\n%s", p.name, p.err, tail(p.log, 40))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = check(ctx)
		cancel()
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s was not ready after %s: %v; its log:\n%s", p.name, timeout, last, tail(p.log, 40))
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
