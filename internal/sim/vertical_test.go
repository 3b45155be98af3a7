package sim

import (
	"testing"
	"time"
)

// cpuPerSlot is the CPU request a slot of the shape gets.
func cpuPerSlot(t *testing.T, cfg *Config, r Result) float64 {
	t.Helper()
	return cfg.Rules.Class(r.End.Class).CPU.Float() / float64(r.End.Concurrency)
}

// A steady load over a simulated day makes at most 2 class changes, and no class change
// is reversed within 2 x sustainFor (issue 11's flip-flop: 3 jobs in flight on 2 pods went
// medium -> small -> medium every 25 minutes).
func TestSteadyDayClassChanges(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	window := 2 * r.Workload("render").Vertical.SustainFor.D().Seconds()
	for _, rate := range []float64{0.125, 0.5, 2} {
		a, err := Scenario("steady", 24*time.Hour, rate, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1, Start: startMedium(2)}
		res, err := Run(t.Context(), cfg, NewEngine("workerscale", r, r.Workload("render")))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(res.ClassChanges); n > 2 {
			t.Errorf("rate %v: %d class changes in a steady day: %+v", rate, n, res.ClassChanges)
		}
		for i, c := range res.ClassChanges {
			for _, later := range res.ClassChanges[i+1:] {
				if later.From == c.To && later.To == c.From && later.T-c.T < window {
					t.Errorf("rate %v: %s -> %s at %.0fs reversed at %.0fs", rate, c.From, c.To, c.T, later.T)
				}
			}
		}
	}
}

// A CPU-bound mix (all 3D renders) ends with more CPU per running job than it started
// with; a memory-bound one ends without OOM kills.
func TestVerticalFollowsTheJobs(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	a, err := Scenario("steady", 6*time.Hour, 0.5, 1)
	if err != nil {
		t.Fatal(err)
	}
	types := append(SeedJobTypes(), JobType{Name: "memory-bound", CPU: [2]float64{0.1, 0.2}, MemoryMi: [2]float64{1400, 1900}, Duration: [2]time.Duration{20 * time.Second, 40 * time.Second}})
	cpuBound := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1, Types: types, Mix: Mix{"3d-render": 1}, Start: startMedium(5)}
	res, err := Run(t.Context(), cpuBound, NewEngine("workerscale", r, r.Workload("render")))
	if err != nil {
		t.Fatal(err)
	}
	if got := cpuPerSlot(t, cpuBound, res); got <= 0.4 {
		t.Errorf("all 3D renders: %.2f cores a slot at the end (%+v), want more than medium's 0.4", got, res.End)
	}
	memBound := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1, Types: types, Mix: Mix{"memory-bound": 1}, Start: startMedium(5)}
	res, err = Run(t.Context(), memBound, NewEngine("workerscale", r, r.Workload("render")))
	if err != nil {
		t.Fatal(err)
	}
	if res.OOMKills > 0 || res.FailedJobs > 0 {
		t.Errorf("memory-bound jobs: %d OOM kills, %d failed jobs (end %+v)", res.OOMKills, res.FailedJobs, res.End)
	}
}
