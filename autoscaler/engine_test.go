package autoscaler

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// seedClasses are the first seed's table.
const seedClasses = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: small,  cpu: "1", memory: 2Gi,  concurrency: 2,  tenantConcurrency: 1, maxReplicas: 10, costPerHour: 0.05}
  - {name: medium, cpu: "2", memory: 4Gi,  concurrency: 5,  tenantConcurrency: 2, maxReplicas: 20, costPerHour: 0.10}
  - {name: large,  cpu: "4", memory: 8Gi,  concurrency: 10, tenantConcurrency: 3, maxReplicas: 20, costPerHour: 0.20}
  - {name: xlarge, cpu: "8", memory: 16Gi, concurrency: 20, tenantConcurrency: 5, maxReplicas: 20, costPerHour: 0.40}
queries: {preset: bullmq}
`

func load(t testing.TB, yaml string) *rules.Rules {
	t.Helper()
	r, err := rules.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("rules:\n%v", err)
	}
	return r
}

// flatClass is one class with the seed's Medium values and no worker limit, for tests of
// the replica count alone.
const flatClass = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, costPerHour: 0.10}
queries: {preset: bullmq}
`

// single is one workload in one uncapped class; extra is appended to the workload.
func single(t testing.TB, extra string) (*rules.Rules, *rules.Workload) {
	t.Helper()
	return workload(t, flatClass, extra)
}

// seeded is one workload in the seed's four classes.
func seeded(t testing.TB, extra string) (*rules.Rules, *rules.Workload) {
	t.Helper()
	return workload(t, seedClasses, extra)
}

func workload(t testing.TB, classes, extra string) (*rules.Rules, *rules.Workload) {
	t.Helper()
	r := load(t, classes+"workloads:\n  - name: render\n    maxReplicas: 200\n"+indent(extra, "    "))
	return r, &r.Workloads[0]
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func state(replicas int32, class string, conc, tenant int) State {
	return State{Shape: Shape{Replicas: replicas, Class: class, Concurrency: conc, TenantConcurrency: tenant}, ReadyReplicas: replicas}
}

// fresh makes a complete set of fresh replica inputs; override with set.
func fresh(set map[string]float64) Observations {
	o := Observations{
		rules.QueueDepth: Value(0), rules.Throughput: Value(0), rules.ActiveJobs: Value(0),
		rules.CPU: Value(0.7), rules.Memory: Value(0.7), rules.CompletionRate: Value(0.99),
	}
	for k, v := range set {
		o[k] = Value(v)
	}
	return o
}

// seedSizing adds horizontal.sizing: seed to a workload's extra YAML, for the tests of the
// first seed's formula.
func seedSizing(extra string) string {
	if strings.Contains(extra, "horizontal: {") {
		return strings.Replace(extra, "horizontal: {", "horizontal: {sizing: seed, ", 1)
	}
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	return extra + "horizontal: {sizing: seed}\n"
}

// noBehavior lifts the HPA default rate limits so a test sees the raw requirement.
const noBehavior = `behavior:
  scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}
  scaleDown: {stabilizationWindow: 0s, policies: [{type: Percent, value: 100, period: 15s}]}
`

func TestHorizontal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extra  string
		st     State
		obs    Observations
		want   int32
		limits []string
		reason string
	}{
		{
			name:   "the seed's example: 500 jobs at concurrency 5, 80% utilization, 20% buffer need 150 workers",
			extra:  noBehavior + "vertical: {enabled: false}",
			st:     state(100, "medium", 5, 2),
			obs:    fresh(map[string]float64{rules.QueueDepth: 500}),
			want:   150,
			reason: "queue: 500 jobs / (5 concurrency x 0.8 utilization) x (1 + 0.2 buffer) = 150 workers",
		},
		{
			name:   "Little's law floor: 10 jobs/s x 2s / (5 x 0.8) keeps 5 workers on an empty queue",
			extra:  noBehavior + "vertical: {enabled: false}\nhorizontal: {jobDuration: 2s}",
			st:     state(5, "medium", 5, 2),
			obs:    fresh(map[string]float64{rules.Throughput: 10, rules.ActiveJobs: 20}),
			want:   5,
			reason: "throughput floor: 10 jobs/s x 2s mean duration",
		},
		{
			name:  "the floor uses the jobs in flight when no duration is configured",
			extra: noBehavior + "vertical: {enabled: false}",
			st:    state(10, "medium", 5, 2),
			obs:   fresh(map[string]float64{rules.Throughput: 10, rules.ActiveJobs: 30}),
			// 30 in flight / 0.8 = 37.5 slots / 5 = 7.5 -> 8
			want:   8,
			reason: "mean job duration of 3s (30 active jobs / 10 jobs/s, Little's law)",
		},
		{
			name:  "the wait is estimated from queue depth and throughput when no metric gives it",
			extra: noBehavior + "vertical: {enabled: false}",
			st:    state(2, "medium", 5, 2),
			// The wait term wins: (0.5 jobs/s x 20 s + 10 queued x min(1, 20 s / 10 s)) / 0.8
			// = 25 slots -> 5 workers (a queued job needs one slot, never two).
			obs:    fresh(map[string]float64{rules.QueueDepth: 10, rules.Throughput: 0.5, rules.ActiveJobs: 10}),
			want:   5,
			reason: "waitSeconds estimated as 10 jobs / 0.5 jobs/s = 20s (Little's law)",
		},
		{
			name:   "within the 10% tolerance nothing changes",
			extra:  noBehavior + "vertical: {enabled: false}",
			st:     state(20, "medium", 5, 2),
			obs:    fresh(map[string]float64{rules.QueueDepth: 70}), // 70/4*1.2 = 21 workers
			want:   20,
			reason: "within the 10% tolerance",
		},
		{
			name:   "minReplicas holds a floor",
			extra:  noBehavior + "vertical: {enabled: false}\nminReplicas: 3",
			st:     state(5, "medium", 5, 2),
			obs:    fresh(nil),
			want:   3,
			limits: []string{LimitMinReplicas},
		},
		{
			name:   "maxReplicas caps",
			extra:  "vertical: {enabled: false}\nbehavior: {scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}}",
			st:     state(10, "medium", 5, 2),
			obs:    fresh(map[string]float64{rules.QueueDepth: 5000}),
			want:   200,
			limits: []string{LimitMaxReplicas},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, seedSizing(tc.extra))
			d := Decide(t0, r, Input{Workload: w, Observations: tc.obs, State: tc.st})
			if d.To.Replicas != tc.want {
				t.Errorf("replicas = %d, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
			if tc.limits != nil && !slices.Equal(d.LimitedBy, tc.limits) {
				t.Errorf("limitedBy = %v, want %v", d.LimitedBy, tc.limits)
			}
			if tc.reason != "" && !hasReason(d, tc.reason) {
				t.Errorf("no reason containing %q:\n%s", tc.reason, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

// TestWaitTermWins sets the numbers so that the wait term is the largest requirement.
func TestWaitTermWins(t *testing.T) {
	r, w := single(t, noBehavior+"vertical: {enabled: false}\nhorizontal: {jobDuration: 10s, sizing: seed}")
	// queue: 20 / 0.8 x 1.2 = 30 slots; floor: 2 jobs/s x 10 s / 0.8 = 25 slots;
	// wait: (2 jobs/s x 10 s + 20 queued x min(1, 10 s / 10 s)) / 0.8 = 50 slots -> 10
	// workers at concurrency 5.
	obs := fresh(map[string]float64{rules.QueueDepth: 20, rules.Throughput: 2, rules.WaitSeconds: 45, rules.ActiveJobs: 20})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(4, "medium", 5, 2)})
	if d.To.Replicas != 10 || !hasReason(d, "the largest requirement is the wait term") {
		t.Errorf("replicas = %d, want 10 from the wait term\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
	}
}

func TestMissingAndStaleMetricsNeverScaleDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		obs  Observations
	}{
		{"queue depth missing", Observations{rules.Throughput: Value(0), rules.ActiveJobs: Value(0)}},
		{"queue depth stale", Observations{rules.QueueDepth: {Value: 0, Status: Stale, Reason: "sample is 9m old"}, rules.Throughput: Value(0), rules.ActiveJobs: Value(0)}},
		{"throughput missing", Observations{rules.QueueDepth: Value(0), rules.ActiveJobs: Value(0)}},
		{"NaN is not a number", Observations{rules.QueueDepth: Value(math.NaN()), rules.Throughput: Value(0), rules.ActiveJobs: Value(0)}},
		{"+Inf is not a number", Observations{rules.QueueDepth: Value(math.Inf(1)), rules.Throughput: Value(0), rules.ActiveJobs: Value(0)}},
		{"everything missing", Observations{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, noBehavior)
			d := Decide(t0, r, Input{Workload: w, Observations: tc.obs, State: state(12, "medium", 5, 2)})
			if d.To.Replicas < 12 || d.To.Class != "medium" {
				t.Errorf("to = %+v, want no scale-down from 12 medium\n%s", d.To, strings.Join(d.Reasons, "\n"))
			}
			if _, err := json.Marshal(d); err != nil {
				t.Errorf("decision does not marshal (a NaN leaked?): %v", err)
			}
		})
	}
}

func TestMissingMetricsStillAllowAJustifiedScaleUp(t *testing.T) {
	r, w := single(t, noBehavior+"vertical: {enabled: false}")
	obs := Observations{rules.QueueDepth: Value(500)} // throughput and active jobs missing
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "medium", 5, 2)})
	if d.To.Replicas != 150 {
		t.Errorf("replicas = %d, want 150 from the fresh queue depth", d.To.Replicas)
	}
}

func TestFallbackIsAFloorWhileMetricsAreMissing(t *testing.T) {
	r, w := single(t, noBehavior+"vertical: {enabled: false}\nfallbackReplicas: 8")
	d := Decide(t0, r, Input{Workload: w, Observations: Observations{}, State: state(3, "medium", 5, 2)})
	if d.To.Replicas != 8 || !hasReason(d, "fallback of 8 replicas") {
		t.Errorf("replicas = %d, want the fallback 8\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
	}
	// Never a cap: a fresh requirement above it wins.
	d = Decide(t0, r, Input{Workload: w, Observations: Observations{rules.QueueDepth: Value(500)}, State: state(3, "medium", 5, 2)})
	if d.To.Replicas != 150 {
		t.Errorf("replicas = %d, want 150 (fallback is a floor, not a cap)", d.To.Replicas)
	}
	// With every metric fresh it does not apply.
	d = Decide(t0, r, Input{Workload: w, Observations: fresh(nil), State: state(3, "medium", 5, 2)})
	if d.To.Replicas != 1 {
		t.Errorf("replicas = %d, want 1 with fresh metrics", d.To.Replicas)
	}
}

func TestCircuitBreaker(t *testing.T) {
	r, w := single(t, noBehavior+"vertical: {enabled: false}")
	obs := fresh(map[string]float64{rules.QueueDepth: 500, rules.CompletionRate: 0.85})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "medium", 5, 2)})
	if d.To.Replicas != 10 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) || d.Grades[rules.CompletionRate] != Critical {
		t.Errorf("to=%d limits=%v grade=%s, want held at 10 by the circuit breaker\n%s", d.To.Replicas, d.LimitedBy, d.Grades[rules.CompletionRate], strings.Join(d.Reasons, "\n"))
	}
	// A failing fleet may still shrink.
	obs = fresh(map[string]float64{rules.CompletionRate: 0.5})
	if d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(10, "medium", 5, 2)}); d.To.Replicas != 1 {
		t.Errorf("replicas = %d, want a scale-down to 1", d.To.Replicas)
	}
}

func TestGrades(t *testing.T) {
	r, w := single(t, "")
	th := w.Thresholds
	for _, tc := range []struct {
		metric string
		v      float64
		want   Grade
	}{
		{rules.QueueDepth, 49, OK}, {rules.QueueDepth, 50, Warning}, {rules.QueueDepth, 100, Warning}, {rules.QueueDepth, 101, Critical},
		{rules.WaitSeconds, 9.9, OK}, {rules.WaitSeconds, 30, Warning}, {rules.WaitSeconds, 61, Critical},
		{rules.CPU, 0.8, OK}, {rules.CPU, 0.92, Warning}, {rules.CPU, 0.96, Critical},
		{rules.Memory, 0.85, OK}, {rules.Memory, 0.9, Warning}, {rules.Memory, 0.951, Critical},
		{rules.Saturation, 0.75, OK}, {rules.Saturation, 0.9, Warning}, {rules.Saturation, 1, Critical},
		{rules.CompletionRate, 0.96, OK}, {rules.CompletionRate, 0.95, Warning}, {rules.CompletionRate, 0.9, Warning}, {rules.CompletionRate, 0.89, Critical},
	} {
		if g := GradeValue(tc.v, th[tc.metric]); g != tc.want {
			t.Errorf("%s %v = %s, want %s", tc.metric, tc.v, g, tc.want)
		}
	}
	d := Decide(t0, r, Input{Workload: w, Observations: Observations{rules.QueueDepth: Value(10)}, State: state(1, "medium", 5, 2)})
	if d.Grades[rules.CPU] != Unknown || d.Grades[rules.QueueDepth] != OK {
		t.Errorf("grades = %v, want cpu unknown and queueDepth ok", d.Grades)
	}
}

func hasReason(d Decision, s string) bool {
	for _, r := range d.Reasons {
		if strings.Contains(r, s) {
			return true
		}
	}
	return false
}
