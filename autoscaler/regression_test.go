package autoscaler

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/workerscale/workerscale/rules"
)

// An unmanaged tenant env var (env.tenantConcurrency: "") reads as 0; that must not look
// like a change every cycle, which would reset the history and never scale down.
func TestUnmanagedConcurrencyIsNotAChange(t *testing.T) {
	r, w := seeded(t, noBehavior+"env: {tenantConcurrency: \"\"}\nvertical: {enabled: false}")
	fc := &fakeCluster{current: Current{State: state(10, "medium", 5, 0)}}
	now := t0
	l := &Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(context.Context, *rules.Rules, time.Time) (map[string]Observations, []error) {
			return map[string]Observations{w.Name: fresh(nil)}, nil
		},
		Cluster: fc, Metrics: NewLoopMetrics(prometheus.NewRegistry()), Now: func() time.Time { return now },
	}
	for range 3 {
		if err := l.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(15 * time.Second)
	}
	if got := fc.current.State.Replicas; got != 1 {
		t.Errorf("replicas %d after an idle minute with no scale-down window, want 1; applied %+v", got, fc.applied)
	}
	for _, d := range fc.applied {
		if d.To.TenantConcurrency != 0 || d.To.Concurrency != 5 {
			t.Errorf("an unmanaged tenant concurrency was changed: %+v", d.To)
		}
	}
}

// With the concurrency env var absent (read as 0), the fleet is sized at the class's.
func TestUnknownConcurrencySizesAtTheClass(t *testing.T) {
	r, w := seeded(t, noBehavior+"vertical: {enabled: false}")
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 20}), State: state(2, "medium", 0, 0)})
	// 20 / 0.8 x 1.2 = 30 slots at medium's 5: 6 workers, and the env vars get written.
	if d.To.Replicas != 6 || d.To.Concurrency != 5 || d.To.TenantConcurrency != 2 {
		t.Errorf("to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

func TestNoClassChangeLosesCapacityWhileMetricsAreMissing(t *testing.T) {
	r, w := seeded(t, noBehavior)
	obs := Observations{rules.QueueDepth: Value(0), rules.ActiveJobs: Value(0), rules.CPU: Value(0.2), rules.Memory: Value(0.2)} // throughput missing
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(20, "medium", 5, 2), History: sustainedFor(time.Hour, condCPULow)})
	if d.To.Replicas*int32(d.To.Concurrency) < 100 {
		t.Errorf("capacity fell from 100 slots to %d x %d with throughput missing\n%s", d.To.Replicas, d.To.Concurrency, strings.Join(d.Reasons, "\n"))
	}
}

// A momentary dip within the scale-down window does not shrink the fleet by way of a
// cheaper class.
func TestCostMoveIsSizedOnTheStabilizedRequirement(t *testing.T) {
	r, w := seeded(t, "")
	h := History{Recommendations: []Recommendation{{Time: t0.Add(-time.Minute), Replicas: 10}}}
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 6}), State: state(10, "small", 2, 1), History: h})
	if slots := int(d.To.Replicas) * d.To.Concurrency; slots < 20 {
		t.Errorf("to %+v: %d slots, want at least the 20 recommended a minute ago\n%s", d.To, slots, strings.Join(d.Reasons, "\n"))
	}
}

// The HPA counts the replicas at a period's start as current - added + removed.
func TestRatePolicyCountsBothDirections(t *testing.T) {
	r, w := single(t, "vertical: {enabled: false}\nbehavior: {scaleUp: {policies: [{type: Percent, value: 100, period: 60s}]}}")
	h := History{ScaleEvents: []ScaleEvent{{Time: t0.Add(-30 * time.Second), Delta: -10}}}
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 5000}), State: state(10, "medium", 5, 2), History: h})
	if d.To.Replicas != 40 {
		t.Errorf("to %d, want 40 (the period began at 20)", d.To.Replicas)
	}
}

func TestScaleUpFromZeroWithPercentPolicies(t *testing.T) {
	r, w := single(t, "vertical: {enabled: false}\nminReplicas: 0\nbehavior: {scaleUp: {policies: [{type: Percent, value: 100, period: 15s}]}}")
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 500}), State: state(0, "medium", 5, 2)})
	if d.To.Replicas != 1 {
		t.Errorf("from 0: to %d, want 1", d.To.Replicas)
	}
}

func TestToleranceDoesNotUndoTheFallback(t *testing.T) {
	r, w := single(t, noBehavior+"vertical: {enabled: false}\nfallbackReplicas: 21")
	d := Decide(t0, r, Input{Workload: w, Observations: Observations{}, State: state(20, "medium", 5, 2)})
	if d.To.Replicas != 21 {
		t.Errorf("to %d, want the fallback 21", d.To.Replicas)
	}
}

func TestConcurrencyIsRaisedOnlyOnceReplicasAreAtTheirMaximum(t *testing.T) {
	r := load(t, strings.ReplaceAll(blizzard, "maxReplicas: 100", "maxReplicas: 20"))
	d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: 5000, RateLimited: 0}), State: state(5, "standard", 2, 1)})
	if d.To.Replicas != 20 || d.To.Concurrency != 2 {
		t.Errorf("to %+v: scale out first, raise concurrency only once held at the maximum", d.To)
	}
}

// The budget is a hard cap like maxReplicas: a workload in the middle of a rollout keeps
// its class and concurrency, but draws on the budget like the others and is capped too.
func TestBudgetCapsWorkloadsMidRollout(t *testing.T) {
	r := load(t, blizzard)
	rolling := state(30, "standard", 2, 1)
	rolling.RolloutInProgress = true
	ds := DecideAll(t0, r, []Input{
		{Workload: &r.Workloads[0], Observations: fresh(nil), State: rolling},
		{Workload: &r.Workloads[1], Observations: fresh(map[string]float64{rules.QueueDepth: 96}), State: state(5, "standard", 2, 1)},
	})
	// characters 30 x 2 x 4 rps / 0.2 s = 1200 rps on their own: more than the 245 there are.
	var used float64
	for i, d := range ds {
		w := &r.Workloads[i]
		used += float64(d.To.Replicas) * float64(d.To.Concurrency) * *w.RequestsPerJob / w.Horizontal.JobDuration.D().Seconds()
		if i == 0 && !slices.Contains(d.LimitedBy, LimitRateBudget) {
			t.Errorf("%s: limited by %v, want the rate budget\n%s", d.Workload, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
	}
	if used > 245 {
		t.Errorf("the workloads use %v rps of the 245 the budget has", used)
	}
	if ds[0].To.Class != "standard" || ds[0].To.Concurrency != 2 {
		t.Errorf("mid-rollout: to %+v, want the class and concurrency kept", ds[0].To)
	}
}

func TestMinMaxHoldDuringARollout(t *testing.T) {
	r, w := seeded(t, "")
	w.MaxReplicas = 8 // lowered by a reload while the rollout runs
	st := state(12, "medium", 5, 2)
	st.RolloutInProgress = true
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(nil), State: st})
	if d.To.Replicas != 8 || d.To.Class != "medium" {
		t.Errorf("to %+v, want maxReplicas 8 even mid-rollout", d.To)
	}
}
