package testenv

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a running redis-server, without persistence, on a loopback port.
type Redis struct {
	// Addr is the server's host:port.
	Addr string
	proc *process
}

// StartRedis starts a redis-server (Debian's package, which hack/install-testenv.sh
// installs; never the system service) on a free port, with nothing saved to disk, and
// waits until it answers PING. It is stopped with the test.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r, err := envFor(t).StartRedis(t.Context())
	check(t, err)
	return r
}

// StartRedis starts a redis-server as the function StartRedis does; Close stops it.
func (e *Env) StartRedis(ctx context.Context) (*Redis, error) {
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := e.TempDir("redis")
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	r.proc, err = e.start("redis-server", nil, nil, bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
	)
	if err != nil {
		return nil, err
	}
	return r, r.proc.ready(ctx, 20*time.Second, r.ping)
}

// ping sends PING in Redis's inline protocol and expects +PONG.
func (r *Redis) ping(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return fmt.Errorf("dialing redis: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("writing PING: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the PING reply: %w", err)
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// BullMQJobType is one type of job a producer adds: Count jobs named Name whose handler
// sleeps Duration, then fails when Fail is set. A Priority above 0 puts the jobs in
// BullMQ's prioritized state instead of waiting.
type BullMQJobType struct {
	Name     string
	Duration time.Duration
	Count    int
	Priority int
	Fail     bool
}

// MarshalJSON writes the job type as internal/testenv/bullmq/fleet.js reads it.
func (j BullMQJobType) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name       string `json:"name"`
		DurationMs int64  `json:"durationMs"`
		Count      int    `json:"count"`
		Priority   int    `json:"priority,omitempty"`
		Fail       bool   `json:"fail,omitempty"`
	}{j.Name, j.Duration.Milliseconds(), j.Count, j.Priority, j.Fail})
}

// BullMQ runs the Node program internal/testenv/bullmq/fleet.js against one Redis: the
// npm bullmq package's exporter, producers and workers, each its own process. The testing.TB
// methods stop what they start with the test; the others, with the Env that made the BullMQ.
type BullMQ struct {
	redis *Redis
	node  string
	fleet string
	// env points Node at the node_modules hack/install-testenv.sh installed.
	env []string
	// owner is the Env of Env.NewBullMQ, nil from the function NewBullMQ.
	owner *Env
}

// NewBullMQ finds node and the installed node_modules, or ends the test as a missing
// binary does.
func NewBullMQ(t testing.TB, r *Redis) *BullMQ {
	t.Helper()
	b, err := newBullMQ(r)
	check(t, err)
	return b
}

// NewBullMQ finds node and the installed node_modules; what the BullMQ starts, Close stops.
func (e *Env) NewBullMQ(r *Redis) (*BullMQ, error) {
	b, err := newBullMQ(r)
	if err != nil {
		return nil, err
	}
	b.owner = e
	return b, nil
}

func newBullMQ(r *Redis) (*BullMQ, error) {
	node, err := lookBinary("node")
	if err != nil {
		return nil, err
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, fmt.Errorf("test environment: %w", err)
	}
	dir := filepath.Join(root, "internal", "testenv", "bullmq")
	modules, err := BullMQModules(dir)
	if err != nil {
		return nil, fmt.Errorf("test environment: %w", err)
	}
	if _, err := lookBinary(filepath.Join(modules, "bullmq", "package.json")); err != nil {
		return nil, err
	}
	return &BullMQ{redis: r, node: node, fleet: filepath.Join(dir, "fleet.js"), env: []string{"NODE_PATH=" + modules}}, nil
}

// BullMQModules is where hack/install-testenv.sh installs the fleet's node_modules with
// `npm ci`: under the cache root (beside BinDir), keyed by the hash of dir's
// package-lock.json, so that a changed lock file gets a fresh install.
func BullMQModules(dir string) (string, error) {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("reading the BullMQ fleet's lock file: %w", err)
	}
	sum := sha256.Sum256(lock)
	return filepath.Join(filepath.Dir(BinDir()), "node", "bullmq-"+hex.EncodeToString(sum[:])[:12], "node_modules"), nil
}

// NodeProcess is a running mode of the fleet program.
type NodeProcess = Process

// start runs one mode of the fleet program in e and waits for its "ready" line.
func (b *BullMQ) start(ctx context.Context, e *Env, name, mode string, args ...string) (*process, error) {
	return b.startScript(ctx, e, name, nil, b.fleet, append([]string{mode, "--redis", b.redis.Addr}, args...)...)
}

// StartScript runs a Node program of the repository's (such as an example of the README)
// with the fleet's node_modules, REDIS set to the Redis's address and env added to its
// environment, and waits until it prints a line "ready" on stdout.
func (b *BullMQ) StartScript(t testing.TB, name, script string, env ...string) *NodeProcess {
	t.Helper()
	p, err := b.startScript(t.Context(), envFor(t), name, append([]string{"REDIS=" + b.redis.Addr}, env...), script)
	check(t, err)
	return &NodeProcess{proc: p}
}

func (b *BullMQ) startScript(ctx context.Context, e *Env, name string, env []string, script string, args ...string) (*process, error) {
	p, err := e.start(name, append(slices.Clone(b.env), env...), nil, b.node, append([]string{script}, args...)...)
	if err != nil {
		return nil, err
	}
	return p, p.ready(ctx, 30*time.Second, func(context.Context) error {
		data, err := os.ReadFile(p.log)
		if err != nil {
			return fmt.Errorf("reading %s's log: %w", name, err)
		}
		if !slices.Contains(strings.Split(string(data), "\n"), "ready") {
			return fmt.Errorf("%s has not said ready", name)
		}
		return nil
	})
}

// StartExporter serves `await queue.exportPrometheusMetrics()` of each queue, one after
// the other, on /metrics, as users deploy BullMQ's exporter. It returns the host:port, a
// scrape target.
func (b *BullMQ) StartExporter(t testing.TB, queues ...string) string {
	t.Helper()
	addr, err := b.startExporter(t.Context(), envFor(t), queues...)
	check(t, err)
	return addr
}

// StartExporterContext is StartExporter for a BullMQ of Env.NewBullMQ.
func (b *BullMQ) StartExporterContext(ctx context.Context, queues ...string) (string, error) {
	return b.startExporter(ctx, b.owner, queues...)
}

func (b *BullMQ) startExporter(ctx context.Context, e *Env, queues ...string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"--port", strconv.Itoa(port)}
	for _, q := range queues {
		args = append(args, "--queue", q)
	}
	p, err := b.start(ctx, e, "bullmq-exporter", "exporter", args...)
	if err != nil {
		return "", err
	}
	return addr, p.ready(ctx, 10*time.Second, httpOK(http.DefaultClient, "http://"+addr+"/metrics"))
}

// StartWorker starts a BullMQ Worker on queue with the given concurrency; withMetrics sets
// the Worker's metrics option, without which BullMQ keeps no completed and failed counts
// (bullmq_job_completed_total and bullmq_job_failed_total stay 0).
func (b *BullMQ) StartWorker(t testing.TB, queue string, concurrency int, withMetrics bool) *NodeProcess {
	t.Helper()
	args := []string{"--queue", queue, "--concurrency", strconv.Itoa(concurrency)}
	if withMetrics {
		args = append(args, "--metrics")
	}
	p, err := b.start(t.Context(), envFor(t), "bullmq-worker-"+queue, "worker", args...)
	check(t, err)
	return &NodeProcess{proc: p}
}

// Produce adds jobs to queue, the types spread evenly in proportion to their counts. With
// perSecond 0 it adds them all at once and returns when they are added; otherwise it adds
// them at that rate in the background and returns the running producer. BullMQ numbers
// the jobs.
func (b *BullMQ) Produce(t testing.TB, queue string, perSecond float64, jobs ...BullMQJobType) *NodeProcess {
	t.Helper()
	return b.ProduceIDs(t, queue, "", perSecond, jobs...)
}

// ProduceIDs is Produce with job ids of its own: the i-th job added (from 0) gets the id
// idPrefix-i, so that jobs of different producers never share an id. An empty idPrefix
// lets BullMQ number them.
func (b *BullMQ) ProduceIDs(t testing.TB, queue, idPrefix string, perSecond float64, jobs ...BullMQJobType) *NodeProcess {
	t.Helper()
	p, err := b.produce(t.Context(), envFor(t), queue, idPrefix, perSecond, jobs...)
	check(t, err)
	return p
}

// ProduceIDsContext is ProduceIDs for a BullMQ of Env.NewBullMQ.
func (b *BullMQ) ProduceIDsContext(ctx context.Context, queue, idPrefix string, perSecond float64, jobs ...BullMQJobType) (*NodeProcess, error) {
	return b.produce(ctx, b.owner, queue, idPrefix, perSecond, jobs...)
}

func (b *BullMQ) produce(ctx context.Context, e *Env, queue, idPrefix string, perSecond float64, jobs ...BullMQJobType) (*NodeProcess, error) {
	data, err := json.Marshal(jobs)
	if err != nil {
		return nil, fmt.Errorf("encoding jobs: %w", err)
	}
	args := []string{"--queue", queue, "--jobs", string(data)}
	if idPrefix != "" {
		args = append(args, "--id-prefix", idPrefix)
	}
	if perSecond > 0 {
		args = append(args, "--rate", strconv.FormatFloat(perSecond, 'f', -1, 64))
		p, err := b.start(ctx, e, "bullmq-producer-"+queue, "producer", args...)
		if err != nil {
			return nil, err
		}
		return &NodeProcess{proc: p}, nil
	}
	// Not b.start: a producer adding a few jobs may be done before its "ready" is seen.
	p, err := e.start("bullmq-producer-"+queue, b.env, nil, b.node, append([]string{b.fleet, "producer", "--redis", b.redis.Addr}, args...)...)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("adding jobs to %s: %w", queue, ctx.Err())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("the producer did not add its jobs to %s in 30s; its log:\n%s", queue, tail(p.log, 20))
	}
	if p.err != nil {
		return nil, fmt.Errorf("the producer failed: %w; its log:\n%s", p.err, tail(p.log, 20))
	}
	return &NodeProcess{proc: p}, nil
}
