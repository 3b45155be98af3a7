package autoscaler

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/workerscale/workerscale/rules"
)

// Scale to zero (docs/policy.md, "Scale to zero"): with minReplicas 0 the activation
// threshold decides 0 -> 1, and a running fleet goes to 0 only with an empty queue and no
// active job, once that has lasted the scale-down window.
func TestScaleToZero(t *testing.T) {
	const zero = "vertical: {enabled: false}\nminReplicas: 0\n"
	const activation5 = zero + "horizontal: {activationQueueDepth: 5}\n"
	for _, tc := range []struct {
		name   string
		extra  string
		st     State
		obs    Observations
		want   int32
		reason string
	}{
		{
			name:  "at 0, a queue at the activation threshold does not start the fleet",
			extra: noBehavior + activation5, st: state(0, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 5}), want: 0,
			reason: "scale to zero: 5 queued is not above the activation threshold of 5 (horizontal.activationQueueDepth); the fleet stays at 0 replicas",
		},
		{
			name:  "at 0, a queue above it starts the fleet, sized as usual",
			extra: noBehavior + activation5, st: state(0, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 6}), want: 2, // 6 / (5 x 0.8) x 1.2
			reason: "activation: 6 queued is above the activation threshold of 5 (horizontal.activationQueueDepth); the fleet starts from 0 replicas",
		},
		{
			name:  "at 0, by default one queued job starts the fleet",
			extra: noBehavior + zero, st: state(0, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 1}), want: 1,
		},
		{
			name:  "at 0, the HPA's default scale-up policy allows 4 pods at once",
			extra: zero, st: state(0, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 500}), want: 4,
		},
		{
			name:  "at 0, nothing but the queue starts the fleet",
			extra: noBehavior + zero + "horizontal: {activationQueueDepth: 5, jobDuration: 10s}", st: state(0, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 0, rules.Throughput: 3, rules.ActiveJobs: 30}), want: 0,
			reason: "scale to zero: 0 queued is not above the activation threshold of 5",
		},
		{
			name:  "at 0, an unknown queue depth starts nothing",
			extra: noBehavior + zero, st: state(0, "medium", 5, 2),
			obs: Observations{rules.Throughput: Value(3), rules.ActiveJobs: Value(30)}, want: 0,
			reason: "scale to zero: the queue depth is not known, so the fleet is not started from 0 replicas",
		},
		{
			name:  "at 0, fallbackReplicas applies while metrics are missing",
			extra: noBehavior + zero + "fallbackReplicas: 2", st: state(0, "medium", 5, 2),
			obs: Observations{}, want: 2,
		},
		{
			name:  "running, a queue below the activation threshold keeps one replica (KEDA would stop it)",
			extra: noBehavior + activation5, st: state(3, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.QueueDepth: 2}), want: 1,
		},
		{
			name:  "running, an active job keeps one replica though the sizing asks for none",
			extra: noBehavior + zero + "horizontal: {sizing: seed, jobDuration: 10s}", st: state(3, "medium", 5, 2),
			obs: fresh(map[string]float64{rules.ActiveJobs: 1}), want: 1,
			reason: "scale to zero: 0 queued and 1 active, so the fleet keeps 1 replica until the queue is empty and no job is active",
		},
		{
			name:  "running, an empty queue and no active job: to 0 (no scale-down window here)",
			extra: noBehavior + zero, st: state(3, "medium", 5, 2),
			obs: fresh(nil), want: 0,
			reason: "scale to zero: the queue is empty and no job is active; 0 replicas once that has lasted the scale-down window (0s)",
		},
		{
			name:  "running, the queue depth missing: held",
			extra: noBehavior + zero, st: state(3, "medium", 5, 2),
			obs: Observations{rules.Throughput: Value(0), rules.ActiveJobs: Value(0)}, want: 3,
		},
		{
			name:  "minReplicas 1: no activation, the floor holds",
			extra: noBehavior + "vertical: {enabled: false}", st: state(0, "medium", 5, 2),
			obs: fresh(nil), want: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, tc.extra)
			d := Decide(t0, r, Input{Workload: w, Observations: tc.obs, State: tc.st})
			if d.To.Replicas != tc.want {
				t.Errorf("to %d replicas, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
			if tc.reason != "" && !strings.Contains(strings.Join(d.Reasons, "\n"), tc.reason) {
				t.Errorf("no reason %q in\n%s", tc.reason, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

// TestScaleToZeroWaitsForTheScaleDownWindow follows a fleet cycle by cycle with the HPA's
// default behaviour: it stops only once the queue has been empty, with no job active, for
// the 300 s scale-down window (KEDA's cooldownPeriod), and a job in between starts the
// count again.
func TestScaleToZeroWaitsForTheScaleDownWindow(t *testing.T) {
	r, w := single(t, "vertical: {enabled: false}\nminReplicas: 0\nhorizontal: {activationQueueDepth: 3}")
	st := state(2, "medium", 5, 2)
	var h History
	steps := []struct {
		at     time.Duration
		queued float64
		want   int32
	}{
		{0, 0, 2},                           // the window holds the current count, as on first sight
		{2 * time.Minute, 1, 2},             // a job: the fleet keeps a replica (and the window its 2)
		{4 * time.Minute, 0, 2},             // empty again, within the window of the 2 seen at 0
		{5*time.Minute + time.Second, 0, 1}, // the 2 have left the window; the 1 of minute 2 has not
		{7*time.Minute + time.Second, 0, 0}, // empty, no job active, for the whole window
		{8 * time.Minute, 3, 0},             // at the activation threshold: stays at 0
		{9 * time.Minute, 4, 2},             // above it: starts, sized as usual (4 / (5 x 0.8) x 1.2 = 1.2 workers)
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		d := Decide(now, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: s.queued}), State: st, History: h})
		if d.To.Replicas != s.want {
			t.Fatalf("at +%s with %v queued: to %d, want %d\n%s", s.at, s.queued, d.To.Replicas, s.want, strings.Join(d.Reasons, "\n"))
		}
		h = d.History.Applied(now, d)
		st.Replicas, st.ReadyReplicas = d.To.Replicas, d.To.Replicas
	}
}

// TestScaleToZeroProperties: for any observations, state and activation threshold of a
// workload with minReplicas 0 (no rate budget, no override), a fleet at 0 starts only when
// its queue depth is fresh and above the threshold, or by fallbackReplicas while metrics
// are missing; a running fleet stops only with a fresh empty queue and no fresh active job.
func TestScaleToZeroProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		activation := rapid.SampledFrom([]float64{0, 1, 5, 50}).Draw(t, "activation")
		extra := fmt.Sprintf("minReplicas: 0\nhorizontal: {activationQueueDepth: %g, sizing: %s}\n",
			activation, rapid.SampledFrom([]string{rules.SizingDrain, rules.SizingSeed}).Draw(t, "sizing"))
		if rapid.Bool().Draw(t, "noBehavior") {
			extra += noBehavior
		}
		fallback := rapid.Bool().Draw(t, "fallback")
		if fallback {
			extra += "fallbackReplicas: 2\n"
		}
		r, err := rules.Parse("t.yaml", []byte(seedClasses+"workloads:\n  - name: render\n    maxReplicas: 200\n"+indent(extra, "    ")))
		if err != nil {
			t.Fatalf("rules:\n%v", err)
		}
		w := &r.Workloads[0]
		obs := Observations{}
		for _, m := range []string{rules.QueueDepth, rules.Throughput, rules.ActiveJobs, rules.CPU, rules.Memory, rules.CompletionRate} {
			switch rapid.IntRange(0, 4).Draw(t, m+"Kind") {
			case 0: // missing
			case 1:
				obs[m] = Value(0)
			default:
				lo, hi := metricRanges[m][0], metricRanges[m][1]
				if m == rules.QueueDepth {
					hi = 3*activation + 3 // near the threshold, mostly
				}
				obs[m] = Value(rapid.Float64Range(lo, hi).Draw(t, m))
			}
		}
		replicas := rapid.SampledFrom([]int32{0, 0, 1, 3}).Draw(t, "replicas")
		st := state(replicas, rapid.SampledFrom([]string{"small", "medium", "large"}).Draw(t, "class"), 0, 0)
		st.Concurrency, st.TenantConcurrency = *r.Class(st.Class).Concurrency, *r.Class(st.Class).TenantConcurrency
		var h History
		if rapid.Bool().Draw(t, "history") {
			h.Recommendations = []Recommendation{{Time: t0.Add(-time.Duration(rapid.IntRange(1, 600).Draw(t, "age")) * time.Second), Replicas: rapid.Int32Range(0, 5).Draw(t, "recommended")}}
		}
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: st, History: h})
		q, okQ := obs[rules.QueueDepth]
		a, okA := obs[rules.ActiveJobs]
		missing := len(d.Missing) > 0
		if replicas == 0 && d.To.Replicas > 0 && !(okQ && q.Value > activation) && !(fallback && missing) {
			t.Fatalf("started from 0 with queue %v (fresh %v), activation %v\n%s", q.Value, okQ, activation, strings.Join(d.Reasons, "\n"))
		}
		if replicas > 0 && d.To.Replicas == 0 && !(okQ && q.Value == 0 && (!okA || a.Value == 0)) {
			t.Fatalf("stopped with queue %v (fresh %v), active %v (fresh %v)\n%s", q.Value, okQ, a.Value, okA, strings.Join(d.Reasons, "\n"))
		}
	})
}

// A fleet left at 0 replicas keeps its class and concurrency, and stays at 0.
func TestScaleToZeroAsleepKeepsItsClass(t *testing.T) {
	r, w := single(t, noBehavior+"minReplicas: 0\nclasses: [medium]\nhorizontal: {activationQueueDepth: 5}\n")
	for _, st := range []State{state(0, "medium", 5, 2), state(0, "large", 10, 3)} {
		d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 2}), State: st})
		if d.To.Replicas != 0 || d.To.Class != st.Class || d.To.Concurrency != st.Concurrency {
			t.Errorf("asleep at %s: decided %+v\n%s", st.Class, d.To, strings.Join(d.Reasons, "\n"))
		}
	}
}
