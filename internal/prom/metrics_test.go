package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workerscale/workerscale/rules"
)

// A reload that removes a workload drops its observation counts; the unmatched series
// (no workload) stays.
func TestOutcomesOfRemovedWorkloadsAreDropped(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.outcome("render", "fresh", 3)
	m.outcome("other", "stale", 1)
	count := func() int {
		return testutil.CollectAndCount(m.outcomes, "workerscale_prometheus_observations_total")
	}
	if n := count(); n != 3 {
		t.Fatalf("%d series, want 3 (render fresh, other stale, unmatched)", n)
	}
	m.retain(&rules.Rules{Workloads: []rules.Workload{{Name: "render"}}})
	if n := count(); n != 2 {
		t.Errorf("%d series after the reload, want 2 (render fresh, unmatched)", n)
	}
}
