package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// world is a real Prometheus scraping a fixture fleet, and a real kube-apiserver (with
// the controllers, the scheduler and kwok when it is a newRealisticWorld).
type world struct {
	t          *testing.T
	fleet      *testenv.Fleet
	prom       *testenv.Prometheus
	cluster    *testenv.Cluster
	kubeconfig string
	rulesFile  string
}

const worldRules = `prometheus: {url: %q, staleness: 1m}
interval: 1s
queries: {preset: bullmq, rateWindow: 4s}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
  - {name: large,  cpu: "4", memory: 8Gi, concurrency: 10, tenantConcurrency: 3, maxReplicas: 20}
  - {name: xlarge, cpu: "8", memory: 16Gi, concurrency: 20, tenantConcurrency: 5, maxReplicas: 20}
workloads:
  - name: render
    target: {namespace: default, name: render, container: worker}
    maxReplicas: 20
    %s
`

func newWorld(t *testing.T, workloadExtra string) *world {
	t.Helper()
	return newWorldOn(t, workloadExtra, testenv.StartCluster)
}

// newRealisticWorld is newWorld on a testenv.StartRealisticCluster, for a test that needs
// a rollout to complete: the Deployment controller completes it (wait with
// WaitForRollout). worldRules' classes select no nodes, so kwok's one node takes every pod.
func newRealisticWorld(t *testing.T, workloadExtra string) *world {
	t.Helper()
	return newWorldOn(t, workloadExtra, testenv.StartRealisticCluster)
}

// newWorldOn is a world whose cluster startCluster starts.
func newWorldOn(t *testing.T, workloadExtra string, startCluster func(testing.TB) *testenv.Cluster) *world {
	t.Helper()
	w := &world{t: t, fleet: testenv.NewFleet(t)}
	w.prom = testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{w.fleet.Addr()}})
	w.cluster = startCluster(t)
	w.kubeconfig = w.cluster.Kubeconfig(t, w.cluster.Config)
	w.rulesFile = filepath.Join(t.TempDir(), "rules.yaml")
	w.writeRules(workloadExtra)
	return w
}

func (w *world) writeRules(workloadExtra string) {
	w.t.Helper()
	if err := os.WriteFile(w.rulesFile, []byte(fmt.Sprintf(worldRules, w.prom.URL, workloadExtra)), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// load sets the fixture queue and pods, and waits until all six metrics are fresh.
func (w *world) load(q testenv.Queue, cpu float64) {
	w.t.Helper()
	w.loadMemory(q, cpu, 1<<30)
}

// loadMemory is load with each of the 2 fixture pods using mem bytes of its 4 GiB.
func (w *world) loadMemory(q testenv.Queue, cpu, mem float64) {
	w.t.Helper()
	w.fleet.SetQueue("render", q)
	w.fleet.SetWorkload("default", "render", testenv.Workload{Pods: 2, CPUCores: cpu * 2, CPURequest: 2, MemoryBytes: mem, MemoryRequest: 4 << 30})
	w.observeUntil("fixture metrics not fresh", func(c prom.Cycle) (bool, string) {
		missing := ""
		for _, m := range []string{rules.QueueDepth, rules.ActiveJobs, rules.Throughput, rules.CompletionRate, rules.CPU, rules.Memory} {
			if o := c.Observations["render"][m]; o.Status != autoscaler.Fresh {
				missing += fmt.Sprintf(" %s(%s)", m, o.Reason)
			}
		}
		return missing == "" && c.Observations["render"][rules.QueueDepth].Value == q.Waiting+q.Prioritized && c.Observations["render"][rules.Memory].Value == mem/(4<<30), missing
	})
}

// observeUntil observes the world's rules, as a cycle does, until done says the cycle is
// what the test waits for; after 45 s it fails with what and done's why.
func (w *world) observeUntil(what string, done func(prom.Cycle) (ok bool, why string)) {
	w.t.Helper()
	r, err := rules.Load(w.rulesFile)
	if err != nil {
		w.t.Fatal(err)
	}
	src, err := prom.New(r.Prometheus, prom.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		ok, why := done(src.Observe(w.t.Context(), r, time.Now()))
		if ok {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s after 45s:%s", what, why)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (w *world) createDeployment(replicas int32, cpu, mem, conc, tenant string, annotations map[string]string) {
	w.t.Helper()
	d := testenv.WorkerDeployment("default", "render", replicas, cpu, mem, testenv.Concurrency(conc, tenant)...)
	d.Annotations = annotations
	w.cluster.CreateDeployment(w.t, d)
}

func (w *world) deployment() *appsv1.Deployment {
	w.t.Helper()
	d, err := w.cluster.Client.AppsV1().Deployments("default").Get(w.t.Context(), "render", metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// run runs `workerscale run` with the world's rules and kubeconfig and returns its reports.
func (w *world) run(kubeconfig string, args ...string) (int, []autoscaler.Report, string) {
	w.t.Helper()
	all := append([]string{"run", "--rules", w.rulesFile, "--kubeconfig", kubeconfig, "--once", "-o", "json",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, args...)
	var out, errOut bytes.Buffer
	code := run(w.t.Context(), all, &out, &errOut)
	return code, decodeReports(w.t, &out), errOut.String()
}

func decodeReports(t *testing.T, r io.Reader) []autoscaler.Report {
	t.Helper()
	var reps []autoscaler.Report
	dec := json.NewDecoder(r)
	for dec.More() {
		var rep autoscaler.Report
		if err := dec.Decode(&rep); err != nil {
			t.Fatalf("run printed something that is not a JSON decision: %v", err)
		}
		reps = append(reps, rep)
	}
	return reps
}

func TestRunScalesOutAndRecordsAnEvent(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	code, reps, stderr := w.run(w.kubeconfig)
	if code != 0 || len(reps) != 1 {
		t.Fatalf("exit %d, %d reports\n%s", code, len(reps), stderr)
	}
	// 40 jobs / (5 x 0.8) x 1.2 = 12 workers; the HPA's default policy allows +4 from 2.
	rep := reps[0]
	if !rep.Applied || rep.To.Replicas != 6 || rep.To.Class != "medium" {
		t.Fatalf("report %+v", rep)
	}
	if got := *w.deployment().Spec.Replicas; got != 6 {
		t.Errorf("deployment has %d replicas, want 6", got)
	}
	waitEvent(t, w, autoscaler.EventScaledOut)
}

func TestRunChangesClass(t *testing.T) {
	w := newWorld(t, "horizontal: {sizing: seed}")
	w.createDeployment(10, "2", "4Gi", "5", "2", nil)
	// The seed's formula: 200 jobs / 0.8 x 1.2 = 300 slots: 60 medium or 30 large workers, both over their
	// maximum of 20; 15 xlarge fit, so the cheapest class that fits is xlarge. A fast queue
	// (40 jobs/s) keeps the wait, estimated at 5s, below warning.
	w.load(testenv.Queue{Waiting: 200, Active: 50, CompletedPerSecond: 40}, 0.5)
	code, reps, stderr := w.run(w.kubeconfig)
	if code != 0 || len(reps) != 1 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if rep := reps[0]; !rep.Applied || rep.To.Class != "xlarge" || rep.To.Replicas != 15 || rep.To.Concurrency != 20 {
		t.Fatalf("report %+v", rep)
	}
	d := w.deployment()
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 15 || c.Resources.Requests.Cpu().String() != "8" || c.Env[0].Value != "20" || c.Image != "worker:1" {
		t.Errorf("deployment: replicas %d, container %+v", *d.Spec.Replicas, c)
	}
	waitEvent(t, w, autoscaler.EventClassChanged)
}

// TestRunDryRunWritesNothing runs the dry-run with a user whom RBAC only lets read: it
// succeeds and prints its decision, and the same run without --dry-run is refused.
func TestRunDryRunWritesNothing(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	readOnly(t, w.cluster, "viewer")
	viewer := w.cluster.Kubeconfig(t, w.cluster.UserConfig(t, "viewer"))
	before := w.deployment().ResourceVersion

	code, reps, stderr := w.run(viewer, "--dry-run")
	if code != 0 || len(reps) != 1 {
		t.Fatalf("dry-run: exit %d\n%s", code, stderr)
	}
	if rep := reps[0]; rep.Applied || rep.Skipped != "dry-run" || rep.To.Replicas != 6 {
		t.Errorf("dry-run report %+v", rep)
	}
	if after := w.deployment().ResourceVersion; after != before {
		t.Errorf("the deployment changed during a dry-run (%s -> %s)", before, after)
	}
	// The API server records events of its own in "default" (its ServiceCIDR controller's):
	// only workerscale's, or any on the workload, count.
	events, err := w.cluster.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == "render" || e.Source.Component == "workerscale" || e.ReportingController == "workerscale" {
			t.Errorf("a dry-run recorded an event: %s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}

	// The text form: one line per workload.
	var out, errOut bytes.Buffer
	code = run(t.Context(), []string{"run", "--rules", w.rulesFile, "--kubeconfig", viewer, "--once", "--dry-run",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, &out, &errOut)
	if line := strings.TrimSpace(out.String()); code != 0 || strings.Count(line, "\n") != 0 ||
		!strings.HasPrefix(line, "render\t2 x medium (5/2) -> 6 x medium (5/2)\tdry-run\t") || !strings.Contains(line, "queueDepth=ok") {
		t.Errorf("text output (exit %d): %q", code, line)
	}

	code, _, stderr = w.run(viewer)
	if code != 1 || !strings.Contains(stderr, "forbidden") {
		t.Errorf("without --dry-run the read-only user must be refused: exit %d\n%s", code, stderr)
	}
}

// readOnly lets user get, list and watch Deployments, StatefulSets and their scale.
func readOnly(t *testing.T, c *testenv.Cluster, user string) {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "workerscale-reader"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "deployments/scale", "statefulsets/scale"},
			Verbs: []string{"get", "list", "watch"},
		}},
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "workerscale-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRunRestartKeepsCooldown: a class change is recorded on the workload, so a new
// process (no memory of the first) still waits out the cooldown.
//
// It stays on the plain cluster, its rollout faked with CompleteRollout: the concurrency
// raise it holds and then makes is decided while workerscale has not yet followed the
// fleet's jobs for the 4s rate window, so a job's CPU is not yet measured and its memory
// alone says the jobs are light. On a realistic cluster the Deployment controller takes
// several seconds to roll 20 large pods out; by then a job's CPU (0.8 cores, too heavy for
// an 11th slot) is measured, and the runs no longer decide the raise at all.
func TestRunRestartKeepsCooldown(t *testing.T) {
	w := newWorld(t, "vertical: {sustainFor: 10m}")
	w.createDeployment(10, "2", "4Gi", "5", "2", nil)
	// 150 jobs: more than 20 medium or 20 large hold; the first step is to large, the
	// largest class allowed.
	w.writeRules("vertical: {sustainFor: 10m}\n    classes: [medium, large]")
	w.load(testenv.Queue{Waiting: 150, Active: 50, CompletedPerSecond: 2}, 0.5)
	code, reps, stderr := w.run(w.kubeconfig)
	if code != 0 || !reps[0].Applied || reps[0].To.Class != "large" {
		t.Fatalf("first run: exit %d %+v\n%s", code, reps, stderr)
	}
	w.cluster.CompleteRollout(t, "default", "render")
	// Now allow a concurrency raise (replicas at large's maximum, the queue critical, jobs
	// light enough for more slots): a rollout, but the last one was moments ago. (A step
	// up for capacity would not wait: like the HPA's scale-up, it has no cooldown.)
	w.loadMemory(testenv.Queue{Waiting: 150, Active: 50, CompletedPerSecond: 2}, 0.5, 256<<20)
	w.writeRules("vertical: {sustainFor: 10m}\n    classes: [medium, large]\n    concurrency: {max: 12}")
	code, reps, stderr = w.run(w.kubeconfig)
	if code != 0 || reps[0].To.Concurrency != 10 || !contains(reps[0].LimitedBy, autoscaler.LimitCooldown) {
		t.Fatalf("second run (a new process): exit %d %+v\n%s", code, reps, stderr)
	}
	// With a cooldown of 0s the same run raises it: the hold above was the cooldown.
	w.writeRules("vertical: {sustainFor: 0s}\n    classes: [medium, large]\n    concurrency: {max: 12}")
	if code, reps, _ = w.run(w.kubeconfig); code != 0 || reps[0].To.Concurrency != 11 {
		t.Fatalf("with no cooldown: %+v", reps)
	}
}

func TestRunLeavesAPausedWorkloadAlone(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", map[string]string{kube.PausedAnnotation: "true"})
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	before := w.deployment().ResourceVersion
	code, reps, stderr := w.run(w.kubeconfig)
	if code != 0 || reps[0].Applied || reps[0].Skipped != "paused" {
		t.Fatalf("exit %d %+v\n%s", code, reps, stderr)
	}
	if w.deployment().ResourceVersion != before {
		t.Error("a paused workload was written")
	}
	// --paused does the same for every workload.
	d := w.deployment()
	delete(d.Annotations, kube.PausedAnnotation)
	if _, err := w.cluster.Client.AppsV1().Deployments("default").Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before = w.deployment().ResourceVersion
	if code, reps, _ = w.run(w.kubeconfig, "--paused"); code != 0 || reps[0].Skipped != "paused" || w.deployment().ResourceVersion != before {
		t.Errorf("--paused: %+v", reps)
	}
}

// TestTwoInstancesOneActs runs two controllers with leader election on one Lease: exactly
// one of them decides and acts. It also checks the leader's /metrics and /readyz.
func TestTwoInstancesOneActs(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	ctx, cancel := context.WithCancel(t.Context())
	type instance struct {
		out   syncBuffer
		probe string
	}
	var wg sync.WaitGroup
	instances := make([]*instance, 2)
	for i := range instances {
		in := &instance{probe: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		instances[i] = in
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx, []string{"run", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig, "--leader-elect=true",
				"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=200ms",
				"--leader-elect-resource-namespace=default", "-o", "json",
				"--metrics-bind-address", in.probe, "--health-probe-bind-address", in.probe, "--log-level", "error"}, &in.out, io.Discard)
		}()
	}
	time.Sleep(6 * time.Second)
	var leader *instance
	acting := 0
	for _, in := range instances {
		if in.out.Len() > 0 {
			acting++
			leader = in
		}
	}
	if acting != 1 {
		cancel()
		wg.Wait()
		t.Fatalf("%d instances decided, want exactly 1", acting)
	}
	metrics := get(t, "http://"+leader.probe+"/metrics")
	for _, want := range []string{"workerscale_rules_valid 1", "workerscale_build_info{goversion=", `workerscale_desired_replicas{workload="render"}`, "workerscale_cycles_total", "workerscale_prometheus_queries_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if body := get(t, "http://"+leader.probe+"/readyz"); strings.TrimSpace(body) != "ok" {
		t.Errorf("/readyz = %q", body)
	}
	cancel()
	wg.Wait()
	if got := *w.deployment().Spec.Replicas; got < 6 {
		t.Errorf("the leader did not act: %d replicas", got)
	}
}

// get is GET of a server that must be up.
func get(t *testing.T, url string) string {
	t.Helper()
	body := tryGet(url)
	if body == "" {
		t.Fatalf("GET %s answered nothing", url)
	}
	return body
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func waitEvent(t *testing.T, w *world, reason string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		list, err := w.cluster.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			if e.Reason == reason && e.InvolvedObject.Name == "render" {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("no %s event on deployment/render", reason)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRunKeepsOldRulesOnAnInvalidReload: a running controller given an invalid rules file
// keeps deciding with the old rules, logs every problem, and sets workerscale_rules_valid
// to 0; a fixed file takes effect.
func TestRunKeepsOldRulesOnAnInvalidReload(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", map[string]string{kube.PausedAnnotation: "true"})
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var out, logs syncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, []string{"run", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig, "-o", "json",
			"--metrics-bind-address", addr, "--health-probe-bind-address", addr}, &out, &logs)
	}()
	metrics := func() string { return tryGet("http://" + addr + "/metrics") }
	waitFor(t, func() bool { return strings.Contains(metrics(), "workerscale_rules_valid 1") && out.Len() > 0 })

	if err := os.WriteFile(w.rulesFile, []byte("prometheus: {url: 'http://p:9090'}\nclasses: []\nworkloads: [{name: render, maxReplica: 3}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(metrics(), "workerscale_rules_valid 0") })
	// Decisions go on with the old rules.
	n := out.Len()
	waitFor(t, func() bool { return out.Len() > n })
	log := logs.String()
	for _, want := range []string{"invalid rules; the previous rules stay in force", "classes: at least one class is required", "unknown field", "maxReplicas"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	w.writeRules("classes: [medium]\n    maxReplicas: 12")
	waitFor(t, func() bool { return strings.Contains(metrics(), "workerscale_rules_valid 1") })
	cancel()
	<-done
}

// tryGet is GET that answers "" while the server is not up yet.
func tryGet(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The text decisions carry their warnings, a line each under the workload's name.
func TestReporterPrintsWarnings(t *testing.T) {
	var out bytes.Buffer
	shape := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	reporter(&out, formatText)(autoscaler.Report{Decision: autoscaler.Decision{Workload: "render", From: shape, To: shape,
		Reasons: []string{"hold at 2 replicas of medium"}, Warnings: []string{"terminationGracePeriodSeconds is 30s, shorter than 90s"}}})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || lines[1] != "render\twarning: terminationGracePeriodSeconds is 30s, shorter than 90s" {
		t.Errorf("printed:\n%s", out.String())
	}
}
