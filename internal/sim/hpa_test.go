package sim

import (
	"math"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

var hpaT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// hpaSnap is the snapshot at t0+sec with the given replicas and queue depth; a NaN depth
// is a metric Prometheus has no sample for.
func hpaSnap(sec int, replicas int32, depth float64) Snapshot {
	obs := autoscaler.Observations{}
	if !math.IsNaN(depth) {
		obs[rules.QueueDepth] = autoscaler.Value(depth)
	}
	return Snapshot{
		Now: hpaT0.Add(time.Duration(sec) * time.Second),
		Obs: obs,
		State: autoscaler.State{
			Shape:         autoscaler.Shape{Replicas: replicas, Class: "small", Concurrency: 4, TenantConcurrency: 2},
			ReadyReplicas: replicas,
		},
	}
}

// hpaStep is one decision: at t0+at, with this queue depth, the policy should leave the
// target at want.
type hpaStep struct {
	at    int
	depth float64
	want  int32
}

// hpaEvery is a step every 15s from `from` to `to` (both included).
func hpaEvery(from, to int, depth float64, want int32) []hpaStep {
	var out []hpaStep
	for at := from; at <= to; at += 15 {
		out = append(out, hpaStep{at: at, depth: depth, want: want})
	}
	return out
}

func hpaSteps(parts ...[]hpaStep) []hpaStep {
	var out []hpaStep
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// hpaRun drives p from start replicas through the steps; the target follows every
// decision at once.
func hpaRun(t *testing.T, p Policy, start int32, steps []hpaStep) {
	t.Helper()
	replicas := start
	for _, st := range steps {
		got := p.Decide(hpaSnap(st.at, replicas, st.depth)).Replicas
		if got != st.want {
			t.Fatalf("at t+%ds (depth %v, %d replicas): %d replicas, want %d", st.at, st.depth, replicas, got, st.want)
		}
		replicas = got
	}
}

// hpaCase is a policy driven from start replicas through steps.
type hpaCase struct {
	name  string
	p     Policy
	start int32
	steps []hpaStep
}

func hpaCases(t *testing.T, cases []hpaCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { hpaRun(t, c.p, c.start, c.steps) })
	}
}

// hpa100 is the HPA of cfg with a target of 100 jobs per pod.
func hpa100(cfg HPAConfig) *HPA {
	cfg.TargetAverageValue = 100
	return NewHPA(cfg)
}

func durationPtr(d time.Duration) *time.Duration { return &d }

func TestHPAReplicaCalculation(t *testing.T) {
	tests := []struct {
		name   string
		target float64
		tol    float64
		status int32
		total  float64
		want   int32
	}{
		// The documentation's example: 200m against a 100m target doubles the count.
		{"docs: 200m vs 100m doubles", 0.1, 0, 1, 0.2, 2},
		// 50m against 100m halves it.
		{"docs: 50m vs 100m halves", 0.1, 0, 2, 0.1, 1},
		{"AverageValue: 500 over a target of 100 per pod", 100, 0, 1, 500, 5},
		{"ratio 1.05 is within the 10% band", 100, 0, 4, 420, 4},
		{"ratio 1.1 is the band's edge", 100, 0, 10, 1100, 10},
		{"ratio 0.9 is the band's other edge", 100, 0, 10, 900, 10},
		{"ratio 1.2 scales: ceil(480/100)", 100, 0, 4, 480, 5},
		{"ratio 0.75 scales down: ceil(300/100)", 100, 0, 4, 300, 3},
		{"rounds up: ceil(3.5)", 100, 0, 4, 350, 4},
		{"a wider band keeps 1.15", 100, 0.2, 4, 460, 4},
		{"an empty queue proposes 0", 100, 0, 3, 0, 0},
		{"from 0 pods: ceil(total / target)", 100, 0, 0, 250, 3},
		{"0 over 0 pods is 0", 100, 0, 0, 0, 0},
		{"milli-units: 0.3 is 300m, not 301m", 0.1, 0, 1, 0.3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHPA(HPAConfig{MaxReplicas: 100, TargetAverageValue: tt.target, Tolerance: tt.tol})
			if got := h.replicasFor(tt.status, tt.total); got != tt.want {
				t.Errorf("replicasFor(%d, %v) = %d, want %d", tt.status, tt.total, got, tt.want)
			}
		})
	}
}

func TestHPAScaleUpLimit(t *testing.T) {
	minPolicy := DefaultHPABehavior()
	minPolicy.ScaleUp.SelectPolicy = HPASelectMin
	disabled := HPABehavior{ScaleUp: &HPAScalingRules{SelectPolicy: HPASelectDisabled}}
	deep := 100000.0
	hpaCases(t, []hpaCase{
		{"default behaviour from 1: 1+4 pods beats 100%", hpa100(HPAConfig{MaxReplicas: 100}), 1, []hpaStep{{0, deep, 5}}},
		{"default behaviour from 2: 2+4 pods beats 100%", hpa100(HPAConfig{MaxReplicas: 100}), 2, []hpaStep{{0, deep, 6}}},
		{"default behaviour from 4: a tie at 8", hpa100(HPAConfig{MaxReplicas: 100}), 4, []hpaStep{{0, deep, 8}}},
		{"default behaviour from 10: 100% beats 4 pods", hpa100(HPAConfig{MaxReplicas: 100}), 10, []hpaStep{{0, deep, 20}}},
		{"maxReplicas binds first", hpa100(HPAConfig{MaxReplicas: 15}), 10, []hpaStep{{0, deep, 15}}},
		{"selectPolicy Min takes the smaller", hpa100(HPAConfig{MaxReplicas: 100, Behavior: &minPolicy}), 10, []hpaStep{{0, deep, 14}}},
		{"scale-up Disabled", hpa100(HPAConfig{MaxReplicas: 100, Behavior: &disabled}), 2, []hpaStep{{0, deep, 2}}},
		{"without spec.behavior from 1: max(2x, 4)", hpa100(HPAConfig{MaxReplicas: 100, NoBehavior: true}), 1, []hpaStep{{0, deep, 4}}},
		{"without spec.behavior from 2: 4, not 6", hpa100(HPAConfig{MaxReplicas: 100, NoBehavior: true}), 2, []hpaStep{{0, deep, 4}}},
		{"without spec.behavior from 10: 20", hpa100(HPAConfig{MaxReplicas: 100, NoBehavior: true}), 10, []hpaStep{{0, deep, 20}}},
		// The default policies' 15s period: the previous sync's event is exactly 15s old, out
		// of the period, so every sync may double (or add 4) again.
		{"every sync may scale up again", hpa100(HPAConfig{MaxReplicas: 100}), 2, []hpaStep{
			{0, deep, 6}, {15, deep, 12}, {30, deep, 24}, {45, deep, 48}, {60, deep, 96}, {75, deep, 100},
		}},
	})
}

// hpaWith is the HPA with a target of 100 jobs per pod, at most 100 replicas, and b.
func hpaWith(b HPABehavior) *HPA { return hpa100(HPAConfig{MaxReplicas: 100, Behavior: &b}) }

func TestHPARatePoliciesCountEventsWithinPeriod(t *testing.T) {
	zero := durationPtr(0)
	hpaCases(t, []hpaCase{
		{
			name:  "2 pods per 60s: the event at t0 blocks until it is 60s old",
			p:     hpaWith(HPABehavior{ScaleUp: &HPAScalingRules{Policies: []HPAScalingPolicy{{HPAPods, 2, time.Minute}}}}),
			start: 1,
			steps: hpaSteps(
				[]hpaStep{{0, 1000, 3}},
				hpaEvery(15, 45, 1000, 3),
				[]hpaStep{{60, 1000, 5}, {75, 1000, 5}, {105, 1000, 5}, {120, 1000, 7}},
			),
		},
		{
			name: "50% per 60s down: the period's start counts the removed pods back",
			p: hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{
				StabilizationWindow: zero,
				Policies:            []HPAScalingPolicy{{HPAPercent, 50, time.Minute}},
			}}),
			start: 8,
			steps: hpaSteps(
				[]hpaStep{{0, 0, 4}},
				hpaEvery(15, 45, 0, 4),
				[]hpaStep{{60, 0, 2}, {75, 0, 2}, {120, 0, 1}},
			),
		},
		{
			name: "a scale-down may undo a scale-up made within its period",
			p: hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{
				StabilizationWindow: zero,
				Policies:            []HPAScalingPolicy{{HPAPods, 1, time.Minute}},
			}}),
			start: 2,
			// +4 at t0; at t15 the period started at 6-4 = 2 pods, so 2-1 = 1 is allowed.
			steps: []hpaStep{{0, 600, 6}, {15, 0, 1}},
		},
		{
			// The scale-down events at t0 and t15: storing t15's reuses t0's slot, t0's being
			// older than the scale-down policies' 15s. At t30 the 60s scale-up policy counts
			// only t15's removal: the period started at 2+1 = 3 pods, not at 5.
			name: "a reused event slot is lost to a longer policy of the other direction",
			p: hpaWith(HPABehavior{
				ScaleUp:   &HPAScalingRules{Policies: []HPAScalingPolicy{{HPAPods, 1, time.Minute}}},
				ScaleDown: &HPAScalingRules{StabilizationWindow: zero},
			}),
			start: 5,
			steps: []hpaStep{{0, 300, 3}, {15, 200, 2}, {30, 1000, 4}},
		},
		{
			name: "selectPolicy Max down takes the policy removing the most",
			p: hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{
				StabilizationWindow: zero,
				Policies:            []HPAScalingPolicy{{HPAPods, 1, time.Minute}, {HPAPercent, 10, time.Minute}},
			}}),
			start: 20,
			steps: []hpaStep{{0, 0, 18}, {15, 0, 18}},
		},
		{
			name: "selectPolicy Min down takes the policy removing the least",
			p: hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{
				StabilizationWindow: zero,
				SelectPolicy:        HPASelectMin,
				Policies:            []HPAScalingPolicy{{HPAPods, 1, time.Minute}, {HPAPercent, 10, time.Minute}},
			}}),
			start: 20,
			steps: []hpaStep{{0, 0, 19}, {15, 0, 19}, {60, 0, 18}},
		},
		{
			name:  "scale-down Disabled",
			p:     hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{StabilizationWindow: zero, SelectPolicy: HPASelectDisabled}}),
			start: 5,
			steps: hpaEvery(0, 600, 0, 5),
		},
	})
}

func TestHPAScaleDownStabilization(t *testing.T) {
	hpaCases(t, []hpaCase{
		{
			name:  "a drop holds until the high recommendation is 300s old",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 10,
			steps: hpaSteps([]hpaStep{{0, 1000, 10}}, hpaEvery(15, 285, 200, 10), []hpaStep{{300, 200, 2}}),
		},
		{
			name:  "a spike within the window restarts the hold",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 10,
			steps: hpaSteps(
				[]hpaStep{{0, 1000, 10}}, hpaEvery(15, 135, 200, 10),
				[]hpaStep{{150, 1000, 10}}, hpaEvery(165, 435, 200, 10),
				[]hpaStep{{450, 200, 2}},
			),
		},
		{
			name:  "the first sync records the current count",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 10,
			steps: hpaSteps(hpaEvery(0, 285, 200, 10), []hpaStep{{300, 200, 2}}),
		},
		{
			name:  "the highest recommendation in the window, not the newest",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 10,
			steps: hpaSteps(
				[]hpaStep{{0, 1000, 10}, {15, 600, 10}}, hpaEvery(30, 285, 200, 10),
				[]hpaStep{{300, 200, 6}, {315, 200, 2}}, // t15's 6 leaves the window a sync later
			),
		},
		{
			name:  "the controller's window applies without spec.behavior too",
			p:     hpa100(HPAConfig{MaxReplicas: 100, NoBehavior: true}),
			start: 10,
			steps: hpaSteps(hpaEvery(0, 285, 200, 10), []hpaStep{{300, 200, 2}}),
		},
		{
			name:  "--horizontal-pod-autoscaler-downscale-stabilization",
			p:     hpa100(HPAConfig{MaxReplicas: 100, DownscaleStabilization: time.Minute}),
			start: 10,
			steps: hpaSteps(hpaEvery(0, 45, 200, 10), []hpaStep{{60, 200, 2}}),
		},
		{
			name:  "behavior.scaleDown.stabilizationWindowSeconds",
			p:     hpaWith(HPABehavior{ScaleDown: &HPAScalingRules{StabilizationWindow: durationPtr(30 * time.Second)}}),
			start: 10,
			steps: hpaSteps(hpaEvery(0, 15, 200, 10), []hpaStep{{30, 200, 2}}),
		},
		{
			name:  "a scale-up window holds a rise until it lasts",
			p:     hpaWith(HPABehavior{ScaleUp: &HPAScalingRules{StabilizationWindow: durationPtr(30 * time.Second)}}),
			start: 2,
			steps: []hpaStep{{0, 200, 2}, {15, 600, 2}, {30, 600, 6}},
		},
	})
}

func TestHPAMissingMetric(t *testing.T) {
	nan := math.NaN()
	hpaCases(t, []hpaCase{
		{
			// Nothing is recorded while the metric is missing: at t405 the window holds no
			// recommendation, so the drop applies at once.
			name:  "holds the count and records nothing",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 5,
			steps: hpaSteps(hpaEvery(0, 390, nan, 5), []hpaStep{{405, 100, 1}}),
		},
		{
			name:  "holds after a scale-up",
			p:     hpa100(HPAConfig{MaxReplicas: 100}),
			start: 2,
			steps: hpaSteps([]hpaStep{{0, 1000, 6}}, hpaEvery(15, 600, nan, 6)),
		},
	})
	tests := []struct {
		name string
		obs  autoscaler.Observation
		want int32
	}{
		{"a Missing observation is no value", autoscaler.Absent("empty result"), 2},
		{"a NaN is no value", autoscaler.Value(math.NaN()), 2},
		{"a Stale observation is what Prometheus returned", autoscaler.Observation{Value: 600, Status: autoscaler.Stale}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := hpaSnap(0, 2, nan)
			s.Obs[rules.QueueDepth] = tt.obs
			if got := hpa100(HPAConfig{MaxReplicas: 100}).Decide(s).Replicas; got != tt.want {
				t.Errorf("%d replicas, want %d", got, tt.want)
			}
		})
	}
}

func TestHPAMinMax(t *testing.T) {
	nan := math.NaN()
	zero := &HPABehavior{ScaleDown: &HPAScalingRules{StabilizationWindow: durationPtr(0)}}
	hpaCases(t, []hpaCase{
		{"above maxReplicas: to max, metric unread", hpa100(HPAConfig{MaxReplicas: 10}), 12, []hpaStep{{0, nan, 10}}},
		{"below minReplicas: to min, metric unread", hpa100(HPAConfig{MinReplicas: 3, MaxReplicas: 10}), 1, []hpaStep{{0, nan, 3}}},
		{"an empty queue stops at minReplicas", hpa100(HPAConfig{MinReplicas: 2, MaxReplicas: 10, Behavior: zero}), 4, []hpaStep{{0, 0, 2}, {15, 0, 2}}},
		{"minReplicas 0 means 1 without ScaleToZero", hpa100(HPAConfig{MaxReplicas: 10, Behavior: zero}), 4, []hpaStep{{0, 0, 1}, {15, 0, 1}}},
		{"growth stops at maxReplicas", hpa100(HPAConfig{MaxReplicas: 7}), 4, []hpaStep{{0, 5000, 7}, {15, 5000, 7}}},
		{"maxReplicas below minReplicas is raised to it", hpa100(HPAConfig{MinReplicas: 3, MaxReplicas: 2}), 5, []hpaStep{{0, nan, 3}}},
	})
}

func TestHPAScaleToZero(t *testing.T) {
	zero := &HPABehavior{ScaleDown: &HPAScalingRules{StabilizationWindow: durationPtr(0)}}
	hpaCases(t, []hpaCase{
		{
			name:  "scales to 0 and back from it",
			p:     hpa100(HPAConfig{ScaleToZero: true, MaxReplicas: 10, Behavior: zero}),
			start: 3,
			steps: []hpaStep{{0, 0, 0}, {15, 0, 0}, {30, 250, 3}},
		},
		{
			name:  "from 0 the scale-up policies allow 4 pods",
			p:     hpa100(HPAConfig{ScaleToZero: true, MaxReplicas: 10, Behavior: zero}),
			start: 3,
			steps: []hpaStep{{0, 0, 0}, {15, 1000, 4}, {30, 1000, 8}},
		},
		{
			name:  "from 0 without spec.behavior: max(2x0, 4)",
			p:     hpa100(HPAConfig{ScaleToZero: true, MaxReplicas: 10, NoBehavior: true, DownscaleStabilization: time.Second}),
			start: 3,
			// The first sync's recorded count (3) is in the 1s window at t0 itself.
			steps: []hpaStep{{0, 0, 3}, {15, 0, 0}, {30, 1000, 4}},
		},
		{
			name:  "a target found at 0 disables the HPA",
			p:     hpa100(HPAConfig{ScaleToZero: true, MaxReplicas: 10}),
			start: 0,
			steps: hpaEvery(0, 120, 1000, 0),
		},
		{
			name:  "without ScaleToZero a target at 0 stays there",
			p:     hpa100(HPAConfig{MaxReplicas: 10}),
			start: 0,
			steps: hpaEvery(0, 120, 1000, 0),
		},
	})
}

func TestHPAConfigurableTolerance(t *testing.T) {
	noTolerance := 0.0
	b := &HPABehavior{ScaleUp: &HPAScalingRules{Tolerance: &noTolerance}}
	hpaCases(t, []hpaCase{
		{"the default band keeps ratio 1.05", hpa100(HPAConfig{MaxReplicas: 10}), 4, []hpaStep{{0, 420, 4}}},
		{"behavior.scaleUp.tolerance 0 scales on it", hpa100(HPAConfig{MaxReplicas: 10, Behavior: b}), 4, []hpaStep{{0, 420, 5}}},
		{"without spec.behavior only the controller's tolerance applies", hpa100(HPAConfig{MaxReplicas: 10, Behavior: b, NoBehavior: true}), 4, []hpaStep{{0, 420, 4}}},
	})
}

func TestHPAPolicy(t *testing.T) {
	var p Policy = NewHPA(HPAConfig{MaxReplicas: 10, TargetAverageValue: 100})
	if p.Name() != "hpa" {
		t.Errorf("Name() = %q, want hpa", p.Name())
	}
	if p.Period() != 15*time.Second {
		t.Errorf("Period() = %s, want 15s", p.Period())
	}
	if got := NewHPA(HPAConfig{SyncPeriod: 30 * time.Second}).Period(); got != 30*time.Second {
		t.Errorf("Period() = %s, want 30s", got)
	}
	s := hpaSnap(0, 2, 600)
	s.State.ReadyReplicas = 0 // unready pods count all the same for an External AverageValue
	want := s.State.Shape
	want.Replicas = 6
	if got := p.Decide(s); got != want {
		t.Errorf("Decide = %+v, want %+v (only Replicas changed)", got, want)
	}
}
