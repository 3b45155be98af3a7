package sim

import (
	"math"
	"testing"
	"time"
)

// cpuFleet is a fleet of n medium pods (2 cores of request, 4 of limit) with no arrivals.
func cpuFleet(t *testing.T, n int32, slack float64) *fleet {
	t.Helper()
	r := loadExample(t, "luneo-render.yaml")
	a, err := Scenario("steady", time.Minute, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1, Start: startMedium(n), CPUSlack: slack}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	f := &fleet{cfg: cfg, w: cfg.w, spec: cfg.Start}
	f.tmpl = f.classTemplate(cfg.Start)
	for range n {
		f.newPod(0)
	}
	return f
}

// run starts a job asking for cpu cores on pod p.
func (f *fleet) runJob(p *pod, cpu float64) {
	f.jobs = append(f.jobs, job{cpu: cpu, work: 100, left: 100})
	p.running = append(p.running, len(f.jobs)-1)
	f.reschedule(p)
}

// CPU above a pod's request is lent from what the fleet's other pods leave unused of
// theirs: a busy pod beside idle ones gets its limit, pods that are all busy get their
// requests, and nothing is free unless the nodes have slack.
func TestCPUAboveTheRequestIsLent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		slack  float64
		busy   []float64 // the CPU the jobs on each pod ask for
		speeds []float64
	}{
		{"one busy pod beside idle ones gets its limit", 0, []float64{4, 0, 0}, []float64{1, 1, 1}},
		{"past its limit it slows", 0, []float64{8, 0, 0}, []float64{0.5, 1, 1}},
		{"all busy: requests only", 0, []float64{4, 4, 4}, []float64{0.5, 0.5, 0.5}},
		{"what one leaves unused, the others share", 0, []float64{4, 4, 1}, []float64{0.625, 0.625, 1}},
		{"slack lends more", 0.5, []float64{4, 4, 4}, []float64{0.75, 0.75, 0.75}},
		{"infinite slack: every limit is free", math.Inf(1), []float64{4, 4, 4}, []float64{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := cpuFleet(t, int32(len(tc.busy)), tc.slack)
			for i, cpu := range tc.busy {
				if cpu > 0 {
					f.runJob(f.pods[i], cpu)
				}
			}
			var used, pool float64
			for i, p := range f.pods {
				if math.Abs(p.speed-tc.speeds[i]) > 1e-9 {
					t.Errorf("pod %d asking %v cores: speed %v, want %v", i, tc.busy[i], p.speed, tc.speeds[i])
				}
				used += p.demand * p.speed
				pool += p.cpuReq
			}
			if used > pool*(1+tc.slack)+1e-9 {
				t.Errorf("the pods use %v cores, more than the %v of requests and slack", used, pool*(1+tc.slack))
			}
		})
	}
}

// A job's completion follows its pod's speed as the others come and go.
func TestCPUSpeedFollowsTheFleet(t *testing.T) {
	f := cpuFleet(t, 2, 0)
	f.runJob(f.pods[0], 4) // alone: 4 cores, 100 s of work at full speed
	f.now = 50
	f.runJob(f.pods[1], 4) // now both get their 2 cores: half speed
	if f.pods[0].speed != 0.5 {
		t.Fatalf("speed %v once the other pod is busy, want 0.5", f.pods[0].speed)
	}
	if left := f.jobs[0].left; math.Abs(left-50) > 1e-9 {
		t.Fatalf("the first job has %v s of work left after 50 s alone, want 50", left)
	}
}

// BullMQ's queue limiter, as workerscale writes it (RATE_LIMIT_MAX jobs per limiterWindow):
// global to the queue, whatever the slots, and nothing without it.
func TestQueueLimiter(t *testing.T) {
	r := loadExample(t, "blizzard-workers.yaml")
	a, err := Scenario("steady", 10*time.Minute, 100, 1) // far more than the limit
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		limit int
		max   float64 // jobs per second at most
	}{{20, 20}, {0, math.Inf(1)}} {
		shape := startMedium(5)
		shape.Class, shape.Concurrency, shape.TenantConcurrency, shape.RateLimitMax = "standard", 3, 1, tc.limit
		cfg := &Config{Rules: r, Workload: "characters", Arrivals: a, Seed: 1, Start: shape}
		res, err := Run(t.Context(), cfg, Static{Shape: shape})
		if err != nil {
			t.Fatal(err)
		}
		rate := float64(res.Completed) / 600
		t.Logf("RATE_LIMIT_MAX %d: %.1f jobs/s", tc.limit, rate)
		if rate > tc.max+0.5 {
			t.Errorf("RATE_LIMIT_MAX %d: %.1f jobs/s completed, more than it lets start", tc.limit, rate)
		}
		if tc.limit == 0 && rate < 40 {
			t.Errorf("no limiter: %.1f jobs/s, want the 15 slots' ~75", rate)
		}
	}
}
