package autoscaler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

func ptr[T any](v T) *T { return &v }

// characters of the blizzard test rules: concurrency {global 2, min 1, max 3}, at most 100
// replicas, on a budget of 245 rps at 8 rps a worker of 2 slots.
func overrideInput(t *testing.T, obs map[string]float64) (*rules.Rules, Input) {
	t.Helper()
	r := load(t, strings.ReplaceAll(blizzard, "maxReplicas: 100", "maxReplicas: 10"))
	return r, Input{Workload: &r.Workloads[0], Observations: fresh(obs), State: state(4, "standard", 2, 1)}
}

func TestOverrideHolds(t *testing.T) {
	r, in := overrideInput(t, map[string]float64{rules.QueueDepth: 0, rules.Throughput: 4, rules.ActiveJobs: 4})
	in.Override = &Override{Replicas: ptr[int32](6), Concurrency: ptr(3), By: "api", Set: t0}
	d := Decide(t0, r, in)
	if d.To.Replicas != 6 || d.To.Concurrency != 3 || d.Engine == nil || d.Override == nil || !hasReason(d, "override: 6 replicas, concurrency 3 (set by api); the engine alone would run") {
		t.Errorf("to %+v, engine %+v\n%s", d.To, d.Engine, strings.Join(d.Reasons, "\n"))
	}
	if err := CheckOverride(t0, r, in, in.Override); err != nil {
		t.Errorf("a valid override refused: %v", err)
	}
	// The engine's decision alone, beside it.
	in.Override = nil
	if e := Decide(t0, r, in); e.To != *d.Engine {
		t.Errorf("engine %+v beside the override, %+v alone", *d.Engine, e.To)
	}
}

// An override is refused, naming the field, where a guard would change it: bounds, the
// class's concurrency, the budget, no scale-down on missing metrics.
func TestCheckOverrideRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		obs   map[string]float64
		o     Override
		field string
		why   string
	}{
		{"concurrency above concurrency.max", nil, Override{Concurrency: ptr(9)}, "concurrency", "9 is outside [1, 3]"},
		{"concurrency below concurrency.min", nil, Override{Concurrency: ptr(0)}, "concurrency", "outside [1, 3]"},
		{"replicas above maxReplicas", nil, Override{Replicas: ptr[int32](50)}, "replicas", "replicas 50 would be 10"},
		{"negative replicas", nil, Override{Replicas: ptr[int32](-1)}, "replicas", "must not be negative"},
		{"nothing set", nil, Override{}, "replicas", "sets replicas, concurrency or both"},
		{"expired", nil, Override{Replicas: ptr[int32](5), Expires: t0.Add(-time.Minute)}, "expires", "not in the future"},
		{"a scale-down while metrics are missing", map[string]float64{"none": 0}, Override{Replicas: ptr[int32](2)}, "replicas", "missing"},
		{"past the rate budget", nil, Override{Replicas: ptr[int32](10), Concurrency: ptr(3)}, "replicas", "rateBudget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := tc.obs
			if obs == nil {
				obs = map[string]float64{rules.QueueDepth: 0, rules.Throughput: 4, rules.ActiveJobs: 4}
			}
			r, in := overrideInput(t, obs)
			if _, none := obs["none"]; none {
				in.Observations = Observations{}
			}
			if tc.name == "past the rate budget" {
				r = load(t, strings.NewReplacer("maxReplicas: 100", "maxReplicas: 10", "keys: 5", "keys: 1").Replace(blizzard))
				in.Workload = &r.Workloads[0]
			}
			err := CheckOverride(t0, r, in, &tc.o)
			var oe *OverrideError
			if !errors.As(err, &oe) || oe.Field != tc.field || !strings.Contains(oe.Msg, tc.why) {
				t.Errorf("got %v, want field %s with %q", err, tc.field, tc.why)
			}
		})
	}
}

// A lapsed override hands back to the engine, and the concurrency it set goes back to the
// configured value.
func TestOverrideLapses(t *testing.T) {
	r, in := overrideInput(t, map[string]float64{rules.QueueDepth: 0, rules.Throughput: 4, rules.ActiveJobs: 4})
	in.State = state(4, "standard", 3, 1)
	in.Override = &Override{Concurrency: ptr(3), Expires: t0.Add(-time.Second), By: "alert QueueBackedUp 1234", Set: t0.Add(-time.Hour)}
	d := Decide(t0, r, in)
	if d.Override != nil || d.To.Concurrency != 2 || !hasReason(d, "expired") || !hasReason(d, "goes back to the configured 2") {
		t.Errorf("to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

type overrideCluster struct {
	fakeCluster
	stored []*Override
}

func (c *overrideCluster) SetOverride(_ context.Context, _ *rules.Workload, o *Override) error {
	c.stored = append(c.stored, o)
	c.current.Override = o
	return nil
}

// The loop removes a lapsed override once it has acted without it; it leaves a live one,
// and writes nothing in dry-run.
func TestLoopRemovesALapsedOverride(t *testing.T) {
	l, fc, now := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 0, rules.Throughput: 1, rules.ActiveJobs: 1}), state(2, "medium", 5, 2))
	oc := &overrideCluster{fakeCluster: *fc}
	l.Cluster = oc
	oc.current.Override = &Override{Replicas: ptr[int32](3), Expires: now.Add(time.Minute), By: "api", Set: *now}
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(oc.stored) != 0 || oc.current.State.Replicas != 3 {
		t.Fatalf("a live override: stored %v, replicas %d", oc.stored, oc.current.State.Replicas)
	}
	*now = now.Add(2 * time.Minute)
	l.DryRun = true
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(oc.stored) != 0 {
		t.Fatalf("dry-run removed the override")
	}
	l.DryRun = false
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(oc.stored) != 1 || oc.stored[0] != nil {
		t.Errorf("a lapsed override: stored %v", oc.stored)
	}
}
