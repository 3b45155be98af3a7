package sim

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

func loadExample(t testing.TB, name string) *rules.Rules {
	t.Helper()
	r, err := rules.Load("../../rules/examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// erlangCWait is the mean wait in queue of an M/M/c queue: c servers, arrivals at lambda,
// service at mu each.
func erlangCWait(c int, lambda, mu float64) float64 {
	a := lambda / mu
	term, sum := 1.0, 0.0
	for k := range c {
		if k > 0 {
			term *= a / float64(k)
		}
		sum += term
	}
	last := term * a / float64(c) * float64(c) / (float64(c) - a) // a^c/c! x c/(c-a)
	return last / (sum + last) / (float64(c)*mu - lambda)
}

// A steady Poisson load on a fixed fleet with exponential jobs is an M/M/c queue: the mean
// wait matches Erlang C within 10 %, and Little's law holds exactly on the run.
func TestSteadyLoadMatchesErlangC(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	const lambda, mean, pods, conc = 0.8, 10.0, 2, 5 // 10 slots at 80 % load
	a, err := Scenario("steady", 12*time.Hour, lambda, 7)
	if err != nil {
		t.Fatal(err)
	}
	start := autoscaler.Shape{Replicas: pods, Class: "medium", Concurrency: conc, TenantConcurrency: 2}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 7, Start: start, Drain: true,
		Types: []JobType{{Name: "exp", CPU: [2]float64{0.01, 0.01}, MemoryMi: [2]float64{1, 1}, Duration: [2]time.Duration{mean * time.Second}, Exponential: true}},
		Mix:   Mix{"exp": 1}}
	res, err := Run(t.Context(), cfg, Static{Shape: start})
	if err != nil {
		t.Fatal(err)
	}
	want := erlangCWait(pods*conc, lambda, 1/mean)
	t.Logf("mean wait %.3fs, Erlang C %.3fs, %d jobs", res.MeanWaitSeconds, want, res.Jobs)
	if math.Abs(res.MeanWaitSeconds-want)/want > 0.10 {
		t.Errorf("mean wait %.3fs, Erlang C gives %.3fs (%d jobs)", res.MeanWaitSeconds, want, res.Jobs)
	}
	if res.Completed != res.Jobs || res.FailedJobs != 0 || res.OOMKills != 0 {
		t.Fatalf("%d of %d jobs completed, %d failed, %d OOM kills", res.Completed, res.Jobs, res.FailedJobs, res.OOMKills)
	}
	// Little's law: the time-average queue equals the throughput times the mean wait.
	if l, lw := res.MeanQueued, float64(res.Jobs)/res.Seconds*res.MeanWaitSeconds; math.Abs(l-lw) > 1e-6*max(l, 1) {
		t.Errorf("Little's law: mean queue %v, arrival rate x mean wait %v", l, lw)
	}
}

// Little's law holds on every run, whatever the policy: with every job finished, the
// time-average number queued is the arrival rate over the run times the mean wait.
func TestLittlesLawOnEveryRun(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	for _, sc := range ScenarioNames() {
		a, err := Scenario(sc, 30*time.Minute, 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 3, Drain: true}
		if err := cfg.Prepare(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []Policy{NewEngine("workerscale", r, r.Workload("render")), Static{Shape: cfg.Start}} {
			res, err := Run(t.Context(), cfg, p)
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed+res.FailedJobs != res.Jobs {
				continue // did not drain in time: the law needs every job counted
			}
			if l, lw := res.MeanQueued, float64(res.Jobs)/res.Seconds*res.MeanWaitSeconds; math.Abs(l-lw) > 1e-6*max(l, 1) {
				t.Errorf("%s, %s: mean queue %v, arrival rate x mean wait %v", sc, p.Name(), l, lw)
			}
		}
	}
}

func TestSameSeedSameRun(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	run := func(seed uint64) string {
		a, err := Scenario("burst", time.Hour, 2, seed)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: seed}
		res, err := Run(t.Context(), cfg, NewEngine("workerscale", r, r.Workload("render")))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res)
		s, _ := json.Marshal(res.Series)
		return string(b) + string(s)
	}
	if a, b := run(1), run(1); a != b {
		t.Errorf("two runs with seed 1 differ:\n%s\n%s", a, b)
	}
	if run(1) == run(2) {
		t.Errorf("seeds 1 and 2 give the same run")
	}
}

func TestTraceErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"header", "sec,count\n0,1\n", "t.csv:1: bad trace: the header is"},
		{"negative", "second,arrivals\n0,1\n1,-2\n", "t.csv:3: bad trace: arrivals -2 is negative"},
		{"gap", "second,arrivals\n0,1\n2,2\n", "t.csv:3: bad trace: a gap: second 2 follows second 0"},
		{"order", "second,arrivals\n0,1\n1,1\n1,1\n", "t.csv:4: bad trace: second 1 comes after second 1"},
		{"not a number", "second,arrivals\n0,x\n", "t.csv:2: bad trace: arrivals \"x\" is not a number"},
		{"fraction", "second,arrivals\n0,1.5\n", "t.csv:2: bad trace: arrivals 1.5 is not a whole number"},
		{"fields", "second,arrivals\n0,1,2\n", "t.csv:2: bad trace: 3 fields, want 2"},
		{"empty", "", "t.csv: bad trace: the file is empty"},
		{"no rows", "second,arrivals\n", "t.csv: bad trace: no rows after the header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTrace("t.csv", strings.NewReader(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrTrace) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	a, err := ReadTrace("t.csv", strings.NewReader("second,arrivals,job_type\n0,2,3d-render\n1,0,\n"))
	if err != nil || len(a.Counts) != 2 || a.Types[0] != "3d-render" {
		t.Errorf("typed trace: %+v, %v", a, err)
	}
}

// Every trace in ../shared/traces loads.
func TestSharedTracesLoad(t *testing.T) {
	for _, name := range []string{"nasa_http_1995-07-13_1s.csv", "azure_llm_code_2023-11-16_1s.csv"} {
		a, err := LoadTrace("../../../shared/traces/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Counts) < 3000 || a.Mean() <= 0 {
			t.Errorf("%s: %d seconds, mean %v", name, len(a.Counts), a.Mean())
		}
	}
}

func TestPlot(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	a, err := Scenario("flash-crowd", time.Hour, 1.5, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	var rs []Result
	for _, p := range []Policy{NewEngine("workerscale", r, r.Workload("render")), Static{Shape: cfg.Start}} {
		res, err := Run(t.Context(), cfg, p)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, res)
	}
	for _, name := range []string{"run.svg", "run.png"} {
		path := t.TempDir() + "/" + name
		if dir := os.Getenv("SIM_PLOT_DIR"); dir != "" {
			path = dir + "/" + name
		}
		if err := Plot(path, "flash-crowd", rs); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
	if err := Plot(t.TempDir()+"/run.pdf", "", rs); err == nil || !strings.Contains(err.Error(), ".svg or .png") {
		t.Errorf("a .pdf plot: %v", err)
	}
}

// The oracle is a lower bound: no policy that serves every job, on any scenario, spends
// less than it.
func TestOracleIsALowerBound(t *testing.T) {
	checked := 0
	defer func() {
		if checked < 10 {
			t.Errorf("only %d runs served every job: the bound was hardly tested", checked)
		}
	}()
	for _, ex := range []struct{ file, workload string }{{"luneo-render.yaml", "render"}, {"blizzard-workers.yaml", "characters"}} {
		r := loadExample(t, ex.file)
		for _, sc := range ScenarioNames() {
			a, err := Scenario(sc, 30*time.Minute, 1.5, 5)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &Config{Rules: r, Workload: ex.workload, Arrivals: a, Seed: 5, Drain: true}
			rs, err := Compare(t.Context(), cfg, PolicyNames(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			oracle := rs[len(rs)-1]
			if !oracle.LowerBound || oracle.Cost <= 0 {
				t.Fatalf("%s: the last result is %+v, want the oracle", sc, oracle)
			}
			for _, res := range rs[:len(rs)-1] {
				if res.Completed == res.Jobs {
					checked++
				}
				if res.Completed == res.Jobs && res.Cost < oracle.Cost {
					t.Errorf("%s %s: %s served every job for $%.3f, below the oracle's $%.3f", ex.workload, sc, res.Policy, res.Cost, oracle.Cost)
				}
			}
		}
	}
}

// startMedium is n pods of the seed's Medium at its concurrency.
func startMedium(n int32) autoscaler.Shape {
	return autoscaler.Shape{Replicas: n, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
}
