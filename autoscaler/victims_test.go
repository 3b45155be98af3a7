package autoscaler

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

func f(v float64) *float64 { return &v }

// RankPods puts first the pods whose removal would cost the least: what their jobs need
// beyond the grace period, then all they need, then their jobs, their CPU, their names.
func TestRankPods(t *testing.T) {
	for _, tc := range []struct {
		name            string
		loads           PodLoads
		unmeasured      []string // pods with no per-pod value
		grace, duration float64
		want            []string // idlest first
	}{
		{
			name:  "idle before busy, by running jobs",
			loads: PodLoads{"a": {ActiveJobs: f(3)}, "b": {ActiveJobs: f(0)}, "c": {ActiveJobs: f(1)}},
			grace: 30, duration: 20,
			want: []string{"b", "c", "a"},
		},
		{
			// docs/benchmark.md: a pod with one long render looks idler by its count than a
			// pod with several short jobs, which would all finish within the grace period.
			name: "one long render is busier than several short jobs",
			loads: PodLoads{
				"render": {ActiveJobs: f(1), OldestJobAge: f(60)},
				"short":  {ActiveJobs: f(4), OldestJobAge: f(3)},
				"idle":   {ActiveJobs: f(0)},
			},
			grace: 30, duration: 20,
			want: []string{"idle", "short", "render"},
		},
		{
			name: "of jobs that all fit the grace period, less work left goes first",
			loads: PodLoads{
				"older": {ActiveJobs: f(1), OldestJobAge: f(25)}, // outlived the mean: ~25s left
				"young": {ActiveJobs: f(1), OldestJobAge: f(2)},  // ~18s left
			},
			grace: 30, duration: 20,
			want: []string{"young", "older"},
		},
		{
			name:  "without the mean duration, the oldest job's age",
			loads: PodLoads{"a": {ActiveJobs: f(1), OldestJobAge: f(90)}, "b": {ActiveJobs: f(2), OldestJobAge: f(10)}},
			grace: 30,
			want:  []string{"b", "a"},
		},
		{
			// docs/benchmark.md: by the fleet's mean (20 s), a young render looks like a
			// short job; by its name's mean, the worker knows it needs ~70 s more.
			name: "the worker's estimate by job name shows a young render is long",
			loads: PodLoads{
				"render": {ActiveJobs: f(1), OldestJobAge: f(5), JobsRemaining: f(70), LastJobRemaining: f(70)},
				"short":  {ActiveJobs: f(3), OldestJobAge: f(15), JobsRemaining: f(24), LastJobRemaining: f(12)},
				"older":  {ActiveJobs: f(1), OldestJobAge: f(40)}, // no estimate: by the mean, ~40s
			},
			grace: 30, duration: 20,
			want: []string{"short", "older", "render"},
		},
		{
			name: "the last job's end splits the sum: one long job is busier than even shares",
			loads: PodLoads{
				"even":   {ActiveJobs: f(2), JobsRemaining: f(80), LastJobRemaining: f(40)}, // 10s + 10s beyond
				"skewed": {ActiveJobs: f(2), JobsRemaining: f(70), LastJobRemaining: f(65)}, // 35s beyond
			},
			grace: 30,
			want:  []string{"even", "skewed"},
		},
		{
			name: "without the last end, the sum shared evenly",
			loads: PodLoads{
				"a": {ActiveJobs: f(2), JobsRemaining: f(100)}, // 2 x 20s beyond
				"b": {ActiveJobs: f(4), JobsRemaining: f(100)}, // all within
			},
			grace: 30, duration: 20,
			want: []string{"b", "a"},
		},
		{
			name: "a last end that has passed, or a sum read before it, counts as read",
			loads: PodLoads{
				"late":  {ActiveJobs: f(1), JobsRemaining: f(0), LastJobRemaining: f(45)}, // 15s beyond
				"early": {ActiveJobs: f(1), JobsRemaining: f(10), LastJobRemaining: f(0)},
			},
			grace: 30,
			want:  []string{"early", "late"},
		},
		{
			name:  "CPU alone where no job count is exported",
			loads: PodLoads{"a": {CPU: f(0.9)}, "b": {CPU: f(0.05)}, "c": {CPU: f(0.4)}},
			grace: 30, duration: 20,
			want: []string{"b", "c", "a"},
		},
		{
			name:  "a pod with no value ranks last: it may be busy",
			loads: PodLoads{"a": {ActiveJobs: f(2)}, "c": {ActiveJobs: f(5)}}, unmeasured: []string{"b"},
			grace: 30, duration: 20,
			want: []string{"a", "c", "b"},
		},
		{
			name:  "ties by name, for a deterministic choice",
			loads: PodLoads{"c": {ActiveJobs: f(0)}, "a": {ActiveJobs: f(0)}, "b": {ActiveJobs: f(0)}},
			grace: 30, duration: 20,
			want: []string{"a", "b", "c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pods := append(slices.Sorted(maps.Keys(tc.loads)), tc.unmeasured...)
			var got []string
			for _, r := range RankPods(pods, tc.loads, tc.grace, tc.duration) {
				got = append(got, r.Pod)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ranked %v, want %v", got, tc.want)
			}
		})
	}
}

// podsOf makes n ready pods of one ReplicaSet, p0 ... p(n-1).
func podsOf(n int) []Pod {
	out := make([]Pod, n)
	for i := range out {
		out[i] = Pod{Name: fmt.Sprintf("p%d", i), Ready: true, Group: "rs-1", Ordinal: -1}
	}
	return out
}

// scaleIn is a decision input whose fleet of 6 medium workers is scaled in to 2: 6 jobs
// of 20 s running, none queued, the scale-down window long past.
func scaleIn(t *testing.T, extra string, pods []Pod, loads PodLoads) (Input, *rules.Rules) {
	t.Helper()
	r, w := single(t, "vertical: {enabled: false}\n"+extra)
	st := state(6, "medium", 5, 2)
	grace := int64(30)
	st.TerminationGracePeriodSeconds = &grace
	st.Pods = pods
	hist := History{Recommendations: []Recommendation{{Time: t0.Add(-time.Hour), Replicas: 6}}}
	obs := fresh(map[string]float64{rules.QueueDepth: 0, rules.ActiveJobs: 6, rules.Throughput: 0.3})
	return Input{Workload: w, Observations: obs, State: st, History: hist, PodLoads: loads}, r
}

func TestScaleInChoosesTheIdlestPods(t *testing.T) {
	busy := PodLoads{
		"p0": {ActiveJobs: f(1), OldestJobAge: f(50)},
		"p1": {ActiveJobs: f(0)}, "p2": {ActiveJobs: f(0)}, "p3": {ActiveJobs: f(0)},
		"p4": {ActiveJobs: f(1), OldestJobAge: f(40)},
		"p5": {ActiveJobs: f(0)},
	}
	for _, tc := range []struct {
		name       string
		extra      string
		pods       []Pod
		loads      PodLoads
		wantPods   []string // nil: no victims
		wantCost   int32
		wantUnmark []string
		wantReason string
	}{
		{
			name: "the idle pods go, the busy stay", pods: podsOf(6), loads: busy,
			wantPods: []string{"p1", "p2", "p3", "p5"}, wantCost: -1,
			wantReason: "removing pods p1 (idle), p2 (idle), p3 (idle), p5 (idle): the idlest by",
		},
		{
			name: "no per-pod series: the ReplicaSet's order, and the reasons say so", pods: podsOf(6),
			wantReason: "no per-pod busy-ness",
		},
		{
			name: "the not-ready pods go first whatever their cost",
			pods: func() []Pod {
				p := podsOf(6)
				for i := range p {
					p[i].Ready = i >= 4
				}
				return p
			}(), loads: busy,
			wantReason: "the scale-in removes 4 of the pods that are not ready (p0, p1, p2, p3)",
		},
		{
			name: "a rollout's two ReplicaSets: the Deployment controller's choice",
			pods: func() []Pod { p := podsOf(6); p[0].Group = "rs-0"; return p }(), loads: busy,
			wantReason: "the pods belong to 2 ReplicaSets",
		},
		{
			name: "below a cost someone else set, and a stale cost of ours comes off",
			pods: func() []Pod {
				p := podsOf(6)
				p[0].DeletionCost = -10                     // the user's
				p[4].DeletionCost, p[4].CostOurs = -3, true // ours, from an earlier scale-in
				return p
			}(), loads: busy,
			wantPods: []string{"p1", "p2", "p3", "p5"}, wantCost: -11, wantUnmark: []string{"p4"},
		},
		{
			name:  "a StatefulSet removes its highest ordinals, which the reasons say",
			extra: "target: {kind: StatefulSet}",
			pods: func() []Pod {
				p := podsOf(6)
				for i := range p {
					p[i].Ordinal, p[i].Group = i, ""
				}
				return p
			}(), loads: busy,
			wantReason: "a StatefulSet's scale-in removes its highest ordinals (p5, p4, p3, p2)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, r := scaleIn(t, tc.extra, tc.pods, tc.loads)
			d := Decide(t0, r, in)
			if d.To.Replicas != 2 {
				t.Fatalf("to %d replicas, want 2 (a scale-in of 4)\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
			}
			var gotPods, gotUnmark []string
			var gotCost int32
			if v := d.Victims; v != nil {
				gotPods, gotUnmark, gotCost = v.Pods, v.Unmark, v.Cost
			}
			if !slices.Equal(gotPods, tc.wantPods) || gotCost != tc.wantCost || !slices.Equal(gotUnmark, tc.wantUnmark) {
				t.Errorf("victims %v at cost %d, unmark %v; want %v at %d, unmark %v\n%s", gotPods, gotCost, gotUnmark, tc.wantPods, tc.wantCost, tc.wantUnmark, strings.Join(d.Reasons, "\n"))
			}
			if tc.wantReason != "" && !hasReason(d, tc.wantReason) {
				t.Errorf("no reason contains %q:\n%s", tc.wantReason, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

// A StatefulSet with busyOrdinals: hold scales in only down to its highest busy ordinal.
func TestBusyOrdinalsHold(t *testing.T) {
	pods := podsOf(6)
	for i := range pods {
		pods[i].Ordinal, pods[i].Group = i, ""
	}
	loads := PodLoads{"p0": {ActiveJobs: f(1)}, "p1": {ActiveJobs: f(0)}, "p2": {ActiveJobs: f(0)},
		"p3": {ActiveJobs: f(1), OldestJobAge: f(70)},                          // a long job: past the grace period
		"p4": {ActiveJobs: f(0)}, "p5": {ActiveJobs: f(1), OldestJobAge: f(1)}, // a short one: fits
	}
	for _, tc := range []struct {
		mode string
		want int32
	}{{rules.BusyOrdinalsRemove, 2}, {rules.BusyOrdinalsHold, 4}} {
		t.Run(tc.mode, func(t *testing.T) {
			in, r := scaleIn(t, "target: {kind: StatefulSet}\nhorizontal: {busyOrdinals: "+tc.mode+", jobDuration: 20s}", pods, loads)
			d := Decide(t0, r, in)
			if d.To.Replicas != tc.want {
				t.Fatalf("to %d replicas, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
			held := slices.Contains(d.LimitedBy, LimitBusyOrdinals)
			if held != (tc.mode == rules.BusyOrdinalsHold) || held && !hasReason(d, "p3 (1 job, the oldest running for 70s") {
				t.Errorf("limited by %v\n%s", d.LimitedBy, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

// Jobs finishing on Terminating pods do not hold capacity: the jobs-in-flight floor counts
// the jobs of the pods that stay.
func TestTerminatingPodsAreCapacityLeaving(t *testing.T) {
	pods := podsOf(8)
	pods[6].Terminating, pods[7].Terminating = true, true
	loads := PodLoads{"p6": {ActiveJobs: f(10)}, "p7": {ActiveJobs: f(10)}}
	for i := range 6 {
		loads[fmt.Sprintf("p%d", i)] = PodLoad{ActiveJobs: f(0.5)}
	}
	for _, tc := range []struct {
		name  string
		pods  []Pod
		loads PodLoads
		want  int32
	}{
		// 23 jobs at concurrency 5 hold 5 of the 6 replicas.
		{"not known which pods run them", nil, nil, 5},
		// 20 of them finish on Terminating pods: 3 jobs stay; the sizing (about 3.6 jobs
		// in flight over the window) decides.
		{"20 of them on Terminating pods", pods, loads, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, r := scaleIn(t, "", tc.pods, tc.loads)
			// 3 jobs in flight over the last 5 minutes, 23 now (20 of them on the pods a
			// scale-in just removed, which finish their jobs within the grace period).
			for s := 300; s > 0; s -= 10 {
				in.History.ActiveJobs = append(in.History.ActiveJobs, SampleAt(t0.Add(-time.Duration(s)*time.Second), 3))
			}
			in.Observations[rules.ActiveJobs] = Value(23)
			in.Observations[rules.Throughput] = Value(1)
			d := Decide(t0, r, in)
			if d.To.Replicas != tc.want {
				t.Fatalf("to %d replicas, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
			if held := slices.Contains(d.LimitedBy, LimitJobsInFlight); held != (tc.pods == nil) {
				t.Errorf("limited by %v\n%s", d.LimitedBy, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}

// After the scale-in, the costs workerscale set come off; while it is not done (more pods
// than replicas), they stay.
func TestStaleCostsComeOffOnceTheScaleInIsDone(t *testing.T) {
	for _, tc := range []struct {
		name string
		pods int
		want []string
	}{{"done", 2, []string{"p1"}}, {"not done", 3, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := single(t, "vertical: {enabled: false}")
			st := state(2, "medium", 5, 2)
			st.Pods = podsOf(tc.pods)
			st.Pods[1].DeletionCost, st.Pods[1].CostOurs = -1, true
			d := Decide(t0, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 5, rules.ActiveJobs: 8, rules.Throughput: 1}), State: st})
			var got []string
			if d.Victims != nil {
				got = d.Victims.Unmark
			}
			if d.To.Replicas < d.From.Replicas || !slices.Equal(got, tc.want) {
				t.Errorf("from %d to %d, unmark %v, want %v", d.From.Replicas, d.To.Replicas, got, tc.want)
			}
		})
	}
}

// markingCluster is a fakeCluster that records the pod writes the loop asks for.
type markingCluster struct {
	*fakeCluster
	marked []*Victims
}

func (m *markingCluster) MarkVictims(_ context.Context, _ *rules.Workload, v *Victims) error {
	m.marked = append(m.marked, v)
	return nil
}

// The loop hands the per-pod loads to the engine, and takes stale costs off through the
// cluster when the decision writes nothing else; in dry-run it writes none.
func TestLoopTakesStaleCostsOff(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		t.Run(fmt.Sprintf("dry-run %v", dryRun), func(t *testing.T) {
			st := state(2, "medium", 5, 2)
			st.Pods = podsOf(2)
			st.Pods[0].DeletionCost, st.Pods[0].CostOurs = -1, true
			l, fc, _ := newLoop(t, fresh(map[string]float64{rules.QueueDepth: 5, rules.ActiveJobs: 4, rules.Throughput: 1}), st)
			mc := &markingCluster{fakeCluster: fc}
			l.Cluster, l.DryRun = mc, dryRun
			loads := 0
			l.PodLoads = func() map[string]PodLoads { loads++; return map[string]PodLoads{"render": {"p0": {ActiveJobs: f(1)}}} }
			if err := l.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := 1
			if dryRun {
				want = 0
			}
			if len(fc.applied) != 0 || len(mc.marked) != want || loads != 1 {
				t.Fatalf("applied %+v, marked %+v (want %d), loads read %d times", fc.applied, mc.marked, want, loads)
			}
			if want == 1 && !slices.Equal(mc.marked[0].Unmark, []string{"p0"}) {
				t.Errorf("unmark %v, want p0", mc.marked[0].Unmark)
			}
		})
	}
}
