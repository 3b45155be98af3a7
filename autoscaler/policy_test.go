package autoscaler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// TestHPADefaultBehavior checks the HPA's defaults: up at once by max(+4, +100%) per 15s,
// down only after 300s of lower recommendations.
func TestHPADefaultBehavior(t *testing.T) {
	r, w := single(t, "vertical: {enabled: false}")
	big := fresh(map[string]float64{rules.QueueDepth: 5000})

	d := Decide(t0, r, Input{Workload: w, Observations: big, State: state(2, "medium", 5, 2)})
	if d.To.Replicas != 6 || !slices.Contains(d.LimitedBy, LimitBehavior) {
		t.Errorf("from 2: to %d limited by %v, want 6 (+4 pods beats +100%%)", d.To.Replicas, d.LimitedBy)
	}
	d = Decide(t0, r, Input{Workload: w, Observations: big, State: state(10, "medium", 5, 2)})
	if d.To.Replicas != 20 {
		t.Errorf("from 10: to %d, want 20 (+100%% beats +4 pods)", d.To.Replicas)
	}
	// Replicas added within the last 15s count against the period.
	h := History{ScaleEvents: []ScaleEvent{{Time: t0.Add(-10 * time.Second), Delta: 10}}}
	d = Decide(t0, r, Input{Workload: w, Observations: big, State: state(20, "medium", 5, 2), History: h})
	if d.To.Replicas != 20 {
		t.Errorf("from 20 after +10 ten seconds ago: to %d, want 20 (the period started at 10)", d.To.Replicas)
	}
	h.ScaleEvents[0].Time = t0.Add(-20 * time.Second)
	if d = Decide(t0, r, Input{Workload: w, Observations: big, State: state(20, "medium", 5, 2), History: h}); d.To.Replicas != 40 {
		t.Errorf("from 20 after +10 twenty seconds ago: to %d, want 40", d.To.Replicas)
	}

	// Scale-down: the first low recommendation is held by the 300s window.
	idle := fresh(nil)
	d = Decide(t0, r, Input{Workload: w, Observations: idle, State: state(20, "medium", 5, 2)})
	if d.To.Replicas != 20 || !hasReason(d, "scale-down stabilization") {
		t.Errorf("first idle cycle: to %d, want 20 held by stabilization\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
	}
	// Five minutes of recommendations of 1 later, it goes.
	h = History{Recommendations: []Recommendation{{Time: t0.Add(-301 * time.Second), Replicas: 20}}}
	for s := 300; s > 0; s -= 15 {
		h.Recommendations = append(h.Recommendations, Recommendation{Time: t0.Add(-time.Duration(s) * time.Second), Replicas: 1})
	}
	if d = Decide(t0, r, Input{Workload: w, Observations: idle, State: state(20, "medium", 5, 2), History: h}); d.To.Replicas != 1 {
		t.Errorf("after 300s idle: to %d, want 1\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
	}
	// A recommendation of 12 within the window holds the count at 12.
	h.Recommendations = append(h.Recommendations, Recommendation{Time: t0.Add(-100 * time.Second), Replicas: 12})
	if d = Decide(t0, r, Input{Workload: w, Observations: idle, State: state(20, "medium", 5, 2), History: h}); d.To.Replicas != 12 {
		t.Errorf("with 12 recommended 100s ago: to %d, want 12", d.To.Replicas)
	}
	// The history the engine returns carries this cycle's recommendation, unclamped as the
	// HPA records it (0 here; minReplicas applies after).
	if n := len(d.History.Recommendations); n == 0 || !d.History.Recommendations[n-1].Time.Equal(t0) || d.History.Recommendations[n-1].Replicas != 0 {
		t.Errorf("history does not end with this cycle's recommendation: %+v", d.History.Recommendations)
	}
}

func TestBehaviorPoliciesAndSelect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		behavior string
		from     int32
		queue    float64
		want     int32
	}{
		{"Min picks the least change up", "scaleUp: {selectPolicy: Min, policies: [{type: Pods, value: 4, period: 15s}, {type: Percent, value: 100, period: 15s}]}", 10, 5000, 14},
		{"Disabled never scales up", "scaleUp: {selectPolicy: Disabled}", 10, 5000, 10},
		{"Pods down", "scaleDown: {stabilizationWindow: 0s, policies: [{type: Pods, value: 3, period: 1m}]}", 10, 0, 7},
		{"Percent down", "scaleDown: {stabilizationWindow: 0s, policies: [{type: Percent, value: 10, period: 1m}]}", 10, 0, 9},
		{"up stabilization window takes the lowest recent recommendation", "scaleUp: {stabilizationWindow: 1m}", 10, 5000, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, "vertical: {enabled: false}\nbehavior:\n"+indent(tc.behavior, "  "))
			obs := fresh(map[string]float64{rules.QueueDepth: tc.queue})
			h := History{Recommendations: []Recommendation{{Time: t0.Add(-30 * time.Second), Replicas: tc.from}}}
			d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(tc.from, "medium", 5, 2), History: h})
			if d.To.Replicas != tc.want {
				t.Errorf("to %d, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

func TestRolloutInProgressHoldsEverything(t *testing.T) {
	r, w := seeded(t, "")
	st := state(5, "medium", 5, 2)
	st.RolloutInProgress = true
	d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 5000, rules.CPU: 0.99}), State: st})
	if d.Changed() || !slices.Equal(d.LimitedBy, []string{LimitCooldown}) {
		t.Errorf("to %+v limited by %v, want no change, cooldown", d.To, d.LimitedBy)
	}
}

// sustainedFor returns a history in which the given conditions began d ago.
func sustainedFor(d time.Duration, conds ...string) History {
	h := History{Since: map[string]time.Time{}}
	for _, c := range conds {
		h.Since[c] = t0.Add(-d)
	}
	return h
}

func TestVertical(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		st      State
		obs     map[string]float64
		hist    History
		want    Shape
		limits  []string
		reasons []string
	}{
		{
			name: "CPU above warning for sustainFor steps up one class, replicas recomputed",
			st:   state(6, "medium", 5, 2),
			// 40 jobs / 0.8 x 1.2 = 60 slots: 12 medium workers, 6 large ones.
			obs:     map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.93},
			hist:    sustainedFor(11*time.Minute, condCPUHigh),
			want:    Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3},
			reasons: []string{"stepping up from medium to large", "capacity: 6 replicas of large x concurrency 10 = 60 slots (was 6 x 5 = 30)"},
		},
		{
			name:    "CPU above warning for less than sustainFor changes no class",
			st:      state(12, "medium", 5, 2),
			obs:     map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.93},
			hist:    sustainedFor(3*time.Minute, condCPUHigh),
			want:    Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			reasons: []string{"for 3m0s of the 10m"},
		},
		{
			name:    "memory pressure steps up too",
			st:      state(12, "medium", 5, 2),
			obs:     map[string]float64{rules.QueueDepth: 40, rules.Memory: 0.93},
			hist:    sustainedFor(10*time.Minute, condMemoryHigh),
			want:    Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3},
			reasons: []string{"memory at or above 0.9"},
		},
		{
			name: "jobs failing while memory is critical step up",
			st:   state(12, "medium", 5, 2),
			obs:  map[string]float64{rules.QueueDepth: 40, rules.Memory: 0.97, rules.CompletionRate: 0.8},
			hist: sustainedFor(10*time.Minute, condResourceFailures),
			// The completion rate is critical: the circuit breaker lets the class give
			// each job more resources, but neither capacity nor concurrency grows.
			want:    Shape{Replicas: 12, Class: "large", Concurrency: 5, TenantConcurrency: 3},
			reasons: []string{"jobs are failing while CPU or memory is critical", "circuit breaker: completion rate 0.8 is critical; concurrency 5 rather than 10"},
		},
		{
			name:    "pressure at the largest class stays",
			st:      state(3, "xlarge", 20, 5),
			obs:     map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.93},
			hist:    sustainedFor(11*time.Minute, condCPUHigh),
			want:    Shape{Replicas: 3, Class: "xlarge", Concurrency: 20, TenantConcurrency: 5},
			reasons: []string{"xlarge is the largest allowed class"},
		},
		{
			name: "required workers beyond the class's max step up (Small -> Medium, 2x capacity)",
			st:   state(10, "small", 2, 1),
			// 20 jobs / 0.8 x 1.2 = 30 slots: 15 small (max 10) or 6 medium.
			obs:     map[string]float64{rules.QueueDepth: 20},
			want:    Shape{Replicas: 6, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			reasons: []string{"15 workers are needed but class small runs at most 10: stepping up to medium"},
		},
		{
			name: "the seed's 150 medium workers do not fit any class: one step, capped by the class",
			st:   state(10, "medium", 5, 2),
			// 750 slots: 150 medium, 75 large, 38 xlarge; all over 20.
			obs:    map[string]float64{rules.QueueDepth: 500},
			want:   Shape{Replicas: 20, Class: "large", Concurrency: 10, TenantConcurrency: 3},
			limits: []string{LimitClassMax},
		},
		{
			name: "a cheaper class for the same capacity is taken when it saves 20%",
			st:   state(10, "small", 2, 1),
			// 8 jobs: 12 slots = 6 small ($0.30/h) or 3 medium ($0.30/h): no saving...
			// 16 jobs: 24 slots = 10 small ($0.50/h) or 5 medium ($0.50/h): none either.
			// The seed's table costs the same per slot from medium up, and more for small
			// only at a round-up: 6 jobs -> 9 slots = 5 small ($0.25) vs 2 medium ($0.20).
			obs:     map[string]float64{rules.QueueDepth: 6},
			want:    Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			reasons: []string{"cost: $0.2/h instead of $0.5/h now; the same 10 slots in class small would cost $0.25/h (20% less, at least 20% needed"},
		},
		{
			name:    "a saving short of minSavings is not worth a rollout",
			extra:   "vertical: {minSavings: 0.5}",
			st:      state(5, "small", 2, 1),
			obs:     map[string]float64{rules.QueueDepth: 6},
			want:    Shape{Replicas: 5, Class: "small", Concurrency: 2, TenantConcurrency: 1},
			reasons: []string{"short of the 50% that is worth a rollout"},
		},
		{
			name:  "low CPU for sustainFor steps down when the smaller class is cheaper",
			extra: "classes: [small, medium]",
			st:    state(4, "medium", 5, 2),
			// 4 jobs / 0.8 x 1.2 = 6 slots: 2 medium ($0.20) or 3 small ($0.15): 25% less.
			obs:     map[string]float64{rules.QueueDepth: 4, rules.CPU: 0.3, rules.Memory: 0.3},
			hist:    sustainedFor(10*time.Minute, condCPULow),
			want:    Shape{Replicas: 3, Class: "small", Concurrency: 2, TenantConcurrency: 1},
			reasons: []string{"the same 6 slots in class medium would cost $0.2/h (25% less"},
		},
		{
			name:    "low CPU without the smaller class saving enough stays",
			extra:   "classes: [small, medium]",
			st:      state(2, "medium", 5, 2),
			obs:     map[string]float64{rules.QueueDepth: 6, rules.CPU: 0.3, rules.Memory: 0.3},
			hist:    sustainedFor(10*time.Minute, condCPULow),
			want:    Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			reasons: []string{"the cheapest, small, would cost $0.25/h against $0.2/h now"},
		},
		{
			name:    "a class change within sustainFor of the last one waits (cooldown)",
			st:      state(12, "medium", 5, 2),
			obs:     map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.93},
			hist:    History{LastClassChange: t0.Add(-2 * time.Minute), Since: map[string]time.Time{condCPUHigh: t0.Add(-11 * time.Minute)}},
			want:    Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			limits:  []string{LimitCooldown},
			reasons: []string{"within the 10m cooldown"},
		},
		{
			name:    "vertical disabled keeps the class",
			extra:   "vertical: {enabled: false}",
			st:      state(10, "small", 2, 1),
			obs:     map[string]float64{rules.QueueDepth: 20},
			want:    Shape{Replicas: 10, Class: "small", Concurrency: 2, TenantConcurrency: 1},
			limits:  []string{LimitClassMax},
			reasons: []string{"capped at 10, the maximum of class small"},
		},
		{
			name:    "a custom class is never changed",
			st:      state(4, CustomClass, 3, 1),
			obs:     map[string]float64{rules.QueueDepth: 40, rules.CPU: 0.99},
			hist:    sustainedFor(time.Hour, condCPUHigh),
			want:    Shape{Replicas: 20, Class: CustomClass, Concurrency: 3, TenantConcurrency: 1},
			reasons: []string{"match no class (custom)"},
		},
		{
			name:    "a class the workload may not use is left for the nearest allowed one",
			extra:   "classes: [medium, large]",
			st:      state(6, "small", 2, 1),
			obs:     map[string]float64{rules.QueueDepth: 4},
			want:    Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2},
			reasons: []string{"class small is not among the workload's allowed classes"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := seeded(t, noBehavior+tc.extra)
			d := Decide(t0, r, Input{Workload: w, Observations: fresh(tc.obs), State: tc.st, History: tc.hist})
			if d.To != tc.want {
				t.Errorf("to = %+v, want %+v\n%s", d.To, tc.want, strings.Join(d.Reasons, "\n"))
			}
			if tc.limits != nil && !slices.Equal(d.LimitedBy, tc.limits) {
				t.Errorf("limitedBy = %v, want %v", d.LimitedBy, tc.limits)
			}
			for _, want := range tc.reasons {
				if !hasReason(d, want) {
					t.Errorf("no reason containing %q:\n%s", want, strings.Join(d.Reasons, "\n"))
				}
			}
		})
	}
}

func TestSustainedConditionsAreTrackedInHistory(t *testing.T) {
	r, w := seeded(t, "")
	obs := fresh(map[string]float64{rules.CPU: 0.95})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2)})
	if since := d.History.Since[condCPUHigh]; !since.Equal(t0) {
		t.Fatalf("cpuHigh since %v, want %v", since, t0)
	}
	// It keeps its start while it holds, and is dropped when it breaks.
	d = Decide(t0.Add(time.Minute), r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2), History: d.History})
	if since := d.History.Since[condCPUHigh]; !since.Equal(t0) {
		t.Errorf("cpuHigh since %v, want still %v", since, t0)
	}
	d = Decide(t0.Add(2*time.Minute), r, Input{Workload: w, Observations: fresh(nil), State: state(2, "medium", 5, 2), History: d.History})
	if _, ok := d.History.Since[condCPUHigh]; ok {
		t.Error("cpuHigh still tracked after CPU fell below warning")
	}
	// Missing CPU breaks it too: a gap in the data is not "consistently".
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2)})
	d = Decide(t0.Add(time.Minute), r, Input{Workload: w, Observations: Observations{rules.QueueDepth: Value(0)}, State: state(2, "medium", 5, 2), History: d.History})
	if _, ok := d.History.Since[condCPUHigh]; ok {
		t.Error("cpuHigh still tracked across a missing CPU sample")
	}
}

func TestAppliedHistory(t *testing.T) {
	d := Decision{From: Shape{Replicas: 2, Class: "medium", Concurrency: 5}, To: Shape{Replicas: 6, Class: "medium", Concurrency: 5}}
	h := History{}.Applied(t0, d)
	if len(h.ScaleEvents) != 1 || h.ScaleEvents[0].Delta != 4 || !h.LastClassChange.IsZero() {
		t.Errorf("after a scale-out: %+v", h)
	}
	d.To.Class, d.To.Concurrency = "large", 10
	h = h.Applied(t0.Add(time.Minute), d)
	if !h.LastClassChange.Equal(t0.Add(time.Minute)) || h.ScaleEvents != nil {
		t.Errorf("after a class change: %+v", h)
	}
}

// TestStepDownProjectsMemory: the smaller class here runs 4 jobs in 2 GiB (0.5 GiB a job,
// against 0.8 in medium), so 60% memory now would be 96% there.
func TestStepDownProjectsMemory(t *testing.T) {
	r := load(t, `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: small,  cpu: "1", memory: 2Gi, concurrency: 4, tenantConcurrency: 1, costPerHour: 0.02}
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, costPerHour: 0.10}
queries: {preset: bullmq}
workloads:
  - {name: render, maxReplicas: 20}
`)
	w := &r.Workloads[0]
	obs := fresh(map[string]float64{rules.QueueDepth: 4, rules.CPU: 0.3, rules.Memory: 0.6})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2), History: sustainedFor(time.Hour, condCPULow)})
	if d.To.Class != "medium" || !hasReason(d, "memory 0.96 of the request: too close to warning to step down") {
		t.Errorf("to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
	obs[rules.Memory] = Value(0.4)
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2), History: sustainedFor(time.Hour, condCPULow)})
	if d.To.Class != "small" {
		t.Errorf("with memory at 0.4 (0.64 on small): to %+v, want small\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}
