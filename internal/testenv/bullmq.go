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
	bin := binary(t, "redis-server")
	port := FreePort(t)
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	r.proc = start(t, "redis-server", bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", t.TempDir(),
	)
	r.proc.waitReady(t, 20*time.Second, r.ping)
	return r
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
// npm bullmq package's exporter, producers and workers, each its own process.
type BullMQ struct {
	redis *Redis
	node  string
	fleet string
	// env points Node at the node_modules hack/install-testenv.sh installed.
	env []string
}

// NewBullMQ finds node and the installed node_modules, or ends the test as a missing
// binary does.
func NewBullMQ(t testing.TB, r *Redis) *BullMQ {
	t.Helper()
	node := binary(t, "node")
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("test environment: %v", err)
	}
	dir := filepath.Join(root, "internal", "testenv", "bullmq")
	modules, err := BullMQModules(dir)
	if err != nil {
		t.Fatalf("test environment: %v", err)
	}
	binary(t, filepath.Join(modules, "bullmq", "package.json"))
	return &BullMQ{redis: r, node: node, fleet: filepath.Join(dir, "fleet.js"), env: []string{"NODE_PATH=" + modules}}
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
type NodeProcess struct{ proc *process }

// Stop sends SIGTERM (a worker then closes gracefully) and waits for the exit.
func (n *NodeProcess) Stop() { n.proc.stop() }

// Done is closed when the process has exited (a producer at a rate: once it added its jobs).
func (n *NodeProcess) Done() <-chan struct{} { return n.proc.done }

// start runs one mode of the fleet program and waits for its "ready" line.
func (b *BullMQ) start(t testing.TB, name, mode string, args ...string) *NodeProcess {
	t.Helper()
	args = append([]string{b.fleet, mode, "--redis", b.redis.Addr}, args...)
	p := startWithEnv(t, name, b.env, b.node, args...)
	p.waitReady(t, 30*time.Second, func(context.Context) error {
		data, err := os.ReadFile(p.log)
		if err != nil {
			return fmt.Errorf("reading %s's log: %w", name, err)
		}
		if !slices.Contains(strings.Split(string(data), "\n"), "ready") {
			return fmt.Errorf("%s has not said ready", name)
		}
		return nil
	})
	return &NodeProcess{proc: p}
}

// StartExporter serves `await queue.exportPrometheusMetrics()` of each queue, one after
// the other, on /metrics, as users deploy BullMQ's exporter. It returns the host:port, a
// scrape target.
func (b *BullMQ) StartExporter(t testing.TB, queues ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	_, port, _ := net.SplitHostPort(addr)
	args := []string{"--port", port}
	for _, q := range queues {
		args = append(args, "--queue", q)
	}
	b.start(t, "bullmq-exporter", "exporter", args...).proc.waitReady(t, 10*time.Second, httpOK(http.DefaultClient, "http://"+addr+"/metrics"))
	return addr
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
	return b.start(t, "bullmq-worker-"+queue, "worker", args...)
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
	data, err := json.Marshal(jobs)
	if err != nil {
		t.Fatalf("encoding jobs: %v", err)
	}
	args := []string{"--queue", queue, "--jobs", string(data)}
	if idPrefix != "" {
		args = append(args, "--id-prefix", idPrefix)
	}
	if perSecond > 0 {
		args = append(args, "--rate", strconv.FormatFloat(perSecond, 'f', -1, 64))
	}
	if perSecond > 0 {
		return b.start(t, "bullmq-producer-"+queue, "producer", args...)
	}
	// Not b.start: a producer adding a few jobs may be done before its "ready" is seen.
	p := startWithEnv(t, "bullmq-producer-"+queue, b.env, b.node, append([]string{b.fleet, "producer", "--redis", b.redis.Addr}, args...)...)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the producer did not add its jobs to %s in 30s; its log:\n%s", queue, tail(p.log, 20))
	}
	if p.err != nil {
		t.Fatalf("the producer failed: %v; its log:\n%s", p.err, tail(p.log, 20))
	}
	return &NodeProcess{proc: p}
}
