package sim

import (
	"container/heap"
	"math"
	"slices"
	"testing"
	"time"
)

// startJob starts a job of work seconds at full speed, asking for cpu cores, on pod p.
func (f *fleet) startJob(p *pod, cpu, work float64) int {
	f.jobs = append(f.jobs, job{cpu: cpu, memMi: 100, work: work, left: work})
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
		fit       int
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
		// It needed 25 s at full speed, which fit; at half speed from SIGTERM on it needs
		// 50, and is killed with 15 s of work done in the grace period.
		// The killed job runs again, from the start, on the other pod, and completes with
		// the other pod's job.
		{name: "a job that fit at SIGTERM and slowed down is killed as fitting", done: 10, left: 25, contended: true, completed: 2, killed: 1, fit: 1, wasted: 25, leftAt: 40},
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
			if f.completed != float64(tc.completed) || f.killed != tc.killed || f.killedFit != tc.fit || f.queued() != tc.queued || f.failed != float64(tc.failed) {
				t.Errorf("completed %v, killed %d (%d that fit), queued %d, failed %v; want %d, %d (%d), %d, %d",
					f.completed, f.killed, f.killedFit, f.queued(), f.failed, tc.completed, tc.killed, tc.fit, tc.queued, tc.failed)
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

// Which pods a scale-in removes: the ReplicaSet's order (not ready first, then the
// youngest) for the HPA and KEDA, the idlest first (fewest jobs at the last scrape, then
// the ReplicaSet's order) for workerscale, which sets pod-deletion costs.
func TestScaleInVictims(t *testing.T) {
	type spec struct {
		created float64
		busy    int
		ready   bool
	}
	for _, tc := range []struct {
		name        string
		pods        []spec
		to          int32
		idlestFirst bool
		want        []int // the ids of the pods removed, sorted
	}{
		{"replicaset: the youngest go, busy or not", []spec{{0, 0, true}, {10, 3, true}, {20, 1, true}, {30, 2, true}}, 2, false, []int{2, 3}},
		{"workerscale: the idlest go", []spec{{0, 0, true}, {10, 3, true}, {20, 1, true}, {30, 2, true}}, 2, true, []int{0, 2}},
		{"workerscale: equally idle, the youngest go", []spec{{0, 1, true}, {10, 1, true}, {20, 3, true}, {30, 1, true}}, 2, true, []int{1, 3}},
		{"replicaset: not ready first", []spec{{0, 0, true}, {10, 0, false}, {20, 2, true}, {30, 2, true}}, 3, false, []int{1}},
		{"workerscale: not ready and idle first", []spec{{0, 0, true}, {10, 0, false}, {20, 2, true}, {30, 2, true}}, 3, true, []int{1}},
		{"workerscale: ties of creation go by the newest id", []spec{{0, 1, true}, {0, 1, true}, {0, 1, true}}, 1, true, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := cpuFleet(t, int32(len(tc.pods)), 0)
			f.idlestFirst = tc.idlestFirst
			f.now = 100
			for i, s := range tc.pods {
				p := f.pods[i]
				p.created = s.created
				if !s.ready {
					p.readyAt = math.Inf(1)
				}
				for range s.busy {
					f.startJob(p, 0.1, 1000)
				}
			}
			newObserver(f.cfg).scrape(f)
			f.scaleTo(tc.to)
			var got []int
			for _, p := range f.pods {
				if p.terminating {
					got = append(got, p.id)
				}
			}
			// Idle pods leave at once; count them among the removed.
			for i := range tc.pods {
				if !slices.ContainsFunc(f.pods, func(p *pod) bool { return p.id == i }) {
					got = append(got, i)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("removed pods %v, want %v", got, tc.want)
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
		c, ok := tc.p.(DeletionCoster)
		if got := ok && c.RemovesIdlestFirst(); got != tc.want {
			t.Errorf("%s removes the idlest pods first: %v, want %v", tc.p.Name(), got, tc.want)
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
	t.Logf("killed %d (%d that fit), wasted %.0f job-s, failed %d", res.KilledJobs, res.KilledJobsThatFit, res.WastedJobSeconds, res.FailedJobs)
	if res.KilledJobs == 0 || res.WastedJobSeconds <= 0 {
		t.Errorf("a 10-second grace period on the render fleet killed %d jobs, wasting %v job-s; want some", res.KilledJobs, res.WastedJobSeconds)
	}
	if res.KilledJobsThatFit > res.KilledJobs || res.TerminationGracePeriodSeconds != 10 {
		t.Errorf("%d jobs killed that fit of %d killed, grace period %v s", res.KilledJobsThatFit, res.KilledJobs, res.TerminationGracePeriodSeconds)
	}
}

// A rollout's old pods get SIGTERM too (the idlest-first order of scale-ins does not apply
// to them), and the jobs it kills are counted apart: no policy chose those pods.
func TestRolloutKillsAreCounted(t *testing.T) {
	f := cpuFleet(t, 1, 0)
	f.idlestFirst = true
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
