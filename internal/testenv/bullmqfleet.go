package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConcurrencyEnv is the env var of a pod's container whose value a fleet's Worker runs
// with as its concurrency (the first seed's name).
const ConcurrencyEnv = "WORKER_CONCURRENCY"

// BullMQFleet keeps one real BullMQ Worker process per Ready pod of a Deployment of a
// StartRealisticCluster, as a kubelet would keep the pod's container: a Worker starts once
// its pod is Ready, with the concurrency of the pod's WORKER_CONCURRENCY, and is stopped
// gracefully (SIGTERM, then BullMQ's worker.close(), which lets its running jobs finish)
// once its pod is terminating, gone or no longer Ready. A rollout thus replaces the
// Workers and a scale-in stops some. The Workers run with the metrics option and print
// every job they complete, with its wait, which Completed reads; ServeMetrics reports
// their CPU and memory as cAdvisor and kube-state-metrics would report their pods.
type BullMQFleet struct {
	cluster   *Cluster
	bullmq    *BullMQ
	namespace string
	selector  string
	queue     string
	dir       string
	env       *Env
	cancel    context.CancelFunc
	loopDone  chan struct{}

	mu       sync.Mutex
	workers  map[string]*fleetWorker // by pod name
	all      []*fleetWorker          // every Worker ever started, for Completed and Stop
	stopping sync.WaitGroup
	errs     []error
}

// fleetWorker is the Worker process of one pod.
type fleetWorker struct {
	pod         string
	concurrency int
	proc        *process
	// container is the pod's container the Worker stands for, and its requests (cores and
	// bytes).
	container          string
	cpuRequest, memory float64
	// owner is the pod's controller owner reference, nil if it has none.
	owner *metav1.OwnerReference
}

// StartBullMQFleet starts keeping Workers on queue for the pods of the Deployment
// namespace/name, polling its pods every 200ms. Everything it started is stopped with the
// test (or by Stop), and the test fails if the fleet met an error.
func StartBullMQFleet(t testing.TB, c *Cluster, b *BullMQ, namespace, name, queue string) *BullMQFleet {
	t.Helper()
	f, err := envFor(t).StartBullMQFleet(t.Context(), c, b, namespace, name, queue)
	check(t, err)
	t.Cleanup(func() {
		f.Stop()
		if err := f.Err(); err != nil {
			t.Errorf("the BullMQ fleet: %v", err)
		}
	})
	return f
}

// StartBullMQFleet starts keeping Workers as the function StartBullMQFleet does; Close (or
// Stop) stops them.
func (e *Env) StartBullMQFleet(ctx context.Context, c *Cluster, b *BullMQ, namespace, name, queue string) (*BullMQFleet, error) {
	d, err := c.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading deployment %s/%s: %w", namespace, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s's selector: %w", namespace, name, err)
	}
	dir, err := e.TempDir("fleet")
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	f := &BullMQFleet{
		cluster: c, bullmq: b, namespace: namespace, selector: sel.String(), queue: queue, env: e,
		dir: dir, cancel: cancel, loopDone: make(chan struct{}), workers: map[string]*fleetWorker{},
	}
	go f.loop(loopCtx)
	e.Defer(f.Stop)
	return f, nil
}

// loop reconciles the Workers with the pods until ctx ends.
func (f *BullMQFleet) loop(ctx context.Context) {
	defer close(f.loopDone)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := f.reconcile(ctx); err != nil && ctx.Err() == nil {
			f.fail(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reconcile starts a Worker for every Ready pod without one and stops the Workers whose pod
// is terminating, gone or not Ready.
func (f *BullMQFleet) reconcile(ctx context.Context) error {
	pods, err := f.cluster.Client.CoreV1().Pods(f.namespace).List(ctx, metav1.ListOptions{LabelSelector: f.selector})
	if err != nil {
		return fmt.Errorf("listing the fleet's pods: %w", err)
	}
	ready := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && PodReady(p) {
			ready[p.Name] = p
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, w := range f.workers {
		if _, ok := ready[name]; !ok {
			delete(f.workers, name)
			f.stopping.Add(1)
			go func() {
				defer f.stopping.Done()
				w.proc.stop()
			}()
		}
	}
	for name, p := range ready {
		if _, ok := f.workers[name]; ok {
			continue
		}
		c, n, err := podConcurrency(p)
		if err != nil {
			return err
		}
		args := []string{f.bullmq.fleet, "worker", "--redis", f.bullmq.redis.Addr, "--queue", f.queue,
			"--concurrency", strconv.Itoa(n), "--metrics", "--log-jobs"}
		proc, err := startIn(f.dir, fmt.Sprintf("worker-%s-%d", name, len(f.all)), f.bullmq.env, nil, f.bullmq.node, args...)
		if err != nil {
			return fmt.Errorf("starting the Worker of pod %s: %w", name, err)
		}
		w := &fleetWorker{pod: name, concurrency: n, proc: proc, container: c.Name, owner: metav1.GetControllerOf(p),
			cpuRequest: c.Resources.Requests.Cpu().AsApproximateFloat64(), memory: c.Resources.Requests.Memory().AsApproximateFloat64()}
		f.workers[name] = w
		f.all = append(f.all, w)
	}
	return nil
}

// PodReady reports whether p's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podConcurrency is p's first container that sets WORKER_CONCURRENCY, and its value.
func podConcurrency(p *corev1.Pod) (*corev1.Container, int, error) {
	for i, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name != ConcurrencyEnv {
				continue
			}
			n, err := strconv.Atoi(e.Value)
			if err != nil || n < 1 {
				return nil, 0, fmt.Errorf("pod %s: %s=%q is not a concurrency", p.Name, ConcurrencyEnv, e.Value)
			}
			return &p.Spec.Containers[i], n, nil
		}
	}
	return nil, 0, fmt.Errorf("pod %s sets no %s", p.Name, ConcurrencyEnv)
}

func (f *BullMQFleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

// Err is the first error the fleet met (listing pods, starting a Worker, a Worker that
// exited by itself or failed), or nil.
func (f *BullMQFleet) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	for _, w := range f.all {
		select {
		case <-w.proc.done:
			if _, running := f.workers[w.pod]; running && f.workers[w.pod] == w {
				return fmt.Errorf("the Worker of pod %s exited by itself (%v); its log:\n%s", w.pod, w.proc.err, tail(w.proc.log, 20))
			}
		default:
		}
	}
	return nil
}

// Workers returns the number of running Workers and the sum of their concurrencies.
func (f *BullMQFleet) Workers() (workers, slots int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.workers {
		workers++
		slots += w.concurrency
	}
	return workers, slots
}

// Started is the number of Worker processes started so far.
func (f *BullMQFleet) Started() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.all)
}

// ServeMetrics serves, on a loopback port until the test ends, what cAdvisor and
// kube-state-metrics would report of the pods whose Worker runs, each pod's container
// being its Worker process: container_cpu_usage_seconds_total and
// container_memory_working_set_bytes from the process's CPU time and resident memory
// (/proc), kube_pod_container_resource_requests from the pod's spec, kube_pod_status_phase
// Running, and the owner series: kube_pod_owner from the pod's controller reference and
// kube_replicaset_owner for the namespace's ReplicaSets. It returns the host:port, a
// scrape target.
func (f *BullMQFleet) ServeMetrics(t testing.TB) string {
	t.Helper()
	return f.serveMetrics(envFor(t))
}

// StartMetrics is ServeMetrics for a fleet of Env.StartBullMQFleet, served until Close.
func (f *BullMQFleet) StartMetrics() string { return f.serveMetrics(f.env) }

func (f *BullMQFleet) serveMetrics(e *Env) string {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		text, err := f.exposition(req.Context())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(rw, text)
	}))
	e.Defer(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// exposition is the text ServeMetrics serves.
func (f *BullMQFleet) exposition(ctx context.Context) (string, error) {
	replicaSets, err := f.cluster.Client.AppsV1().ReplicaSets(f.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("listing the fleet's ReplicaSets: %w", err)
	}
	f.mu.Lock()
	workers := make([]*fleetWorker, 0, len(f.workers))
	for _, w := range f.workers {
		workers = append(workers, w)
	}
	f.mu.Unlock()
	var cpu, mem, req, phase, podOwners, rsOwners strings.Builder
	for _, rs := range replicaSets.Items {
		if o := metav1.GetControllerOf(&rs); o != nil {
			fmt.Fprintf(&rsOwners, "kube_replicaset_owner{namespace=%q,replicaset=%q,owner_kind=%q,owner_name=%q,owner_is_controller=\"true\"} 1\n", f.namespace, rs.Name, o.Kind, o.Name)
		}
	}
	for _, w := range workers {
		usage, rss, err := processUsage(w.proc.cmd.Process.Pid)
		if err != nil {
			continue // exited: no container, no series
		}
		labels := fmt.Sprintf(`namespace=%q,pod=%q,container=%q`, f.namespace, w.pod, w.container)
		fmt.Fprintf(&cpu, "container_cpu_usage_seconds_total{%s} %g\n", labels, usage)
		fmt.Fprintf(&mem, "container_memory_working_set_bytes{%s} %g\n", labels, rss)
		fmt.Fprintf(&req, "kube_pod_container_resource_requests{%s,resource=\"cpu\",unit=\"core\"} %g\n", labels, w.cpuRequest)
		fmt.Fprintf(&req, "kube_pod_container_resource_requests{%s,resource=\"memory\",unit=\"byte\"} %g\n", labels, w.memory)
		fmt.Fprintf(&phase, "kube_pod_status_phase{namespace=%q,pod=%q,phase=\"Running\"} 1\n", f.namespace, w.pod)
		if w.owner != nil {
			fmt.Fprintf(&podOwners, "kube_pod_owner{namespace=%q,pod=%q,owner_kind=%q,owner_name=%q,owner_is_controller=\"true\"} 1\n", f.namespace, w.pod, w.owner.Kind, w.owner.Name)
		}
	}
	return "# TYPE container_cpu_usage_seconds_total counter\n" + cpu.String() +
		"# TYPE container_memory_working_set_bytes gauge\n" + mem.String() +
		"# TYPE kube_pod_container_resource_requests gauge\n" + req.String() +
		"# TYPE kube_pod_status_phase gauge\n" + phase.String() +
		"# TYPE kube_pod_owner gauge\n" + podOwners.String() +
		"# TYPE kube_replicaset_owner gauge\n" + rsOwners.String(), nil
}

// clockTicks is Linux's USER_HZ, the unit of the CPU times in /proc/PID/stat.
const clockTicks = 100

// processUsage is a running process's CPU time (user and system, in seconds) and
// resident memory (bytes), from /proc.
func processUsage(pid int) (cpuSeconds, rssBytes float64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading the process's stat: %w", err)
	}
	// The fields after the command name (in parentheses, which may hold spaces): state is
	// field 3, utime 14, stime 15, rss (pages) 24.
	i := strings.LastIndexByte(string(stat), ')')
	fields := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(fields) < 22 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q is not a process's stat", pid, stat)
	}
	if fields[0] == "Z" {
		return 0, 0, fmt.Errorf("process %d has exited", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	rss, err3 := strconv.ParseFloat(fields[21], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q is not a process's stat", pid, stat)
	}
	return (utime + stime) / clockTicks, rss * float64(os.Getpagesize()), nil
}

// Stop stops reconciling and stops every Worker gracefully, waiting for them all. Stopping
// twice is harmless.
func (f *BullMQFleet) Stop() {
	f.cancel()
	<-f.loopDone
	f.mu.Lock()
	for name, w := range f.workers {
		delete(f.workers, name)
		f.stopping.Add(1)
		go func() {
			defer f.stopping.Done()
			w.proc.stop()
		}()
	}
	f.mu.Unlock()
	f.stopping.Wait()
}

// CompletedJob is a job a fleet's Worker completed.
type CompletedJob struct {
	ID string
	// Wait is how long the job waited before a Worker took it; Started is when one did.
	Wait    time.Duration
	Started time.Time
}

// Completed reads, from every Worker's output, the jobs completed so far: a job completed
// twice is there twice.
func (f *BullMQFleet) Completed() ([]CompletedJob, error) {
	f.mu.Lock()
	logs := make([]string, 0, len(f.all))
	for _, w := range f.all {
		logs = append(logs, w.proc.log)
	}
	f.mu.Unlock()
	var jobs []CompletedJob
	for _, path := range logs {
		got, err := readCompleted(path)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, got...)
	}
	return jobs, nil
}

// readCompleted reads the "completed ID WAIT_MS STARTED_MS" lines of one Worker's log.
func readCompleted(path string) ([]CompletedJob, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading a Worker's log: %w", err)
	}
	defer file.Close()
	var jobs []CompletedJob
	s := bufio.NewScanner(file)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "completed ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s: %q is not a completed job", path, s.Text())
		}
		wait, err1 := strconv.ParseInt(fields[1], 10, 64)
		started, err2 := strconv.ParseInt(fields[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: %q is not a completed job", path, s.Text())
		}
		jobs = append(jobs, CompletedJob{ID: fields[0], Wait: time.Duration(wait) * time.Millisecond, Started: time.UnixMilli(started)})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return jobs, nil
}
