package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrMissing is wrapped by the errors about a component that is not installed: under a
// plain `go test` the testing.TB forms skip on it, under `make test` they fail.
var ErrMissing = errors.New("not installed; run hack/install-testenv.sh (make test does)")

// Env is what a program (or one call of a testing.TB form) started: processes, servers
// and files in one temporary directory. Close stops them in the reverse order of their
// start and removes the directory. The Env methods return errors; the package's functions
// that take a testing.TB are thin wrappers over them that end the test instead.
type Env struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex
	stack  []func()
	procs  []*process
	closed bool
}

// NewEnv makes an Env whose files live in a new directory under parent (os.TempDir() when
// empty) and which logs what it starts and stops to log (nothing when nil).
func NewEnv(parent string, log io.Writer) (*Env, error) {
	if log == nil {
		log = io.Discard
	}
	dir, err := os.MkdirTemp(parent, "workerscale-env-")
	if err != nil {
		return nil, fmt.Errorf("test environment: %w", err)
	}
	return &Env{dir: dir, log: slog.New(slog.NewTextHandler(log, nil))}, nil
}

// envFor is the Env of one call of a testing.TB form: closed when the test ends, after it
// logged the last lines of its processes' logs if the test failed.
func envFor(t testing.TB) *Env {
	t.Helper()
	e, err := NewEnv("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range e.processes() {
				t.Logf("last lines of %s's log (%s):\n%s", p.name, p.log, tail(p.log, 30))
			}
		}
		e.Close()
	})
	return e
}

// check ends the test when err is not nil: a skip when a component is missing under a
// plain `go test`, a failure otherwise.
// SkipMissing ends a test whose err says a component of the test environment is missing
// (ErrMissing), as the testing.TB functions do: a failure under make test
// (WORKERSCALE_TESTENV=required), a skip under a plain go test. Any other err is the
// caller's to judge.
func SkipMissing(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrMissing) {
		check(t, err)
	}
}

func check(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && os.Getenv(RequiredEnv) != "required" {
		t.Skip(err)
	}
	t.Fatal(err)
}

// Dir is the Env's temporary directory, removed by Close.
func (e *Env) Dir() string { return e.dir }

// TempDir makes a new directory inside Dir.
func (e *Env) TempDir(name string) (string, error) {
	dir, err := os.MkdirTemp(e.dir, name+"-")
	if err != nil {
		return "", fmt.Errorf("test environment: %w", err)
	}
	return dir, nil
}

// Defer adds f to what Close runs, before what was added earlier.
func (e *Env) Defer(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stack = append(e.stack, f)
}

// Close stops everything the Env started, the last started first, and removes its
// directory. Closing twice is harmless.
func (e *Env) Close() {
	e.mu.Lock()
	stack := e.stack
	e.stack, e.closed = nil, true
	e.mu.Unlock()
	for i := len(stack) - 1; i >= 0; i-- {
		stack[i]()
	}
	if err := os.RemoveAll(e.dir); err != nil {
		e.log.Warn("removing the test environment's directory", "dir", e.dir, "err", err)
	}
}

func (e *Env) processes() []*process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*process(nil), e.procs...)
}

// lookBinary finds a component: a name on PATH, or a path.
func lookBinary(path string) (string, error) {
	if filepath.Base(path) == path {
		if p, err := exec.LookPath(path); err == nil {
			return p, nil
		}
	} else if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return path, nil
	}
	return "", fmt.Errorf("test environment: %s %w", path, ErrMissing)
}

// binary finds a component, or ends the test: a failure under `make test`, a skip under
// a plain `go test`.
func binary(t testing.TB, path string) string {
	t.Helper()
	p, err := lookBinary(path)
	check(t, err)
	return p
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	check(t, err)
	return port
}

// freePorts returns n ports as freePort does.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// process is a started component, the leader of its own process group.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Process is a process an Env started.
type Process struct{ proc *process }

// Stop ends the process and all its process group: SIGTERM, then SIGKILL after 10 s. It
// returns how the process exited. Stopping twice is harmless.
func (p *Process) Stop() error {
	p.proc.stop()
	return p.proc.err
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.proc.done }

// Err is how the process exited, once Done is closed.
func (p *Process) Err() error { return p.proc.err }

// Tail is the last n lines of the process's log (its standard error, and its standard
// output unless the Env was given a writer for it).
func (p *Process) Tail(n int) string { return tail(p.proc.log, n) }

// Start runs bin with args in its own process group, with env added to the program's
// environment, its standard output written to stdout (to its log file when nil) and its
// standard error to its log file; Close stops it.
func (e *Env) Start(name string, env []string, stdout io.Writer, bin string, args ...string) (*Process, error) {
	p, err := e.start(name, env, stdout, bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{proc: p}, nil
}

// start runs a component with its output in a log file in the Env's directory, killed with
// the program should that die first, and stopped by Close.
func (e *Env) start(name string, env []string, stdout io.Writer, bin string, args ...string) (*process, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("starting %s: the test environment is closed", name)
	}
	dir, err := e.TempDir(name)
	if err != nil {
		return nil, err
	}
	p, err := startIn(dir, name, env, stdout, bin, args...)
	if err != nil {
		return nil, err
	}
	e.log.Info("started", "name", name, "pid", p.cmd.Process.Pid, "log", p.log)
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	e.Defer(func() {
		p.stop()
		e.log.Info("stopped", "name", name, "pid", p.cmd.Process.Pid)
	})
	return p, nil
}

// start runs a component with its output in a log file, killed with the test (and with
// the test binary, should that die first).
func start(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	p, err := envFor(t).start(name, nil, nil, bin, args...)
	check(t, err)
	return p
}

// startIn runs a component with its output in dir/name.log (its standard output in stdout
// when not nil), as the leader of a new process group, killed with the program should that
// die first. The caller stops it; startIn may be called from any goroutine.
func startIn(dir, name string, env []string, stdout io.Writer, bin string, args ...string) (*process, error) {
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
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// Its own process group, so that a terminal's Ctrl-C reaches the program alone (which
	// then stops its components in order) and stop reaches the component's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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

// stop ends the process's group: SIGTERM, then SIGKILL after 10 s, and SIGKILL to whatever
// of the group outlived its leader. Stopping twice is harmless.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // ESRCH once the group is empty
}

// ready polls check until it succeeds, the process exits, ctx ends or the timeout passes.
func (p *process) ready(ctx context.Context, timeout time.Duration, check func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); its log:\n%s", p.name, p.err, tail(p.log, 40))
		default:
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		last = check(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s was not ready after %s: %v; its log:\n%s", p.name, timeout, last, tail(p.log, 40))
			}
			return fmt.Errorf("waiting for %s: %w", p.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitReady is ready for a test: it ends the test when the process is not ready.
func (p *process) waitReady(t testing.TB, timeout time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	if err := p.ready(t.Context(), timeout, check); err != nil {
		t.Fatal(err)
	}
}
