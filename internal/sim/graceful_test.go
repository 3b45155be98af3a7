package sim

import (
	"container/heap"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// startJob starts a job of work seconds at full speed, asking for cpu cores, on pod p.
func (f *fleet) startJob(p *pod, cpu, work float64) int {
	f.jobs = append(f.jobs, job{cpu: cpu, memMi: 100, work: work, left: work, started: f.now})
	j := len(f.jobs) - 1
	p.running = append(p.running, j)
	f.reschedule(p)
	return j
}

// settle handles the fleet's own events until there are none left.
func (f *fleet) settle(t *testing.T) {
	t.Helper()
	for n := 0; len(f.events) > 0; n++ {
		if n > 10_000 {
			t.Fatal("the events never end")
		}
		e := heap.Pop(&f.events).(event)
		f.now = e.t
		if !f.handle(e) {
			t.Fatalf("an event of kind %d the fleet does not handle", e.kind)
		}
	}
}

// scaleTo makes the Deployment's spec n replicas of the same template: a scale-in when
// n is below the pods.
func (f *fleet) scaleTo(n int32) {
	s := f.spec
	s.Replicas = n
	f.apply(s)
}

// A scale-in sends SIGTERM: a job that finishes within the grace period completes; one
// still running when it ends is killed once, its attempt's work is wasted, and it goes
// back to the queue, or fails for good once it has stalled more than BullMQ allows.
func TestGracePeriod(t *testing.T) {
	for _, tc := range []struct {
		name      string
		grace     time.Duration // 0: the default, 30 s
		done      float64       // seconds of the job's work done at SIGTERM
		left      float64       // seconds of work left at SIGTERM
		stalled   int           // times the job had already stalled
		contended bool          // another job takes the CPU the job borrowed, after SIGTERM
		completed int
		killed    int
		fit       int // killed though they fit at the speed their pod was guaranteed
		lent      int // killed that fit only at the speed they ran at SIGTERM, on lent CPU
		wasted    float64
		queued    int
		failed    int
		leftAt    float64 // when the pod is gone
	}{
		{name: "a job that ends within the grace period completes", done: 10, left: 20, completed: 1, leftAt: 30},
		{name: "a job longer than the grace period is killed and re-queued", done: 10, left: 50, killed: 1, wasted: 40, queued: 1, leftAt: 40},
		{name: "a longer grace period lets it finish", grace: time.Minute, done: 10, left: 50, completed: 1, leftAt: 60},
		{name: "no grace period kills at once", grace: -1, done: 10, left: 5, killed: 1, wasted: 10, queued: 1, leftAt: 10},
		{name: "a job that stalled before fails for good", done: 10, left: 50, stalled: 1, killed: 1, wasted: 40, failed: 1, leftAt: 40},
		// It needed 25 s at full speed, which fit, but only with the 2 cores lent above its
		// pod's 2-core request: at the guaranteed half speed it needs 50. The other pod
		// takes them back, and it is killed with 15 s of work done in the grace period.
		// The killed job runs again, from the start, on the other pod, and completes with
		// the other pod's job.
		{name: "a job that fit only on lent CPU and lost it is killed, not as fitting", done: 10, left: 25, contended: true, completed: 2, killed: 1, lent: 1, wasted: 25, leftAt: 40},
		// 14 s of work at the guaranteed half speed is 28 s: it completes, contended or not.
		{name: "a job that fits at the speed its pod is guaranteed completes", done: 10, left: 14, contended: true, completed: 2, leftAt: 38},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := cpuFleet(t, 2, 0)
			f.cfg.TerminationGracePeriod = tc.grace
			if tc.grace == 0 {
				f.cfg.TerminationGracePeriod = 30 * time.Second
			}
			// The ReplicaSet removes the youngest: pod 1. Its job asks for 4 cores, 2 of them
			// lent by the idle pod 0.
			victim, other := f.pods[1], f.pods[0]
			j := f.startJob(victim, 4, tc.done+tc.left)
			f.jobs[j].stalls = tc.stalled
			f.now = tc.done
			f.scaleTo(1)
			if !victim.terminating {
				t.Fatal("the scale-in did not terminate the youngest pod")
			}
			if tc.contended {
				f.startJob(other, 4, 1000)
			} else {
				other.slots = 0 // the re-queued job stays queued, where the test can see it
			}
			f.settle(t)
			if slices.Contains(f.pods, victim) {
				t.Fatal("the terminating pod never left")
			}
			if f.completed != float64(tc.completed) || f.killed != tc.killed || f.killedFit != tc.fit || f.killedFitLent != tc.lent || f.queued() != tc.queued || f.failed != float64(tc.failed) {
				t.Errorf("completed %v, killed %d (%d that fit, %d on lent CPU), queued %d, failed %v; want %d, %d (%d, %d), %d, %d",
					f.completed, f.killed, f.killedFit, f.killedFitLent, f.queued(), f.failed, tc.completed, tc.killed, tc.fit, tc.lent, tc.queued, tc.failed)
			}
			if math.Abs(f.wasted-tc.wasted) > 1e-6 {
				t.Errorf("wasted %v job-seconds, want %v", f.wasted, tc.wasted)
			}
			if f.killedInRollouts != 0 {
				t.Errorf("a scale-in's kills counted as a rollout's: %d", f.killedInRollouts)
			}
			wantHours := tc.leftAt / 3600
			if math.Abs(f.podHours-wantHours) > 1e-9 {
				t.Errorf("the pod left after %v s, want %v s", f.podHours*3600, tc.leftAt)
			}
		})
	}
}

// meanOf is a DeletionCoster whose last decision measured a mean job duration of so
// many seconds.
type meanOf float64

func (m meanOf) MeanJobDuration() float64 { return float64(m) }

// Which pods a scale-in removes: the ReplicaSet's order (not ready first, then the
// youngest) for the HPA and KEDA; for workerscale, which sets pod-deletion costs, the
// pods that are not ready first, then the ready ones as autoscaler.RankPods ranks them
// from the last scrape (the job-seconds their jobs are expected to need past the 30 s
// grace period), so that the scale-in kills what it must least.
func TestScaleInVictims(t *testing.T) {
	type running struct {
		age, left float64 // seconds run at the scale-in, and of work left
		typ       int     // its job type, of SeedJobTypes (0, a 2D render, by default)
	}
	type spec struct {
		created float64
		ready   bool
		jobs    []running
		unseen  bool // no scrape has seen the pod yet
	}
	long := []running{{age: 60, left: 50}}                                        // a 3D render, past the mean
	short := []running{{age: 20, left: 4}, {age: 12, left: 6}, {age: 3, left: 8}} // near their end
	idle := []running(nil)
	for _, tc := range []struct {
		name   string
		pods   []spec
		to     int32
		coster DeletionCoster // nil: the ReplicaSet's order
		byName bool           // the workers export their estimates by job name
		want   []int          // the ids of the pods removed, sorted
		killed int
	}{
		{name: "replicaset: the youngest go, busy or not", pods: []spec{{0, true, idle, false}, {10, true, short, false}, {20, true, idle, false}, {30, true, long, false}},
			to: 2, want: []int{2, 3}, killed: 1},
		{name: "replicaset: not ready first", pods: []spec{{0, true, idle, false}, {10, false, idle, false}, {20, true, short, false}, {30, true, short, false}},
			to: 3, want: []int{1}},
		{name: "workerscale: the idle go first", pods: []spec{{0, true, short, false}, {10, true, idle, false}, {20, true, long, false}, {30, true, idle, false}},
			to: 2, coster: meanOf(24), want: []int{1, 3}},
		// The old rule (fewest running jobs first) removed the pod with the one long render.
		{name: "workerscale: one long job that outlives the grace period is kept, several short ones near their end go", pods: []spec{{0, true, long, false}, {10, true, short, false}},
			to: 1, coster: meanOf(24), want: []int{1}},
		{name: "workerscale: without a mean duration, the oldest job's age stands for its remaining time", pods: []spec{{0, true, short, false}, {10, true, long, false}},
			to: 1, coster: meanOf(0), want: []int{0}},
		{name: "workerscale: a job that has not outlived the mean is expected to need what the mean leaves", pods: []spec{{0, true, []running{{age: 5, left: 5}}, false}, {10, true, []running{{age: 50, left: 5}}, false}},
			to: 1, coster: meanOf(80), want: []int{1}, killed: 0},
		// docs/benchmark.md: by the fleet's mean (24 s) a 3D render 5 s in looks like a
		// short job, and the pod running it idler than one with two jobs; its worker
		// knows a 3D render needs some 75 s.
		{name: "workerscale: by the fleet's mean, a young render looks short", pods: []spec{{0, true, []running{{5, 70, 1}}, false}, {10, true, []running{{3, 6, 0}, {3, 7, 0}}, false}},
			to: 1, coster: meanOf(24), want: []int{0}, killed: 1},
		{name: "workerscale: by its job name's mean, the worker's estimate shows it long", pods: []spec{{0, true, []running{{5, 70, 1}}, false}, {10, true, []running{{3, 6, 0}, {3, 7, 0}}, false}},
			to: 1, coster: meanOf(24), byName: true, want: []int{1}},
		{name: "workerscale: not ready first, whatever the others run", pods: []spec{{0, true, long, false}, {10, false, idle, false}, {20, true, short, false}},
			to: 2, coster: meanOf(24), want: []int{1}},
		{name: "workerscale: a pod no scrape has seen ranks last, as an unmeasured pod does", pods: []spec{{0, true, short, false}, {10, true, idle, true}},
			to: 1, coster: meanOf(24), want: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := cpuFleet(t, int32(len(tc.pods)), 0)
			f.coster = tc.coster
			f.cfg.NoJobNameEstimates = !tc.byName
			f.now = 100
			for i, s := range tc.pods {
				p := f.pods[i]
				p.created = s.created
				if !s.ready {
					p.readyAt = math.Inf(1)
				}
				for _, r := range s.jobs {
					j := f.startJob(p, 0.1, r.age+r.left)
					f.jobs[j].started, f.jobs[j].left, f.jobs[j].typ = f.now-r.age, r.left, r.typ
				}
				f.reschedule(p)
			}
			newObserver(f.cfg).scrape(f)
			for i, s := range tc.pods {
				f.pods[i].seen = !s.unseen
			}
			f.scaleTo(tc.to)
			var got []int
			for i := range tc.pods {
				if !slices.ContainsFunc(f.pods, func(p *pod) bool { return p.id == i && !p.terminating }) {
					got = append(got, i) // terminating, or gone at once when idle
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("removed pods %v, want %v", got, tc.want)
			}
			f.settle(t)
			if f.killed != tc.killed || f.killedFit != 0 {
				t.Errorf("killed %d jobs (%d that fit), want %d (0)", f.killed, f.killedFit, tc.killed)
			}
		})
	}
}

// The engine sets pod-deletion costs; the baselines cannot.
func TestDeletionCosters(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	for _, tc := range []struct {
		p    Policy
		want bool
	}{
		{NewEngine("workerscale", r, r.Workload("render")), true},
		{NewHPA(HPAConfig{MinReplicas: 1, MaxReplicas: 10, TargetAverageValue: 4}), false},
		{NewKEDA(KEDAConfig{Threshold: 4, MinReplicaCount: 1, MaxReplicaCount: 10}), false},
		{Static{Shape: startMedium(5)}, false},
	} {
		if _, got := tc.p.(DeletionCoster); got != tc.want {
			t.Errorf("%s sets pod-deletion costs: %v, want %v", tc.p.Name(), got, tc.want)
		}
	}
}

// A run of the engine with a grace period shorter than the seed's renders kills some and
// counts their wasted work, and reports the grace period it was given.
func TestKilledJobsAreCounted(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	a, err := Scenario("on-off", time.Hour, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1, TerminationGracePeriod: 10 * time.Second}
	res, err := Run(t.Context(), cfg, NewEngine("workerscale", r, r.Workload("render")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %d (%d that fit, %d on lent CPU), wasted %.0f job-s, failed %d", res.KilledJobs, res.KilledJobsThatFit, res.KilledJobsThatFitOnLentCPU, res.WastedJobSeconds, res.FailedJobs)
	if res.KilledJobs == 0 || res.WastedJobSeconds <= 0 {
		t.Errorf("a 10-second grace period on the render fleet killed %d jobs, wasting %v job-s; want some", res.KilledJobs, res.WastedJobSeconds)
	}
	// A job that fits at the speed its pod is guaranteed always finishes: once the pod got
	// SIGTERM its jobs ask for no more CPU, and the request is always granted.
	if res.KilledJobsThatFit != 0 || res.KilledJobsThatFitOnLentCPU > res.KilledJobs || res.TerminationGracePeriodSeconds != 10 {
		t.Errorf("%d jobs killed that fit, %d that fit on lent CPU, of %d killed, grace period %v s; want 0 that fit",
			res.KilledJobsThatFit, res.KilledJobsThatFitOnLentCPU, res.KilledJobs, res.TerminationGracePeriodSeconds)
	}
}

// A rollout's old pods get SIGTERM too (the ranking of scale-ins does not apply
// to them), and the jobs it kills are counted apart: no policy chose those pods.
func TestRolloutKillsAreCounted(t *testing.T) {
	f := cpuFleet(t, 1, 0)
	f.coster = meanOf(24)
	old := f.pods[0]
	f.startJob(old, 1, 1000)
	s := f.spec
	s.Class = "large"
	f.apply(s)
	if f.rollouts != 1 {
		t.Fatalf("%d rollouts, want 1", f.rollouts)
	}
	f.settle(t) // the new pod is ready after the start-up delay; then the old one goes
	if slices.Contains(f.pods, old) || f.killed != 1 || f.killedInRollouts != 1 {
		t.Errorf("old pod still there: %v; killed %d, %d of them in rollouts; want 1, 1", slices.Contains(f.pods, old), f.killed, f.killedInRollouts)
	}
	if want := 30.0 + 30; math.Abs(f.wasted-want) > 1e-6 {
		t.Errorf("wasted %v job-seconds, want %v (start-up delay, then the grace period)", f.wasted, want)
	}
}

// The mean job duration the simulator ranks pods with is the one the engine measures:
// the number its drain sizing states (Little's law over the rate window), cycle by cycle
// as the active jobs change; none without a throughput.
func TestMeanJobDurationIsTheEngines(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	w := r.Workload("render")
	w.Horizontal.Sizing = rules.SizingDrain
	said := regexp.MustCompile(`a mean job duration of ([0-9.]+)s \(`)
	st := autoscaler.State{Shape: startMedium(5), ReadyReplicas: 5}
	var hist autoscaler.History
	for i, tc := range []struct {
		active, throughput float64
		want               float64 // 0: none
	}{
		{active: 20, throughput: 1, want: 20},
		{active: 10, throughput: 1, want: 15},
		{active: 30, throughput: 2, want: 10},
		{active: 30, throughput: 0, want: 0},
	} {
		now := Epoch().Add(time.Duration(i) * r.Interval.D())
		obs := autoscaler.Observations{rules.QueueDepth: autoscaler.Value(3), rules.ActiveJobs: autoscaler.Value(tc.active)}
		if tc.throughput > 0 {
			obs[rules.Throughput] = autoscaler.Value(tc.throughput)
		}
		d := autoscaler.Decide(now, r, autoscaler.Input{Workload: w, Observations: obs, State: st, History: hist})
		hist = d.History
		got := meanJobDuration(d)
		if math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("cycle %d: mean job duration %v, want %v", i, got, tc.want)
		}
		if m := said.FindStringSubmatch(strings.Join(d.Reasons, "\n")); m != nil {
			engine, err := strconv.ParseFloat(m[1], 64)
			if err != nil || math.Abs(engine-got) > 1e-3 {
				t.Errorf("cycle %d: the engine states a mean of %s s, the simulator ranks with %v", i, m[1], got)
			}
		} else if tc.want > 0 {
			t.Errorf("cycle %d: the engine states no mean job duration: %q", i, d.Reasons)
		}
	}
}
