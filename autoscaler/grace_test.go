package autoscaler

import (
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// A grace period shorter than the jobs is a warning that names both and the fix; one that
// covers them, or an unknown one, is not.
func TestGracePeriodShorterThanTheJobs(t *testing.T) {
	seconds := func(s int64) *int64 { return &s }
	// 40 jobs in flight completing at 0.5 jobs/s: a mean job of 80 s (Little's law).
	measured := fresh(map[string]float64{rules.QueueDepth: 10, rules.ActiveJobs: 40, rules.Throughput: 0.5})
	for _, tc := range []struct {
		name  string
		grace *int64
		want  string // "" for no warning
	}{
		{"Kubernetes' default 30s", seconds(30), "terminationGracePeriodSeconds is 30s, shorter than a mean job duration of 80s"},
		{"no grace at all", seconds(0), "terminationGracePeriodSeconds is 0s"},
		{"longer than the jobs", seconds(300), ""},
		{"unknown", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, "vertical: {enabled: false}")
			st := state(10, "medium", 5, 2)
			st.TerminationGracePeriodSeconds = tc.grace
			d := Decide(t0, r, Input{Workload: w, Observations: measured, State: st})
			got := strings.Join(d.Warnings, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("warnings %q, want none", got)
			case tc.want != "" && (!strings.Contains(got, tc.want) || !strings.Contains(got, "at least 80s")):
				t.Errorf("warnings %q, want one containing %q and the advice", got, tc.want)
			}
		})
	}
}

// The loop records the warning as a GracePeriodTooShort event once per grace period, not
// once per cycle, and again when the grace period changes.
func TestGracePeriodEvent(t *testing.T) {
	grace := int64(30)
	st := state(10, "medium", 5, 2)
	st.TerminationGracePeriodSeconds = &grace
	l, fc, now := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 10, rules.ActiveJobs: 40, rules.Throughput: 0.5}), st)
	count := func() int { return strings.Count(strings.Join(fc.events, " "), EventGracePeriodTooShort) }
	for range 3 {
		if err := l.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		*now = now.Add(15 * time.Second)
	}
	if n := count(); n != 1 {
		t.Errorf("%d GracePeriodTooShort events over three cycles, want 1", n)
	}
	grace = 45
	if err := l.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("%d GracePeriodTooShort events after the grace period changed, want 2", n)
	}
}
