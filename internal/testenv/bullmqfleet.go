package testenv

import (
	"bufio"
	"context"
	"fmt"
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
// every job they complete, with its wait, which Completed reads.
type BullMQFleet struct {
	cluster   *Cluster
	bullmq    *BullMQ
	namespace string
	selector  string
	queue     string
	dir       string
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
}

// StartBullMQFleet starts keeping Workers on queue for the pods of the Deployment
// namespace/name, polling its pods every 200ms. Everything it started is stopped with the
// test (or by Stop).
func StartBullMQFleet(t testing.TB, c *Cluster, b *BullMQ, namespace, name, queue string) *BullMQFleet {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments(namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading deployment %s/%s: %v", namespace, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatalf("deployment %s/%s's selector: %v", namespace, name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &BullMQFleet{
		cluster: c, bullmq: b, namespace: namespace, selector: sel.String(), queue: queue,
		dir: t.TempDir(), cancel: cancel, loopDone: make(chan struct{}), workers: map[string]*fleetWorker{},
	}
	go f.loop(ctx)
	t.Cleanup(func() {
		f.Stop()
		if err := f.Err(); err != nil {
			t.Errorf("the BullMQ fleet: %v", err)
		}
	})
	return f
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
		n, err := podConcurrency(p)
		if err != nil {
			return err
		}
		args := []string{f.bullmq.fleet, "worker", "--redis", f.bullmq.redis.Addr, "--queue", f.queue,
			"--concurrency", strconv.Itoa(n), "--metrics", "--log-jobs"}
		proc, err := startIn(f.dir, fmt.Sprintf("worker-%s-%d", name, len(f.all)), f.bullmq.env, f.bullmq.node, args...)
		if err != nil {
			return fmt.Errorf("starting the Worker of pod %s: %w", name, err)
		}
		w := &fleetWorker{pod: name, concurrency: n, proc: proc}
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

// podConcurrency is the WORKER_CONCURRENCY of p's first container that sets it.
func podConcurrency(p *corev1.Pod) (int, error) {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name != ConcurrencyEnv {
				continue
			}
			n, err := strconv.Atoi(e.Value)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("pod %s: %s=%q is not a concurrency", p.Name, ConcurrencyEnv, e.Value)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("pod %s sets no %s", p.Name, ConcurrencyEnv)
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
