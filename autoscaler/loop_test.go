package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workerscale/workerscale/rules"
)

// fakeCluster is an in-memory cluster for the loop's own logic; the real one is tested
// against a kube-apiserver in internal/kube and cmd/workerscale.
type fakeCluster struct {
	current  Current
	applied  []Decision
	events   []string
	messages []string
	applyErr error
	panics   bool
	retained []*rules.Rules // the rules of each Retain call
}

func (f *fakeCluster) Retain(r *rules.Rules) { f.retained = append(f.retained, r) }

func (f *fakeCluster) Read(context.Context, *rules.Rules, *rules.Workload) (Current, error) {
	return f.current, nil
}

func (f *fakeCluster) Apply(_ context.Context, _ *rules.Rules, _ *rules.Workload, d Decision, _ time.Time) error {
	if f.panics {
		panic("a bug in a write")
	}
	if f.applyErr != nil {
		return f.applyErr
	}
	f.applied = append(f.applied, d)
	f.current.State.Shape = d.To
	return nil
}

func (f *fakeCluster) Event(_ context.Context, _ *rules.Workload, _, reason, message string) {
	f.events = append(f.events, reason)
	f.messages = append(f.messages, message)
}

func newLoop(t *testing.T, obs Observations, st State) (*Loop, *fakeCluster, *time.Time) {
	t.Helper()
	r, _ := single(t, "vertical: {enabled: false}")
	fc := &fakeCluster{current: Current{State: st}}
	now := t0
	l := &Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(context.Context, *rules.Rules, time.Time) (map[string]Observations, []error) {
			return map[string]Observations{"render": obs}, nil
		},
		Cluster: fc,
		Metrics: NewLoopMetrics(prometheus.NewRegistry()),
		Now:     func() time.Time { return now },
	}
	return l, fc, &now
}

func TestLoopAppliesAndCarriesHistory(t *testing.T) {
	l, fc, now := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 5000}), state(2, "medium", 5, 2))
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(fc.applied) != 1 || fc.applied[0].To.Replicas != 6 {
		t.Fatalf("applied %+v, want 2 -> 6 (+4 pods)", fc.applied)
	}
	// Five seconds later the period that began at 2 replicas is not over: its limit,
	// max(2+4, 2x2) = 6, is spent, so nothing changes.
	*now = now.Add(5 * time.Second)
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(fc.applied) != 1 {
		t.Fatalf("second cycle applied %+v; the scale event of the first must count", fc.applied[1:])
	}
	// Once the period has passed, +100% of 6 is the limit: 12.
	*now = now.Add(15 * time.Second)
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(fc.applied) != 2 || fc.applied[1].To.Replicas != 12 {
		t.Errorf("third cycle applied %+v, want 6 -> 12", fc.applied[1:])
	}
}

func TestLoopEventsReportConditionsOnce(t *testing.T) {
	// Missing throughput and active jobs, and a scale-up limited by the policy.
	l, fc, now := newLoop(t, Observations{rules.QueueDepth: Value(5000)}, state(2, "medium", 5, 2))
	for range 3 {
		if err := l.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		*now = now.Add(15 * time.Second)
	}
	count := map[string]int{}
	for _, e := range fc.events {
		count[e]++
	}
	if count[EventScaledOut] != 3 || count[EventMetricsUnavailable] != 1 || count[EventScalingLimited] != 1 {
		t.Errorf("events %v: want a ScaledOut per cycle, and one MetricsUnavailable and one ScalingLimited", count)
	}
	*now = now.Add(eventRepeat)
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(fc.events, " "), EventMetricsUnavailable); n != 2 {
		t.Errorf("after %s the lasting condition is reported again: %d MetricsUnavailable", eventRepeat, n)
	}
}

func TestLoopDryRunAndPauseWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(*Loop, *fakeCluster)
		skipped string
	}{
		{"dry-run", func(l *Loop, _ *fakeCluster) { l.DryRun = true }, "dry-run"},
		{"paused annotation", func(_ *Loop, fc *fakeCluster) { fc.current.Paused = true }, "paused"},
		{"--paused", func(l *Loop, _ *fakeCluster) { l.PauseAll = true }, "paused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, fc, _ := newLoop(t, Observations{rules.QueueDepth: Value(5000)}, state(2, "medium", 5, 2))
			tc.setup(l, fc)
			var reps []Report
			l.Report = func(r Report) { reps = append(reps, r) }
			if err := l.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if len(fc.applied) != 0 || len(fc.events) != 0 {
				t.Errorf("wrote: applied %v, events %v", fc.applied, fc.events)
			}
			if len(reps) != 1 || reps[0].Skipped != tc.skipped || reps[0].To.Replicas != 6 || reps[0].Applied {
				t.Errorf("report %+v", reps)
			}
		})
	}
}

func TestLoopReportsAFailedWrite(t *testing.T) {
	l, fc, _ := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 5000}), state(2, "medium", 5, 2))
	fc.applyErr = errors.New("forbidden")
	err := l.RunOnce(t.Context())
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("RunOnce = %v, want the write's error", err)
	}
	if !strings.Contains(strings.Join(fc.events, " "), "FailedRescale") {
		t.Errorf("events %v, want FailedRescale", fc.events)
	}
	if n := testutil.ToFloat64(l.Metrics.errors.WithLabelValues("apply")); n != 1 {
		t.Errorf("apply errors = %v", n)
	}
	if n := testutil.ToFloat64(l.Metrics.cycles.WithLabelValues("error")); n != 1 {
		t.Errorf("failed cycles = %v", n)
	}
}

// A write that panics fails that workload's write, reported like any failed write; the
// cycle and the process go on.
func TestLoopSurvivesAPanickingWrite(t *testing.T) {
	l, fc, _ := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 5000}), state(2, "medium", 5, 2))
	fc.panics = true
	err := l.RunOnce(t.Context())
	if err == nil || !strings.Contains(err.Error(), "internal error writing workload") {
		t.Errorf("RunOnce = %v, want the panic as the write's error", err)
	}
	if !strings.Contains(strings.Join(fc.events, " "), "FailedRescale") {
		t.Errorf("events %v, want FailedRescale", fc.events)
	}
}

// Another autoscaler on the workload: the loop writes the axis that is still workerscale's
// (here the replicas, the vertical axis being off in these rules), nothing with both owned,
// and reports each owner once, naming its axis, and again when the owners change.
func TestLoopStandsBackForAnotherAutoscaler(t *testing.T) {
	const hpa, vpa = "HorizontalPodAutoscaler default/render", "VerticalPodAutoscaler default/render (updateMode Auto)"
	for _, tc := range []struct {
		name     string
		owners   Owners
		replicas int32 // written, 0 for nothing
		event    string
	}{
		{"an HPA owns the replicas", Owners{Horizontal: hpa}, 0, hpa + " scales this workload's replicas: workerscale leaves them to it"},
		{"a VPA owns the pod template", Owners{Vertical: vpa}, 6, vpa + " sets this workload's container resources: workerscale leaves the pod template"},
		{"both", Owners{Horizontal: hpa, Vertical: vpa}, 0, "workerscale decides but writes nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, fc, now := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 5000}), state(2, "medium", 5, 2))
			fc.current.Owners = tc.owners
			var reps []Report
			l.Report = func(r Report) { reps = append(reps, r) }
			for range 2 {
				if err := l.RunOnce(t.Context()); err != nil {
					t.Fatal(err)
				}
				*now = now.Add(15 * time.Second)
			}
			rep := reps[0]
			switch {
			case tc.replicas == 0 && len(fc.applied) != 0:
				t.Errorf("applied %+v", fc.applied)
			case tc.replicas != 0 && (len(fc.applied) == 0 || fc.applied[0].To.Replicas != tc.replicas):
				t.Errorf("applied %+v, want %d replicas", fc.applied, tc.replicas)
			}
			// The engine keeps the owned axes: there is nothing to skip.
			if rep.Skipped != "" || rep.Owners != tc.owners {
				t.Errorf("report skipped %q, owners %+v", rep.Skipped, rep.Owners)
			}
			if tc.owners.Horizontal != "" && (rep.To.Replicas != 2 || !hasReason(rep.Decision, "replicas are left to "+hpa+": they stay at 2")) {
				t.Errorf("replicas %d, reasons %q", rep.To.Replicas, rep.Reasons)
			}
			var conflicts []string
			for i, e := range fc.events {
				if e == EventAutoscalerConflict {
					conflicts = append(conflicts, fc.messages[i])
				}
			}
			if len(conflicts) != 1 || !strings.Contains(conflicts[0], tc.event) {
				t.Errorf("AutoscalerConflict events over two cycles: %q, want one saying %q", conflicts, tc.event)
			}
			// The owners change: reported again; gone: the next time is reported anew.
			fc.current.Owners = Owners{Horizontal: "HorizontalPodAutoscaler default/other"}
			if err := l.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(strings.Join(fc.events, " "), EventAutoscalerConflict); n != 2 {
				t.Errorf("%d AutoscalerConflict events after the owners changed, want 2", n)
			}
		})
	}
}

// gatedCluster blocks the write of "slow" until every other workload has been written.
type gatedCluster struct {
	mu      sync.Mutex
	others  int
	written int
	release chan struct{}
}

func (g *gatedCluster) Read(_ context.Context, _ *rules.Rules, w *rules.Workload) (Current, error) {
	return Current{State: state(2, "medium", 5, 2)}, nil
}

func (g *gatedCluster) Apply(_ context.Context, _ *rules.Rules, w *rules.Workload, _ Decision, _ time.Time) error {
	if w.Name == "slow" {
		select {
		case <-g.release:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("the other writes never came: the writes are not concurrent")
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written++
	if g.written == g.others {
		close(g.release)
	}
	return nil
}

func (g *gatedCluster) Event(context.Context, *rules.Workload, string, string, string) {}

// One slow write does not hold the others: a cycle's writes go out together.
func TestLoopWritesConcurrently(t *testing.T) {
	var b strings.Builder
	b.WriteString("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2}\nqueries: {preset: bullmq}\nworkloads:\n")
	names := []string{"slow", "a", "b", "c", "d", "e"}
	for _, n := range names {
		fmt.Fprintf(&b, "  - {name: %s, maxReplicas: 50, target: {namespace: default, name: %s}}\n", n, n)
	}
	r := load(t, b.String())
	g := &gatedCluster{others: len(names) - 1, release: make(chan struct{})}
	obs := map[string]Observations{}
	for _, n := range names {
		obs[n] = fresh(map[string]float64{rules.QueueDepth: 5000})
	}
	l := &Loop{
		Rules:   func() *rules.Rules { return r },
		Observe: func(context.Context, *rules.Rules, time.Time) (map[string]Observations, []error) { return obs, nil },
		Cluster: g, Metrics: NewLoopMetrics(prometheus.NewRegistry()), Now: func() time.Time { return t0 },
	}
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// workerscale_metrics_missing carries the workload: how many of its replica inputs were
// missing in its last decision.
func TestMissingMetricsGauge(t *testing.T) {
	l, _, now := newLoop(t, Observations{rules.QueueDepth: Value(10)}, state(2, "medium", 5, 2))
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := workloadGauge(t, l.Metrics, "workerscale_metrics_missing", "render"); n < 1 {
		t.Errorf("missing throughput and active jobs: gauge %v", n)
	}
	l.Observe = func(context.Context, *rules.Rules, time.Time) (map[string]Observations, []error) {
		return map[string]Observations{"render": fresh(map[string]float64{rules.QueueDepth: 10, rules.Throughput: 1, rules.ActiveJobs: 2})}, nil
	}
	*now = now.Add(15 * time.Second)
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := workloadGauge(t, l.Metrics, "workerscale_metrics_missing", "render"); n != 0 {
		t.Errorf("every input fresh: gauge %v", n)
	}
}

// workerscale_workload_class shows one current and one desired class per workload: a
// class it no longer runs or wants is removed.
func TestClassGaugeFollowsTheClass(t *testing.T) {
	m := NewLoopMetrics(prometheus.NewRegistry())
	shape := func(class string) Shape { return Shape{Replicas: 2, Class: class, Concurrency: 5} }
	m.decision("render", Report{Decision: Decision{From: shape("medium"), To: shape("large")}}, 2)
	m.decision("render", Report{Decision: Decision{From: shape("large"), To: shape("large")}}, 2)
	m.decision("other", Report{Decision: Decision{From: shape("small"), To: shape("small")}}, 1)
	if n := testutil.CollectAndCount(newWorkloadCollector(m), "workerscale_workload_class"); n != 4 {
		t.Errorf("%d class series, want 4 (render large current and desired, other small twice)", n)
	}
	if v := workloadGauge(t, m, "workerscale_workload_class", "render", "large", "current"); v != 1 {
		t.Errorf("render large current = %v", v)
	}
}

// workloadGauge is the value of one of m's per-workload gauges, found by its label values
// (in any order); the test fails when there is no such series.
func workloadGauge(t *testing.T, m *LoopMetrics, name string, labelValues ...string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newWorkloadCollector(m))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			if len(s.GetLabel()) != len(labelValues) {
				continue
			}
			for _, l := range s.GetLabel() {
				if !slices.Contains(labelValues, l.GetValue()) {
					continue series
				}
			}
			return s.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labelValues)
	return 0
}
