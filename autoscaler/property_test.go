package autoscaler

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// FuzzDecide checks what must hold for any input: the result is within minReplicas,
// maxReplicas and the class's maximum, it holds no NaN (it marshals to JSON), and missing
// data never scales a fleet down.
func FuzzDecide(f *testing.F) {
	f.Add(500.0, 30.0, 0.5, 0.5, 0.9, 0.99, 2.0, 10.0, uint8(0), int32(4), uint8(1), int64(0))
	f.Add(0.0, 0.0, 0.1, 0.1, 0.0, 0.5, 0.0, 0.0, uint8(0xff), int32(20), uint8(0), int64(600))
	f.Add(math.NaN(), math.Inf(1), -1.0, 2.0, 5.0, math.NaN(), -3.0, 1e300, uint8(0x15), int32(1), uint8(3), int64(30))
	r := load(f, seedClasses+`rateBudgets: [{name: api, keys: 1, safeRequestsPerSecond: 70}]
workloads:
  - name: render
    minReplicas: 2
    maxReplicas: 15
    fallbackReplicas: 4
  - name: budgeted
    maxReplicas: 40
    rateBudget: api
    requestsPerJob: 3
    horizontal: {jobDuration: 2s}
`)
	f.Fuzz(func(t *testing.T, queue, wait, cpu, mem, sat, completion, tput, active float64, absent uint8, replicas int32, classIdx uint8, sinceSeconds int64) {
		metrics := []string{rules.QueueDepth, rules.WaitSeconds, rules.CPU, rules.Memory, rules.Saturation, rules.CompletionRate, rules.Throughput, rules.ActiveJobs}
		values := []float64{queue, wait, cpu, mem, sat, completion, tput, active}
		obs := Observations{}
		for i, m := range metrics {
			switch {
			case absent&(1<<i) == 0:
				obs[m] = Value(values[i])
			case i%2 == 0:
				obs[m] = Observation{Value: values[i], Status: Stale, Reason: "old"}
			}
		}
		class := r.Classes[int(classIdx)%len(r.Classes)]
		for i := range r.Workloads {
			w := &r.Workloads[i]
			cur := min(max(replicas, *w.MinReplicas), w.MaxReplicas)
			if class.MaxReplicas > 0 {
				cur = min(cur, class.MaxReplicas)
			}
			cur = max(cur, *w.MinReplicas)
			st := state(cur, class.Name, *class.Concurrency, *class.TenantConcurrency)
			since := time.Duration(sinceSeconds%7200) * time.Second
			h := History{Since: map[string]time.Time{condCPUHigh: t0.Add(-since), condCPULow: t0.Add(-since), condMemoryHigh: t0.Add(-since)}}
			in := Input{Workload: w, Observations: obs, State: st, History: h}
			d := Decide(t0, r, in)
			check(t, r, w, obs, d)
			checkInvariants(t, t0, r, []Input{in}, []Decision{d})
		}
	})
}

func check(t *testing.T, r *rules.Rules, w *rules.Workload, obs Observations, d Decision) {
	t.Helper()
	to := r.Class(d.To.Class)
	if to == nil {
		t.Fatalf("unknown class %q", d.To.Class)
	}
	hi := w.MaxReplicas
	if to.MaxReplicas > 0 {
		hi = min(hi, to.MaxReplicas)
	}
	if d.To.Replicas < *w.MinReplicas || d.To.Replicas > hi {
		t.Fatalf("%s: %d replicas outside [%d, %d]\n%v", w.Name, d.To.Replicas, *w.MinReplicas, hi, d.Reasons)
	}
	if d.To.Concurrency < 1 || d.To.TenantConcurrency < 1 || d.To.TenantConcurrency > d.To.Concurrency {
		t.Fatalf("%s: concurrency %d/%d", w.Name, d.To.Concurrency, d.To.TenantConcurrency)
	}
	if _, err := json.Marshal(d); err != nil {
		t.Fatalf("%s: decision does not marshal: %v", w.Name, err)
	}
	for _, reason := range d.Reasons {
		if containsNaN(reason) {
			t.Fatalf("%s: a reason shows a non-number: %s", w.Name, reason)
		}
	}
	usable := func(m string) bool { o, ok := obs[m]; return ok && o.usable() }
	// Active jobs are derived from a fresh saturation when not observed themselves.
	missing := !usable(rules.QueueDepth) || !usable(rules.Throughput) || !(usable(rules.ActiveJobs) || usable(rules.Saturation))
	if missing && w.RateBudget == "" {
		from := d.From
		if from.Class == d.To.Class && d.To.Replicas < from.Replicas {
			t.Fatalf("%s: scaled down from %d to %d with metrics missing\n%v", w.Name, from.Replicas, d.To.Replicas, d.Reasons)
		}
		if from.Class != d.To.Class && int(d.To.Replicas)*d.To.Concurrency < min(int(from.Replicas)*from.Concurrency, int(hi)*d.To.Concurrency) {
			t.Fatalf("%s: capacity fell from %dx%d to %dx%d with metrics missing\n%v", w.Name, from.Replicas, from.Concurrency, d.To.Replicas, d.To.Concurrency, d.Reasons)
		}
	}
}

// containsNaN finds a non-number the engine computed; naming a NaN input as the reason it
// was ignored is fine.
func containsNaN(s string) bool {
	for _, part := range strings.Split(s, "(") {
		if strings.Contains(part, "not a finite number") {
			continue
		}
		if strings.Contains(part, "NaN") || strings.Contains(part, "Inf") {
			return true
		}
	}
	return false
}
