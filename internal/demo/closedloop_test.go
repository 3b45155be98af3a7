package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
)

// closedLoopRules are the first seed's render policy (rules/examples/luneo-render.yaml)
// compressed in time: a 1s interval, a 10s rate window, job durations of a few hundred
// milliseconds and a 15s scale-down window. sustainFor is 75s: the engine moves to a
// cheaper class only when the savings over sustainFor pay for the rollout, which it counts
// as 2 minutes of both fleets side by side, so that a shorter one would keep the fleet on
// its largest class after the burst. Each class runs on its own pool of nodes. The
// classes' maxReplicas are smaller than the seed's, so that the fleet stays a handful of
// Node processes on a shared machine.
const closedLoopRules = `prometheus: {url: %q, timeout: 5s, staleness: 30s}
interval: 1s
classes:
  - {name: small,  cpu: "1", memory: 2Gi,  concurrency: 2,  tenantConcurrency: 1, maxReplicas: 6, costPerHour: 0.05, nodeSelector: {pool: small}}
  - {name: medium, cpu: "2", memory: 4Gi,  concurrency: 5,  tenantConcurrency: 2, maxReplicas: 6, costPerHour: 0.10, nodeSelector: {pool: medium}}
  - {name: large,  cpu: "4", memory: 8Gi,  concurrency: 10, tenantConcurrency: 3, maxReplicas: 6, costPerHour: 0.20, nodeSelector: {pool: large}}
  - {name: xlarge, cpu: "8", memory: 16Gi, concurrency: 20, tenantConcurrency: 5, maxReplicas: 6, costPerHour: 0.40, nodeSelector: {pool: xlarge}}
thresholds:
  queueDepth:     {target: 50,   warning: 50,   critical: 100}
  saturation:     {target: 0.8,  warning: 0.9,  critical: 0.99}
  waitSeconds:    {target: 10,   warning: 10,   critical: 60}
  cpu:            {target: 0.8,  warning: 0.9,  critical: 0.95}
  memory:         {target: 0.85, warning: 0.9,  critical: 0.95}
  completionRate: {target: 0.95, warning: 0.95, critical: 0.9, direction: lowerIsWorse}
queries: {preset: bullmq, rateWindow: 10s}
workloads:
  - name: render
    target: {kind: Deployment, namespace: luneo, name: luneo-worker-ia, container: worker}
    queues: [render]
    minReplicas: 2
    maxReplicas: 6
    horizontal: {utilization: 0.8, buffer: 0.2, jobDuration: 400ms, sizing: seed}
    vertical: {sustainFor: 75s, scaleDownCPUBelow: 0.5, minSavings: 0.2}
    behavior:
      scaleDown: {stabilizationWindow: 15s}
`

// The seed's job types (internal/sim.SeedJobTypes) with their durations compressed about
// 50 times, in the seed's default mix (40 % 2d-render, 20 % each of the others).
func seedJobs(total int) []testenv.BullMQJobType {
	return []testenv.BullMQJobType{
		{Name: "2d-render", Duration: 200 * time.Millisecond, Count: total * 4 / 10},
		{Name: "3d-render", Duration: time.Second, Count: total * 2 / 10},
		{Name: "ar-preview", Duration: 400 * time.Millisecond, Count: total * 2 / 10},
		{Name: "texture-blend", Duration: 150 * time.Millisecond, Count: total * 2 / 10, Priority: 1},
	}
}

// classByCPU names the class of a pod template by its CPU request.
var classByCPU = map[string]string{"1": "small", "2": "medium", "4": "large", "8": "xlarge"}

// classConcurrency is each class's WORKER_CONCURRENCY in closedLoopRules.
var classConcurrency = map[string]int{"small": 2, "medium": 5, "large": 10, "xlarge": 20}

// sample is the fleet at one moment of the run.
type sample struct {
	at                     time.Duration // since the load started
	replicas, ready        int32
	class                  string
	workers, slots         int
	queued, active         float64
	completed, failedCount float64
}

// TestClosedLoop closes issue 15's loop: a realistic cluster (its Deployment controller
// rolls out, kwok makes pods Ready), one real BullMQ Worker per Ready pod with the pod's
// WORKER_CONCURRENCY, BullMQ's exporter scraped by a real Prometheus, and `workerscale run`
// writing to the Deployment. A steady light load, then a burst, then nothing: the
// controller scales out during the burst, the wait comes back under target, the replica
// count does not oscillate, the fleet returns to its minimum, and every job completes
// exactly once.
func TestClosedLoop(t *testing.T) {
	began := time.Now()
	bin := testenv.Workerscale(t)
	cluster := testenv.StartRealisticCluster(t)
	for _, pool := range []string{"small", "medium", "large", "xlarge"} {
		cluster.AddNode(t, "pool-"+pool, map[string]string{"pool": pool})
	}
	redis := testenv.StartRedis(t)
	bull := testenv.NewBullMQ(t, redis)
	exporter := bull.StartExporter(t, "render")

	// The seed's Deployment at its minimum: 2 medium workers.
	d := testenv.WorkerDeployment("luneo", "luneo-worker-ia", 2, "2", "4Gi", testenv.Concurrency("5", "2")...)
	d.Spec.Template.Spec.NodeSelector = map[string]string{"pool": "medium"}
	cluster.CreateDeployment(t, d)
	cluster.WaitForRollout(t, "luneo", "luneo-worker-ia")
	fleet := testenv.StartBullMQFleet(t, cluster, bull, "luneo", "luneo-worker-ia", "render")
	testenv.Eventually(t, 30*time.Second, "2 Workers for the 2 Ready pods", func() error {
		if n, _ := fleet.Workers(); n != 2 {
			return fmt.Errorf("%d Workers", n)
		}
		return nil
	})
	// Prometheus scrapes BullMQ's exporter, and the Workers' CPU and memory as cAdvisor and
	// kube-state-metrics would report their pods.
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{exporter, fleet.ServeMetrics(t)}})

	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(fmt.Sprintf(closedLoopRules, p.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	controller := startController(t, bin, rulesFile, cluster.Kubeconfig(t, cluster.Config))

	// The load: 5 jobs/s for 60s (about 2 of the 10 slots busy), and 15s in a burst of
	// 2500 jobs (about 1000 slot-seconds of work: 100s for the 10 slots at the minimum).
	const (
		steadyRate   = 5
		steadyFor    = 60 * time.Second
		burstAt      = 15 * time.Second
		burstJobs    = 2500
		waitTarget   = 10 * time.Second
		minReplicas  = 2
		drainBound   = 90 * time.Second // from the burst to the last job that waited more than the target
		settleBound  = 90 * time.Second // from the end of the load to the fleet at its minimum, in a class no larger than medium
		maxReversals = 2
	)
	steadyJobs := seedJobs(steadyRate * int(steadyFor/time.Second))
	burst := seedJobs(burstJobs)
	produced := count(steadyJobs) + count(burst)

	loadStart := time.Now()
	rec := startRecorder(t, cluster, fleet, exporter, loadStart)
	logged := false
	t.Cleanup(func() {
		// A run that failed before its end still shows what happened.
		if logged {
			return
		}
		rec.stop()
		logTimeline(t, rec.all(), controller.reports(t))
		logPods(t, cluster)
	})
	t.Logf("setup took %s; the load starts", loadStart.Sub(began).Round(time.Second))
	steady := bull.ProduceIDs(t, "render", "steady", steadyRate, steadyJobs...)
	sleepUntil(t, loadStart.Add(burstAt))
	burstStart := time.Now()
	bull.ProduceIDs(t, "render", "burst", 0, burst...)
	t.Logf("t=%s: a burst of %d jobs added in %s", burstStart.Sub(loadStart).Round(100*time.Millisecond), count(burst), time.Since(burstStart).Round(100*time.Millisecond))
	select {
	case <-steady.Done():
	case <-time.After(steadyFor + 30*time.Second):
		t.Fatalf("the steady producer did not finish in %s", steadyFor+30*time.Second)
	}
	loadEnd := time.Now()
	t.Logf("t=%s: the load ends (%d jobs produced)", loadEnd.Sub(loadStart).Round(100*time.Millisecond), produced)

	// (d) Back to the minimum: the Deployment, its Ready pods and the Workers, in a class no
	// larger than the one it started in (the seed's policy: CPU under 50 %, consider
	// small), each Worker running that class's concurrency.
	testenv.Eventually(t, settleBound, "the fleet back at its minimum after the load", func() error {
		s := rec.last()
		if s.replicas != minReplicas || s.ready != minReplicas || s.workers != minReplicas || s.queued+s.active > 0 ||
			classConcurrency[s.class] > classConcurrency["medium"] || s.slots != minReplicas*classConcurrency[s.class] {
			return fmt.Errorf("%d replicas of %s, %d ready, %d Workers with %d slots, %v queued, %v active",
				s.replicas, s.class, s.ready, s.workers, s.slots, s.queued, s.active)
		}
		return nil
	})
	settled := time.Since(loadEnd)
	testenv.Eventually(t, 30*time.Second, "BullMQ counting every job completed", func() error {
		if c := rec.last().completed; c != float64(produced) {
			return fmt.Errorf("%v completed of %d", c, produced)
		}
		return nil
	})
	rec.stop()
	reports := controller.stop(t)
	fleet.Stop()
	samples := rec.all()
	logTimeline(t, samples, reports)
	logged = true
	t.Logf("the run: setup %s, load %s, back at the minimum %s after the load ended; %d Workers started in all; total %s",
		loadStart.Sub(began).Round(time.Second), loadEnd.Sub(loadStart).Round(time.Second), settled.Round(time.Second),
		fleet.Started(), time.Since(began).Round(time.Second))

	// (a) The controller scaled out during the burst.
	peak := samples[0]
	for _, s := range samples {
		if s.slots > peak.slots {
			peak = s
		}
	}
	if peak.replicas <= minReplicas && peak.slots <= 10 {
		t.Errorf("the fleet never grew past its minimum (peak: %d replicas, %d slots)", peak.replicas, peak.slots)
	}
	if peak.at < burstAt {
		t.Errorf("the fleet peaked at t=%s, before the burst at t=%s", peak.at, burstAt)
	}

	// (b) and (e): every job completed exactly once, none failed, and the wait back under
	// target within drainBound of the burst.
	if f := samples[len(samples)-1].failedCount; f != 0 {
		t.Errorf("BullMQ counts %v failed jobs, want 0", f)
	}
	jobs, err := fleet.Completed()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var lastLate time.Time
	var worst time.Duration
	for _, j := range jobs {
		seen[j.ID]++
		if j.Wait > waitTarget && j.Started.After(lastLate) {
			lastLate = j.Started
		}
		worst = max(worst, j.Wait)
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("job %s completed %d times", id, n)
		}
	}
	if len(jobs) != produced || len(seen) != produced {
		t.Errorf("the Workers completed %d jobs (%d distinct ids), %d were produced", len(jobs), len(seen), produced)
	}
	if lastLate.IsZero() {
		t.Logf("no job waited more than the %s target (the longest wait: %s)", waitTarget, worst.Round(100*time.Millisecond))
	} else {
		back := lastLate.Sub(burstStart)
		t.Logf("the longest wait %s; the last job that waited more than %s started %s after the burst", worst.Round(100*time.Millisecond), waitTarget, back.Round(100*time.Millisecond))
		if back > drainBound {
			t.Errorf("jobs still waited more than %s %s after the burst, want within %s", waitTarget, back.Round(time.Second), drainBound)
		}
	}

	// (c) No oscillation: the writes of the replica count change direction at most
	// maxReversals times (out, in, and one small step), and once the scale-in began,
	// later scale-outs add at most 2 replicas in all.
	reversals, addedAfterIn, dir := 0, int32(0), 0
	scaledIn := false
	for _, r := range reports {
		if !r.Applied || r.To.Replicas == r.From.Replicas {
			continue
		}
		step := 1
		if r.To.Replicas < r.From.Replicas {
			step = -1
			scaledIn = true
		} else if scaledIn {
			addedAfterIn += r.To.Replicas - r.From.Replicas
		}
		if dir != 0 && step != dir {
			reversals++
		}
		dir = step
	}
	if reversals > maxReversals || addedAfterIn > 2 {
		t.Errorf("the replica count oscillated: %d direction changes (want at most %d), %d replicas added after the scale-in began (want at most 2)", reversals, maxReversals, addedAfterIn)
	}
	t.Logf("bounds: scale-out after the burst; wait under %s within %s of the burst; at most %d direction changes (saw %d); the minimum, class %s, within %s of the load's end (took %s); %d jobs, each completed once",
		waitTarget, drainBound, maxReversals, reversals, samples[len(samples)-1].class, settleBound, settled.Round(time.Second), produced)
}

func count(jobs []testenv.BullMQJobType) int {
	n := 0
	for _, j := range jobs {
		n += j.Count
	}
	return n
}

func sleepUntil(t *testing.T, at time.Time) {
	t.Helper()
	select {
	case <-time.After(time.Until(at)):
	case <-t.Context().Done():
		t.Fatal("the test ended")
	}
}

// controllerProcess is `workerscale run` as its own process, its decisions written as JSON
// to a file.
type controllerProcess struct {
	cmd       *exec.Cmd
	out, logs string
	done      chan error
}

func startController(t *testing.T, bin, rulesFile, kubeconfig string) *controllerProcess {
	t.Helper()
	dir := t.TempDir()
	c := &controllerProcess{out: filepath.Join(dir, "decisions.json"), logs: filepath.Join(dir, "workerscale.log"), done: make(chan error, 1)}
	out, err := os.Create(c.out)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(c.logs)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bin, "run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "-o", "json",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-level", "warn")
	c.cmd.Stdout, c.cmd.Stderr = out, logs
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting workerscale run: %v", err)
	}
	go func() {
		err := c.cmd.Wait()
		out.Close()
		logs.Close()
		c.done <- err
		close(c.done)
	}()
	t.Cleanup(func() {
		c.halt()
		if t.Failed() {
			data, _ := os.ReadFile(c.logs)
			t.Logf("workerscale run's log:\n%s", lastLines(string(data), 30))
		}
	})
	return c
}

// halt stops the controller (SIGTERM, then SIGKILL after 10s) and returns how it exited.
func (c *controllerProcess) halt() error {
	select {
	case err := <-c.done: // nil once closed: already stopped
		return err
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		return err
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		return <-c.done
	}
}

// stop stops the controller, which must still be running, and returns its decisions.
func (c *controllerProcess) stop(t *testing.T) []autoscaler.Report {
	t.Helper()
	select {
	case err := <-c.done:
		data, _ := os.ReadFile(c.logs)
		t.Fatalf("workerscale run exited during the run (%v); its log:\n%s", err, lastLines(string(data), 30))
	default:
	}
	if err := c.halt(); err != nil {
		t.Errorf("workerscale run did not stop cleanly on SIGTERM: %v", err)
	}
	return c.reports(t)
}

// reports are the decisions written so far, up to the first that does not decode (one
// being written).
func (c *controllerProcess) reports(t *testing.T) []autoscaler.Report {
	t.Helper()
	f, err := os.Open(c.out)
	if err != nil {
		t.Errorf("reading workerscale's decisions: %v", err)
		return nil
	}
	defer f.Close()
	var reps []autoscaler.Report
	dec := json.NewDecoder(f)
	for dec.More() {
		var r autoscaler.Report
		if err := dec.Decode(&r); err != nil {
			break
		}
		reps = append(reps, r)
	}
	return reps
}

// logPods logs the fleet's pods: node, phase, readiness and concurrency.
func logPods(t *testing.T, cluster *testenv.Cluster) {
	t.Helper()
	pods, err := cluster.Client.CoreV1().Pods("luneo").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Logf("listing the pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s: node %q, phase %s, ready %v, deleting %v, env %v", p.Name, p.Spec.NodeName, p.Status.Phase,
			testenv.PodReady(&p), p.DeletionTimestamp != nil, p.Spec.Containers[0].Env)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// recorder samples the Deployment, the Workers and BullMQ's counts every 500ms.
type recorder struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	samples []sample
	err     error
}

func startRecorder(t *testing.T, cluster *testenv.Cluster, fleet *testenv.BullMQFleet, exporter string, start time.Time) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cancel: cancel, done: make(chan struct{})}
	take := func() error {
		d, err := cluster.Client.AppsV1().Deployments("luneo").Get(ctx, "luneo-worker-ia", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the Deployment: %w", err)
		}
		counts, err := jobCounts(ctx, exporter)
		if err != nil {
			return err
		}
		s := sample{at: time.Since(start), replicas: *d.Spec.Replicas, ready: d.Status.ReadyReplicas,
			queued: counts["waiting"] + counts["prioritized"], active: counts["active"],
			completed: counts["completed"], failedCount: counts["failed"]}
		s.class = classByCPU[d.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().String()]
		s.workers, s.slots = fleet.Workers()
		r.mu.Lock()
		r.samples = append(r.samples, s)
		r.mu.Unlock()
		return nil
	}
	if err := take(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := take(); err != nil && ctx.Err() == nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
			}
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *recorder) stop() {
	r.cancel()
	<-r.done
}

func (r *recorder) last() sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.samples[len(r.samples)-1]
}

func (r *recorder) all() []sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sample(nil), r.samples...)
}

// jobCountLine is one bullmq_job_count sample of BullMQ's exporter.
var jobCountLine = regexp.MustCompile(`^bullmq_job_count\{queue="render", state="(\w+)"\} (\S+)$`)

// jobCounts scrapes BullMQ's exporter for the render queue's getJobCounts() by state.
func jobCounts(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scraping the BullMQ exporter: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping the BullMQ exporter: %w", err)
	}
	defer resp.Body.Close()
	counts := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if m := jobCountLine.FindStringSubmatch(s.Text()); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return nil, fmt.Errorf("exporter line %q: %w", s.Text(), err)
			}
			counts[m[1]] = v
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading the BullMQ exporter: %w", err)
	}
	return counts, nil
}

// logTimeline logs the fleet every 3 seconds, and each change the controller decided (by
// its cycle's number, about a second apart) with its first reason.
func logTimeline(t *testing.T, samples []sample, reports []autoscaler.Report) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "timeline (t from the start of the load):\n%7s %8s %5s %7s %7s %6s %6s %9s\n", "t", "replicas", "ready", "class", "workers", "queued", "active", "completed")
	next := time.Duration(0)
	for i, s := range samples {
		if s.at < next && i != len(samples)-1 {
			continue
		}
		next = s.at + 3*time.Second
		fmt.Fprintf(&b, "%7s %8d %5d %7s %7d %6.0f %6.0f %9.0f\n", s.at.Round(time.Second), s.replicas, s.ready, s.class, s.workers, s.queued, s.active, s.completed)
	}
	fmt.Fprintf(&b, "writes of workerscale run:\n")
	for i, r := range reports {
		if !r.Changed() {
			continue
		}
		reason := ""
		if len(r.Reasons) > 0 {
			reason = r.Reasons[0]
		}
		fmt.Fprintf(&b, "  cycle %d: %d %s -> %d %s (applied %v%s): %s\n", i+1, r.From.Replicas, r.From.Class, r.To.Replicas, r.To.Class, r.Applied, skipped(r), reason)
	}
	if len(reports) > 0 {
		r := reports[len(reports)-1]
		fmt.Fprintf(&b, "the last decision (cycle %d): %s; missing %v; warnings %v\n", len(reports), strings.Join(r.Reasons, "; "), r.Missing, r.Warnings)
	}
	t.Log(b.String())
}

func skipped(r autoscaler.Report) string {
	if r.Skipped != "" {
		return ", skipped: " + r.Skipped
	}
	return ""
}
