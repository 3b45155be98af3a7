package autoscaler

import (
	"errors"
	"slices"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

const (
	testHPA = "HorizontalPodAutoscaler default/render (KEDA ScaledObject render)"
	testVPA = "VerticalPodAutoscaler default/render (updateMode Auto)"
)

// outgrown is load that outgrows class medium: on its own, workerscale steps up to large
// and scales out.
func outgrown() Observations {
	return fresh(map[string]float64{rules.QueueDepth: 3000, rules.Throughput: 20, rules.ActiveJobs: 10, rules.Memory: 0.1, rules.CPU: 0.2})
}

// Each axis another autoscaler owns keeps its current values, the other is decided as
// usual, and the reasons name the owner.
func TestOwnedAxisIsLeftAsItIs(t *testing.T) {
	r, w := seeded(t, "classes: [medium, large]")
	for _, tc := range []struct {
		name    string
		owners  Owners
		want    Shape
		reasons []string
	}{
		{"none", Owners{}, Shape{Replicas: 20, Class: "large", Concurrency: 10, TenantConcurrency: 3}, nil},
		{"an HPA: the class still changes", Owners{Horizontal: testHPA}, Shape{Replicas: 4, Class: "large", Concurrency: 10, TenantConcurrency: 3},
			[]string{"replicas are left to " + testHPA + ": they stay at 4"}},
		{"a VPA: the replicas still change", Owners{Vertical: testVPA}, Shape{Replicas: 8, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			[]string{"the class, concurrency and rate limiter are left to " + testVPA}},
		{"both: nothing changes", Owners{Horizontal: testHPA, Vertical: testVPA}, Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			[]string{"replicas are left to " + testHPA, "left to " + testVPA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(t0, r, Input{Workload: w, Observations: outgrown(), State: state(4, "medium", 5, 2), Owners: tc.owners})
			if d.To != tc.want || d.Owners != tc.owners {
				t.Errorf("to %+v, owners %+v; want %+v\n%q", d.To, d.Owners, tc.want, d.Reasons)
			}
			for _, want := range tc.reasons {
				if !hasReason(d, want) {
					t.Errorf("no reason %q in %q", want, d.Reasons)
				}
			}
			if tc.owners.Horizontal != "" && slices.Contains(d.LimitedBy, LimitBehavior) {
				t.Errorf("limited by %v: the replica policies did not shape a count left to the HPA", d.LimitedBy)
			}
		})
	}
}

// With the replicas an HPA's, a template change that they cannot hold is not made: a
// class whose maximum is below them, or one with fewer slots than the fleet must keep.
func TestATemplateChangeMustHoldOnTheReplicasAnHPAKeeps(t *testing.T) {
	r := load(t, `prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
  - {name: large,  cpu: "4", memory: 8Gi, concurrency: 10, tenantConcurrency: 3, maxReplicas: 12}
queries: {preset: bullmq}
workloads:
  - {name: render, maxReplicas: 40, classes: [medium, large]}
`)
	w := &r.Workloads[0]
	for _, tc := range []struct {
		name     string
		replicas int32
		want     string
		why      string
	}{
		{"the HPA holds fewer than large runs", 4, "large", ""},
		{"the HPA holds more than large runs", 16, "medium", "class large runs at most 12 workers, fewer than the 16 that " + testHPA + " holds; the class and concurrency stay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(t0, r, Input{Workload: w, Observations: outgrown(), State: state(tc.replicas, "medium", 5, 2), Owners: Owners{Horizontal: testHPA}})
			if d.To.Class != tc.want || d.To.Replicas != tc.replicas {
				t.Errorf("to %+v, want %d x %s\n%q", d.To, tc.replicas, tc.want, d.Reasons)
			}
			if tc.why != "" && !hasReason(d, tc.why) {
				t.Errorf("no reason %q in %q", tc.why, d.Reasons)
			}
		})
	}
}

// An override on an axis another autoscaler owns is refused (the API's 422), and one
// stored before it came is not applied there; on the other axis it holds as usual.
func TestOverridesKeepOffOwnedAxes(t *testing.T) {
	r, w := seeded(t, "classes: [medium, large]\nconcurrency: {max: 8}")
	six, three, seven := int32(6), 3, 7
	for _, tc := range []struct {
		name   string
		owners Owners
		o      Override
		field  string // of the refusal, "" when accepted
		want   Shape  // what a stored o makes the decision
	}{
		{"replicas with an HPA", Owners{Horizontal: testHPA}, Override{Replicas: &six}, "replicas", Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2}},
		{"more concurrency with an HPA", Owners{Horizontal: testHPA}, Override{Concurrency: &seven}, "", Shape{Replicas: 4, Class: "medium", Concurrency: 7, TenantConcurrency: 2}},
		// Fewer slots on the replicas the HPA keeps would break the scale-down window.
		{"less concurrency with an HPA", Owners{Horizontal: testHPA}, Override{Concurrency: &three}, "concurrency", Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2}},
		{"concurrency with a VPA", Owners{Vertical: testVPA}, Override{Concurrency: &three}, "concurrency", Shape{Replicas: 5, Class: "medium", Concurrency: 5, TenantConcurrency: 2}},
		{"replicas with a VPA", Owners{Vertical: testVPA}, Override{Replicas: &six}, "", Shape{Replicas: 6, Class: "medium", Concurrency: 5, TenantConcurrency: 2}},
		{"both with both", Owners{Horizontal: testHPA, Vertical: testVPA}, Override{Replicas: &six, Concurrency: &three}, "replicas", Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 10, rules.Throughput: 4, rules.ActiveJobs: 12}),
				State: state(4, "medium", 5, 2), Owners: tc.owners}
			o := tc.o
			o.By, o.Set = "api", t0
			err := CheckOverride(t0, r, in, &o)
			var oe *OverrideError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.field != "" && (!errors.As(err, &oe) || oe.Field != tc.field):
				t.Errorf("CheckOverride = %v, want a refusal of %s", err, tc.field)
			}
			in.Override = &o
			d := Decide(t0, r, in)
			if d.To != tc.want {
				t.Errorf("with the override stored: to %+v, want %+v\n%q", d.To, tc.want, d.Reasons)
			}
			owned := (tc.o.Replicas != nil && tc.owners.Horizontal != "") || (tc.o.Concurrency != nil && tc.owners.Vertical != "")
			if owned && !hasReason(d, "not applied") {
				t.Errorf("no reason says the override is not applied: %q", d.Reasons)
			}
		})
	}
}

// A member of a rate budget whose replicas an HPA holds is not cut: the other members make
// room for it.
func TestARateBudgetMakesRoomForReplicasAnHPAHolds(t *testing.T) {
	r := load(t, flatClass+`rateBudgets: [{name: api, keys: 1, safeRequestsPerSecond: 100, safetyFactor: 1}]
workloads:
  - {name: a, maxReplicas: 40, rateBudget: api, requestsPerJob: 1, horizontal: {jobDuration: 1s}}
  - {name: b, maxReplicas: 40, rateBudget: api, requestsPerJob: 1, horizontal: {jobDuration: 1s}}
`)
	obs := fresh(map[string]float64{rules.QueueDepth: 2000, rules.Throughput: 50, rules.ActiveJobs: 50})
	ins := []Input{
		{Workload: &r.Workloads[0], Observations: obs, State: state(14, "medium", 5, 2), Owners: Owners{Horizontal: testHPA}}, // 70 rps
		{Workload: &r.Workloads[1], Observations: obs, State: state(4, "medium", 5, 2)},
	}
	ds := DecideAll(t0, r, ins)
	if ds[0].To.Replicas != 14 {
		t.Errorf("the HPA's member: %d replicas, want its 14\n%q", ds[0].To.Replicas, ds[0].Reasons)
	}
	// 100 rps less the 70 the HPA's member makes: 6 workers of 5 slots at 1 rps each.
	if ds[1].To.Replicas != 6 || !slices.Contains(ds[1].LimitedBy, LimitRateBudget) {
		t.Errorf("the other member: %d replicas limited by %v, want 6 by the budget\n%q", ds[1].To.Replicas, ds[1].LimitedBy, ds[1].Reasons)
	}
}
