package autoscaler

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// cpuPerSlot is the CPU request a slot of shape s gets in r (the thresholds grade use
// against the requests).
func cpuPerSlot(r *rules.Rules, s Shape) float64 {
	return r.Class(s.Class).CPU.Float() / float64(s.Concurrency)
}

// The examples of issue 11, each a regression test.
func TestDecisionsThatHelp(t *testing.T) {
	luneo := example(t, "luneo-render.yaml")
	render := workloadNamed(t, luneo, "render")

	t.Run("CPU pressure adds CPU per job, not the same ratio in a bigger box", func(t *testing.T) {
		obs := set(map[string]float64{rules.QueueDepth: 10, rules.Throughput: 2, rules.ActiveJobs: 40, rules.CPU: 0.93, rules.Memory: 0.5, rules.CompletionRate: 1})
		from := state(10, "medium", 5, 2)
		d := Decide(t0, luneo, Input{Workload: render, Observations: obs, State: from, History: AssumeSustained(t0, render, obs)})
		if cpuPerSlot(luneo, d.To) <= cpuPerSlot(luneo, from.Shape) {
			t.Fatalf("to %+v: %.2f cores a slot, no more than the %.2f before\n%s", d.To, cpuPerSlot(luneo, d.To), cpuPerSlot(luneo, from.Shape), strings.Join(d.Reasons, "\n"))
		}
		// With CPU still at 93 % after the change, the next move adds CPU again or holds;
		// it never repacks the same CPU per job into a bigger box.
		next := State{Shape: d.To, ReadyReplicas: d.To.Replicas}
		h := d.History.Applied(t0, d)
		later := t0.Add(2 * render.Vertical.SustainFor.D())
		h.Since = AssumeSustained(later, render, obs).Since
		d2 := Decide(later, luneo, Input{Workload: render, Observations: obs, State: next, History: h})
		if d2.To.Class != d.To.Class && cpuPerSlot(luneo, d2.To) <= cpuPerSlot(luneo, d.To) {
			t.Errorf("then %+v -> %+v: the CPU per slot did not grow\n%s", d.To, d2.To, strings.Join(d2.Reasons, "\n"))
		}
	})
	t.Run("the backlog of long jobs asks for no more slots than there are jobs", func(t *testing.T) {
		// 120 queued and 60 running jobs of 30 s: 180 jobs, 270 slots with utilization and buffer.
		r, w := seeded(t, "")
		obs := fresh(map[string]float64{rules.QueueDepth: 120, rules.Throughput: 2, rules.ActiveJobs: 60})
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(12, "medium", 5, 2)})
		if slots := slotsOf(d.To); slots > 270+d.To.Concurrency {
			t.Errorf("to %+v: %d slots for 180 jobs\n%s", d.To, slots, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("stuck jobs are reported, not multiplied", func(t *testing.T) {
		r, w := seeded(t, "horizontal: {jobDuration: 30s}")
		obs := fresh(map[string]float64{rules.QueueDepth: 0, rules.Throughput: 0.001, rules.ActiveJobs: 85})
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(17, "medium", 5, 2)})
		if slots := slotsOf(d.To); slots > 128+d.To.Concurrency || !hasReason(d, "jobs look stuck") {
			t.Errorf("to %+v: %d slots for 85 stuck jobs\n%s", d.To, slots, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("a burst of short jobs does not get a fleet sized for long ones", func(t *testing.T) {
		r, w := seeded(t, noBehavior+"horizontal: {jobDuration: 250ms}")
		obs := fresh(map[string]float64{rules.QueueDepth: 500, rules.Throughput: 20, rules.ActiveJobs: 5})
		d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(2, "medium", 5, 2)})
		if d.To.Class != "medium" || d.To.Replicas > 8 {
			t.Errorf("500 jobs of 0.25 s on 2 medium: to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
		}
	})
	t.Run("the seed's formula stays available", func(t *testing.T) {
		r, w := single(t, noBehavior+"vertical: {enabled: false}\nhorizontal: {sizing: seed}")
		d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 500}), State: state(100, "medium", 5, 2)})
		if d.To.Replicas != 150 {
			t.Errorf("500 jobs at concurrency 5 with the seed's formula: %d workers, want 150", d.To.Replicas)
		}
	})
}

// Issue 11's flip-flop: with 3 jobs in flight on 2 Medium pods, the fleet went medium ->
// small (projected 37 % CPU, real 62 %) -> medium every 25 minutes. Under an unchanged
// load, no class change is reversed.
func TestNoFlipFlopUnderASteadyLoad(t *testing.T) {
	r := example(t, "luneo-render.yaml")
	w := workloadNamed(t, r, "render")
	const jobs, cpuJob, memJob = 3.0, 0.6, 700 << 20 // cores and bytes a running job uses
	st := state(2, "medium", 5, 2)
	var h History
	var changes []string
	now := t0
	for range 400 { // 100 minutes of 15 s cycles
		c := r.Class(st.Class)
		ready := float64(st.Replicas)
		obs := set(map[string]float64{
			rules.QueueDepth: 0, rules.ActiveJobs: jobs, rules.Throughput: jobs / 24, rules.CompletionRate: 1,
			rules.CPU:    jobs * cpuJob / (ready * c.CPU.Float()),
			rules.Memory: (jobs*memJob + ready*(150<<20)) / (ready * c.Memory.Float()),
		})
		d := Decide(now, r, Input{Workload: w, Observations: obs, State: st, History: h})
		h = d.History
		if d.Changed() {
			h = h.Applied(now, d)
			if d.To.Class != d.From.Class {
				changes = append(changes, d.From.Class+"->"+d.To.Class)
			}
			st = State{Shape: d.To, ReadyReplicas: d.To.Replicas}
		}
		now = now.Add(15 * time.Second)
	}
	if len(changes) > 1 {
		t.Errorf("class changes under a steady load: %v", changes)
	}
}

// g + sqrt(g) <= r: the slots whose jobs stay under the limit though they vary.
func TestMemoryLimitFit(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want int
	}{{0, 0}, {1.9, 0}, {2, 1}, {6, 4}, {7.3, 5}, {8.9, 6}, {29, 24}, {30, 25}} {
		if got := memoryLimitFit(tc.r); got != tc.want {
			t.Errorf("memoryLimitFit(%v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// The CPU query is a rate over the rules' window, so a job's CPU is that over the jobs
// the window saw: a fleet filling up does not read as light jobs.
func TestPerJobCPUOverTheWindow(t *testing.T) {
	r := example(t, "luneo-render.yaml")
	w := workloadNamed(t, r, "render")
	st := state(10, "medium", 5, 2)
	// 20 jobs of 1 core each for the last 10 minutes; then 20 more start: the rate still
	// shows 20 cores over the 20 cores of request, the memory the 40 jobs.
	var h History
	now := t0
	obs := func(active float64) Observations {
		return set(map[string]float64{rules.QueueDepth: 0, rules.ActiveJobs: active, rules.Throughput: active / 30, rules.CompletionRate: 1,
			rules.CPU: 20.0 / 20, rules.Memory: active * (500 << 20) / (10 * 4 << 30)})
	}
	for range 40 {
		d := Decide(now, r, Input{Workload: w, Observations: obs(20), State: st, History: h})
		h = d.History
		now = now.Add(15 * time.Second)
	}
	d := Decide(now, r, Input{Workload: w, Observations: obs(40), State: st, History: h})
	if got := d.History.PerJob.CPU; got < 0.8 || got > 1.2 {
		t.Errorf("a job's CPU after the fleet doubled its jobs: %.2f cores, want about 1 (the window's jobs)\n%s", got, strings.Join(d.Reasons, "\n"))
	}
}

// Until a job has been measured over a window, a move to another class gives a slot no
// less CPU and memory than a slot has now.
func TestClassWhileMeasuring(t *testing.T) {
	r := example(t, "luneo-render.yaml")
	w := workloadNamed(t, r, "render")
	// A first cycle on a busy fleet: 80 queued, every slot of 5 medium busy.
	obs := set(map[string]float64{rules.QueueDepth: 80, rules.ActiveJobs: 25, rules.Throughput: 1, rules.CompletionRate: 1, rules.CPU: 0.92, rules.Memory: 0.69})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "medium", 5, 2)})
	if c := r.Class(d.To.Class); d.To.Class != "medium" && (cpuLimit(c)/float64(d.To.Concurrency) < 0.8-1e-9 || memLimit(c)/float64(d.To.Concurrency) < (8<<30)/5.0-1) {
		t.Errorf("to %+v: a slot gets less CPU or memory than medium's limits give it\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

// Once a job is measured, pods whose full slots would pass the memory limit get fewer
// slots before they are OOM-killed.
func TestMemoryRiskLowersConcurrency(t *testing.T) {
	r := example(t, "luneo-render.yaml")
	w := workloadNamed(t, r, "render")
	obs := set(map[string]float64{rules.QueueDepth: 0, rules.ActiveJobs: 40, rules.Throughput: 1, rules.CompletionRate: 1, rules.CPU: 0.3, rules.Memory: 0.5})
	h := History{PerJob: &JobResources{CPU: 0.3, Memory: 1200 << 20, Updated: t0.Add(-time.Minute), ActiveSince: t0.Add(-time.Hour)}, ActiveJobs: []Sample{SampleAt(t0.Add(-15*time.Second), 40)}}
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(4, "xlarge", 20, 5), History: h})
	if d.To.Concurrency*1200+int(math.Sqrt(float64(d.To.Concurrency)))*1200 > 16384 {
		t.Errorf("to %+v: %d slots of 1200 MiB jobs on xlarge's 16 GiB\n%s", d.To, d.To.Concurrency, strings.Join(d.Reasons, "\n"))
	}
}
