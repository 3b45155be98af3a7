package demo

import (
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
)

// write is an applied change of the replica count and class, each class at the demo
// rules' concurrency.
func write(from, to int32, fromClass, toClass string) autoscaler.Report {
	concurrency := map[string]int{"small": 2, "medium": 5, "large": 10, "xlarge": 20}
	return autoscaler.Report{Applied: true, Decision: autoscaler.Decision{Workload: "render",
		From: autoscaler.Shape{Replicas: from, Class: fromClass, Concurrency: concurrency[fromClass]},
		To:   autoscaler.Shape{Replicas: to, Class: toClass, Concurrency: concurrency[toClass]}}}
}

func TestSummaryActions(t *testing.T) {
	proposal := write(2, 6, "medium", "large")
	proposal.Applied, proposal.Skipped = false, "dry-run"
	for _, tc := range []struct {
		name                     string
		reports                  []autoscaler.Report
		outs, ins, classes, revs int
		addedAfterIn             int32
		proposed                 int
	}{
		{name: "nothing"},
		{name: "out, step, in, step down",
			reports: []autoscaler.Report{write(2, 6, "medium", "large"), write(6, 6, "large", "xlarge"), {}, write(6, 2, "xlarge", "xlarge"), write(2, 2, "xlarge", "small")},
			outs:    1, ins: 1, classes: 3, revs: 1},
		{name: "a class stepped down with more replicas lowers the capacity",
			reports: []autoscaler.Report{write(2, 6, "medium", "xlarge"), write(6, 2, "xlarge", "xlarge"), write(2, 4, "xlarge", "medium"), write(4, 2, "medium", "medium")},
			outs:    2, ins: 2, classes: 2, revs: 1},
		{name: "oscillating",
			reports: []autoscaler.Report{write(2, 6, "medium", "medium"), write(6, 3, "medium", "medium"), write(3, 5, "medium", "medium"), write(5, 2, "medium", "medium")},
			outs:    2, ins: 2, revs: 3, addedAfterIn: 2},
		{name: "dry run", reports: []autoscaler.Report{proposal, proposal}, proposed: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Summary{Reports: tc.reports}
			s.compute()
			if s.ScaleOuts != tc.outs || s.ScaleIns != tc.ins || s.ClassChanges != tc.classes || s.Reversals != tc.revs ||
				s.AddedAfterScaleIn != tc.addedAfterIn || s.Proposed != tc.proposed {
				t.Errorf("outs %d, ins %d, class changes %d, reversals %d, added after the scale-in %d, proposed %d; want %d, %d, %d, %d, %d, %d",
					s.ScaleOuts, s.ScaleIns, s.ClassChanges, s.Reversals, s.AddedAfterScaleIn, s.Proposed,
					tc.outs, tc.ins, tc.classes, tc.revs, tc.addedAfterIn, tc.proposed)
			}
		})
	}
}

func TestSummaryJobsAndCost(t *testing.T) {
	burst := time.Unix(1000, 0)
	job := func(id string, wait, startedAfterBurst time.Duration) testenv.CompletedJob {
		return testenv.CompletedJob{ID: id, Wait: wait, Started: burst.Add(startedAfterBurst)}
	}
	_, r, err := demoRules("http://127.0.0.1:9090")
	if err != nil {
		t.Fatal(err)
	}
	s := Summary{
		BurstStart: burst, WaitTarget: 10 * time.Second, classes: r.Classes,
		Jobs: []testenv.CompletedJob{job("a", time.Second, 0), job("b", 20*time.Second, 30*time.Second),
			job("c", 12*time.Second, 25*time.Second), job("a", 2*time.Second, 40*time.Second)},
		Samples: []Sample{
			{At: 0, Replicas: 2, Class: "medium", Slots: 10},
			{At: 30 * time.Minute, Replicas: 6, Class: "xlarge", Slots: 120},
			{At: time.Hour, Replicas: 2, Class: "small", Slots: 4},
		},
	}
	s.compute()
	if s.Distinct != 3 || s.Duplicates != 1 {
		t.Errorf("%d distinct ids, %d completed more than once; want 3 and 1", s.Distinct, s.Duplicates)
	}
	if s.WaitP50 != 2*time.Second || s.WaitMax != 20*time.Second || s.OverTarget != 0.5 || s.BackUnderTarget != 30*time.Second {
		t.Errorf("p50 %s, max %s, over target %v, back under target %s; want 2s, 20s, 0.5, 30s", s.WaitP50, s.WaitMax, s.OverTarget, s.BackUnderTarget)
	}
	// Half an hour of 2 medium (0.10/h), half an hour of 6 xlarge (0.40/h).
	if want := 0.5*2*0.10 + 0.5*6*0.40; s.Cost < want-1e-9 || s.Cost > want+1e-9 || s.ClassHours["xlarge"] != 3 {
		t.Errorf("cost %v, xlarge replica-hours %v; want %v and 3", s.Cost, s.ClassHours["xlarge"], want)
	}
	if s.Peak.Class != "xlarge" {
		t.Errorf("peak %+v, want the xlarge sample", s.Peak)
	}
	var b strings.Builder
	s.Write(&b)
	for _, want := range []string{"p50 2.0s", "50.0% of the jobs over the 10.0s target", "peak 6 x xlarge (120 slots)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the summary lacks %q:\n%s", want, b.String())
		}
	}
}

func TestDecisionLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    autoscaler.Report
		want string
	}{
		{"applied", autoscaler.Report{Applied: true, Decision: autoscaler.Decision{Workload: "render",
			From: autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5}, To: autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10},
			Reasons: []string{"scale out", "queueDepth 1146 is critical"}}},
			"t= 16.9s  render: 2 x medium (concurrency 5) -> 6 x large (concurrency 10)  (applied)\n           - scale out\n           - queueDepth 1146 is critical\n"},
		{"dry run", autoscaler.Report{Skipped: "dry-run", Decision: autoscaler.Decision{Workload: "render",
			From: autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5}, To: autoscaler.Shape{Replicas: 2, Class: "small", Concurrency: 2}}},
			"t= 16.9s  render: 2 x medium (concurrency 5) -> 2 x small (concurrency 2)  (not applied: dry-run)\n"},
		{"failed", autoscaler.Report{Error: "conflict", Decision: autoscaler.Decision{Workload: "render"}},
			"t= 16.9s  render: 0 x  (concurrency 0) -> 0 x  (concurrency 0)  (failed: conflict)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decisionLine(16900*time.Millisecond, tc.r); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
