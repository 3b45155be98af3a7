package autoscaler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

func example(t *testing.T, name string) *rules.Rules {
	t.Helper()
	r, err := rules.Load("../rules/examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func workloadNamed(t *testing.T, r *rules.Rules, name string) *rules.Workload {
	t.Helper()
	for i := range r.Workloads {
		if r.Workloads[i].Name == name {
			return &r.Workloads[i]
		}
	}
	t.Fatalf("no workload %q", name)
	return nil
}

// set makes the observations `explain --set` would: only the named metrics are fresh.
func set(kv map[string]float64) Observations {
	o := Observations{}
	for k, v := range kv {
		o[k] = Value(v)
	}
	return o
}

func slotsOf(s Shape) int { return int(s.Replicas) * s.Concurrency }

// The examples of issue 9: each guard held on one path and was walked around on another.
func TestGuardHoldsOnEveryPath(t *testing.T) {
	luneo := example(t, "luneo-render.yaml")
	render := workloadNamed(t, luneo, "render")
	blizzard := example(t, "blizzard-workers.yaml")
	characters := workloadNamed(t, blizzard, "characters")
	failing := map[string]float64{rules.QueueDepth: 500, rules.CompletionRate: 0.8, rules.CPU: 0.5, rules.Memory: 0.5}

	t.Run("completion rate critical: no growth by a capacity class step", func(t *testing.T) {
		d := Decide(t0, luneo, Input{Workload: render, Observations: set(failing), State: state(5, "medium", 5, 2)})
		if slotsOf(d.To) > 25 || d.To.Concurrency > 5 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) {
			t.Errorf("to %+v limited by %v, want at most 25 slots at concurrency 5, by the circuit breaker\n%s", d.To, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("completion rate critical: no growth by the CPU-pressure step", func(t *testing.T) {
		obs := set(map[string]float64{rules.QueueDepth: 500, rules.CompletionRate: 0.8, rules.CPU: 0.96, rules.Memory: 0.5})
		d := Decide(t0, luneo, Input{Workload: render, Observations: obs, State: state(5, "medium", 5, 2), History: AssumeSustained(t0, render, obs)})
		if slotsOf(d.To) > 25 || d.To.Concurrency > 5 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) {
			t.Errorf("to %+v limited by %v\n%s", d.To, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("429s critical on a budgeted workload during a class step: concurrency goes down by one", func(t *testing.T) {
		r := load(t, strings.Replace(seedClasses, "queries: {preset: bullmq}", `queries:
  preset: bullmq
  templates:
    rateLimited: {query: 'sum by (queue) (rate(upstream_responses_total{queue=~"{{.Queues}}", code="429"}[5m]))'}`, 1)+`thresholds: {rateLimited: {target: 0, warning: 0.1, critical: 1}}
rateBudgets: [{name: api, keys: 5, safeRequestsPerSecond: 70}]
workloads:
  - name: api-workers
    maxReplicas: 20
    rateBudget: api
    requestsPerJob: 1
    horizontal: {jobDuration: 10s}
`)
		w := &r.Workloads[0]
		obs := fresh(map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.96, RateLimited: 3})
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "medium", 5, 2), History: AssumeSustained(t0, w, obs)})
		if d.To.Class != "large" || d.To.Concurrency != 4 || slotsOf(d.To) > 40 || d.To.Replicas > 10 {
			t.Errorf("to %+v, want concurrency 4 and no replica more than the 10 running\n%s", d.To, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("fallbackReplicas never raises a fleet whose upstream throttles it", func(t *testing.T) {
		d := Decide(t0, blizzard, Input{Workload: characters, Observations: set(map[string]float64{RateLimited: 5}), State: state(1, "standard", 2, 0)})
		if d.To.Replicas != 1 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) {
			t.Errorf("to %+v limited by %v, want 1 replica held by the circuit breaker\n%s", d.To, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("after a restart, a class change does not shrink the fleet within the window", func(t *testing.T) {
		obs := fresh(map[string]float64{rules.QueueDepth: 1, rules.CPU: 0.1, rules.Memory: 0.1})
		d := Decide(t0, luneo, Input{Workload: render, Observations: obs, State: state(20, "medium", 5, 2), History: AssumeSustained(t0, render, obs)})
		if slotsOf(d.To) < 100 {
			t.Errorf("to %+v: %d slots right after a restart, want the 100 running until the scale-down window has passed\n%s", d.To, slotsOf(d.To), strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("no class change for cost while a metric is missing", func(t *testing.T) {
		obs := Observations{rules.QueueDepth: Value(6), rules.ActiveJobs: Value(0), rules.CPU: Value(0.2), rules.Memory: Value(0.2), rules.CompletionRate: Value(1)}
		r, w := seeded(t, noBehavior)
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "small", 2, 1), History: sustainedFor(time.Hour, condCPULow)})
		if d.To.Class != "small" || slotsOf(d.To) < 20 || hasReason(d, "% less") {
			t.Errorf("to %+v with throughput missing\n%s", d.To, strings.Join(d.Reasons, "\n"))
		}
	})
	for _, tc := range []struct {
		metric string
		value  float64
	}{
		{rules.QueueDepth, -5}, {rules.CPU, -0.5}, {rules.Memory, -1}, {rules.CompletionRate, 7}, {rules.ActiveJobs, -3},
	} {
		t.Run("an impossible "+tc.metric+" is invalid, not ok, and never scales down", func(t *testing.T) {
			r, w := seeded(t, noBehavior+"vertical: {enabled: false}")
			obs := fresh(map[string]float64{tc.metric: tc.value})
			d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "medium", 5, 2)})
			if d.Metrics[tc.metric].Status != Invalid || d.Grades[tc.metric] == OK {
				t.Errorf("%s = %v reads %+v, graded %s", tc.metric, tc.value, d.Metrics[tc.metric], d.Grades[tc.metric])
			}
			if tc.metric == rules.QueueDepth || tc.metric == rules.ActiveJobs {
				if d.To.Replicas < 10 || len(d.Missing) == 0 {
					t.Errorf("to %+v, missing %v: an invalid replica input must hold the fleet\n%s", d.To, d.Missing, strings.Join(d.Reasons, "\n"))
				}
			}
		})
	}
	t.Run("a cost move's reason gives the final numbers", func(t *testing.T) {
		r, w := seeded(t, noBehavior)
		d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 6}), State: state(10, "small", 2, 1)})
		if d.To.Class != "medium" || !hasReason(d, "cost: $0.2/h instead of $0.5/h now; the same 10 slots in class small would cost $0.25/h (20% less") {
			t.Errorf("to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("a reload that disallows the class keeps a critical backlog's capacity", func(t *testing.T) {
		r, w := seeded(t, noBehavior+"classes: [small, medium]")
		d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 150}), State: state(10, "large", 10, 3)})
		if slotsOf(d.To) < 100 || d.To.Class == "large" {
			t.Errorf("to %+v: %d slots, want an allowed class holding 100\n%s", d.To, slotsOf(d.To), strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("no ready pod and nothing completed: the breaker holds", func(t *testing.T) {
		r, w := seeded(t, noBehavior+"vertical: {enabled: false}")
		st := state(4, "medium", 5, 2)
		st.ReadyReplicas = 0
		d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 500}), State: st})
		if d.To.Replicas > 4 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) {
			t.Errorf("to %+v limited by %v\n%s", d.To, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
		// From zero replicas (minReplicas 0), the fleet may start.
		r, w = seeded(t, noBehavior+"vertical: {enabled: false}\nminReplicas: 0")
		d = Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 500}), State: state(0, "medium", 5, 2)})
		if d.To.Replicas == 0 {
			t.Errorf("from 0: to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
		}
	})
}

// A scale-in leaves a slot for every job in flight (issue 17). With jobs completing, the
// throughput term already keeps more (Little's law, at the target utilization); the floor
// binds when long jobs run and none completed in the window: an empty queue, no
// completion, and 23 jobs running on 10 pods of 5 slots keep 5 pods, not the 1 the queue
// alone would allow, and say so; with no job running the fleet goes as far down as the
// queue allows.
func TestScaleInKeepsASlotPerJobInFlight(t *testing.T) {
	luneo := example(t, "luneo-render.yaml")
	render := workloadNamed(t, luneo, "render")
	for _, tc := range []struct {
		name        string
		active      float64
		atLeast     int32
		limitedByIt bool
	}{
		{"23 jobs running", 23, 5, true},
		{"one job running", 1, 1, true},
		{"none running", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := set(map[string]float64{rules.QueueDepth: 0, rules.WaitSeconds: 0, rules.Throughput: 0, rules.ActiveJobs: tc.active, rules.CPU: 0.3, rules.Memory: 0.3})
			// The last recommendation is old: no scale-down window holds the fleet.
			hist := History{Recommendations: []Recommendation{{Time: t0.Add(-time.Hour), Replicas: 10}}}
			d := Decide(t0, luneo, Input{Workload: render, Observations: obs, State: state(10, "medium", 5, 2), History: hist})
			if d.To.Replicas >= 10 {
				t.Fatalf("no scale-in: to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
			}
			if slotsOf(d.To) < int(tc.active) || d.To.Replicas < tc.atLeast {
				t.Errorf("to %+v: fewer slots than the %v jobs in flight\n%s", d.To, tc.active, strings.Join(d.Reasons, "\n"))
			}
			if got := slices.Contains(d.LimitedBy, LimitJobsInFlight); got != tc.limitedByIt {
				t.Errorf("limited by %v, want %s: %v\n%s", d.LimitedBy, LimitJobsInFlight, tc.limitedByIt, strings.Join(d.Reasons, "\n"))
			}
			if tc.limitedByIt && !hasReason(d, "jobs are running: a scale-in keeps a slot for each") {
				t.Errorf("no reason says why\n%s", strings.Join(d.Reasons, "\n"))
			}
		})
	}
}
