package autoscaler

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workerscale/workerscale/rules"
)

// A reload that removes a workload drops what the loop kept for it: its history, last
// report, events and series; the cluster is asked to do the same, once per change of the
// rules, not every cycle.
func TestReloadForgetsRemovedWorkloads(t *testing.T) {
	both := load(t, flatClass+"workloads:\n  - {name: render, maxReplicas: 20}\n  - {name: other, maxReplicas: 20}\n")
	one := load(t, flatClass+"workloads:\n  - {name: render, maxReplicas: 20}\n")
	current := both
	fc := &fakeCluster{current: Current{State: state(2, "medium", 5, 2)}}
	reg := prometheus.NewRegistry()
	l := &Loop{
		Rules: func() *rules.Rules { return current },
		Observe: func(_ context.Context, r *rules.Rules, _ time.Time) (map[string]Observations, []error) {
			obs := map[string]Observations{}
			for _, w := range r.Workloads {
				obs[w.Name] = Observations{rules.QueueDepth: Value(5000)} // missing inputs: an event
			}
			return obs, nil
		},
		Cluster: fc,
		Metrics: NewLoopMetrics(reg),
		Now:     func() time.Time { return t0 },
	}
	for range 2 {
		if err := l.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if last, _ := l.Last(); len(last) != 2 {
		t.Fatalf("%d reports before the reload, want 2", len(last))
	}
	current = one
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if last, _ := l.Last(); len(last) != 1 || last["other"].Workload != "" {
		t.Errorf("reports after the reload: %v, want render's alone", last)
	}
	l.mu.Lock()
	_, history := l.history["other"]
	events := 0
	for id := range l.lastEvents {
		if id[0] == "other" {
			events++
		}
	}
	l.mu.Unlock()
	if history || events > 0 {
		t.Errorf("kept for the removed workload: history %v, %d events", history, events)
	}
	if n := testutil.CollectAndCount(newWorkloadCollector(l.Metrics), "workerscale_desired_replicas"); n != 1 {
		t.Errorf("%d workerscale_desired_replicas series after the reload, want 1", n)
	}
	if len(fc.retained) != 2 || fc.retained[0] != both || fc.retained[1] != one {
		t.Errorf("the cluster retained %d times, want twice (the first rules, then the reload)", len(fc.retained))
	}
}
