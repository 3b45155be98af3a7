package sim

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// Config is one simulation of one workload.
type Config struct {
	Rules    *rules.Rules
	Workload string
	Arrivals Arrivals
	// Types and Mix are the jobs; empty Types are the seed's job types for a workload with
	// no configured job duration, and a generic job of that duration otherwise.
	Types []JobType
	Mix   Mix
	Seed  uint64
	// Start is every policy's first shape; its zero value is the seed's Medium x 5, and
	// an empty class is Medium (or the workload's first allowed class); within
	// minReplicas and maxReplicas.
	Start autoscaler.Shape
	// StartupDelay is how long a new pod takes before it takes jobs (default 30 s).
	StartupDelay time.Duration
	// ScrapeInterval is Prometheus's (default 15 s).
	ScrapeInterval time.Duration
	// SampleEvery is the resolution of the time series of the result (default 60 s).
	SampleEvery time.Duration
	// BaseMemoryMi is a worker's memory before any job (default 150 MiB).
	BaseMemoryMi float64
	// CPUSlack is the CPU the fleet's nodes have beyond its pods' requests, as a share of
	// them: what pods may borrow above their requests besides what the others leave
	// unused. 0 (the default) is nodes that hold the fleet's requests and nothing more;
	// +Inf makes every limit free.
	CPUSlack float64
	// NoJobNameEstimates makes the workers export no estimate of their running jobs'
	// remaining time by job name (README, "The worker's busy-ness"), only their count and
	// the oldest's start: the ranking of a scale-in's pods then uses the fleet's mean job
	// duration. By default a worker knows each job type's mean duration.
	NoJobNameEstimates bool
	// TerminationGracePeriod is the pods' terminationGracePeriodSeconds: how long a pod
	// that got SIGTERM may finish its running jobs before they are killed (default 30 s,
	// as in Kubernetes; a negative value is none, terminationGracePeriodSeconds: 0).
	TerminationGracePeriod time.Duration
	// Drain lets the run go on past the arrivals until every job has finished (at most
	// as long again), so that every job's wait is counted.
	Drain bool
	// Progress, when set, is told the share of the run done, now and then.
	Progress func(done float64)

	w          *rules.Workload
	startClass *rules.Class
	budget     *rules.RateBudget
	jobs       []job
}

// Epoch is the simulated clock's start.
func Epoch() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// Prepare checks the configuration, fills in the defaults and draws the jobs; Run calls
// it, and a caller running several policies on the same arrivals calls it once.
func (c *Config) Prepare() error {
	if c.jobs != nil {
		return nil
	}
	if c.Rules == nil {
		return fmt.Errorf("no rules")
	}
	c.w = c.Rules.Workload(c.Workload)
	if c.w == nil {
		var names []string
		for _, w := range c.Rules.Workloads {
			names = append(names, w.Name)
		}
		return fmt.Errorf("--workload: no workload %q in the rules (they have %v)", c.Workload, names)
	}
	if len(c.Arrivals.Counts) == 0 {
		return fmt.Errorf("no arrivals")
	}
	c.StartupDelay = orDefault(c.StartupDelay, 30*time.Second)
	c.ScrapeInterval = orDefault(c.ScrapeInterval, 15*time.Second)
	c.SampleEvery = orDefault(c.SampleEvery, time.Minute)
	if c.TerminationGracePeriod == 0 {
		c.TerminationGracePeriod = 30 * time.Second
	}
	if math.IsNaN(c.CPUSlack) || c.CPUSlack < 0 {
		return fmt.Errorf("--cpu-slack: %v is not a share of 0 or more", c.CPUSlack)
	}
	if c.BaseMemoryMi == 0 {
		c.BaseMemoryMi = 150
	}
	if len(c.Types) == 0 {
		if jd := c.w.Horizontal.JobDuration; jd != nil && c.w.RateBudget != "" {
			c.Types = []JobType{GenericJobType(jd.D())}
			c.Mix = Mix{"job": 1}
		} else {
			c.Types = SeedJobTypes()
		}
	}
	if len(c.Mix) == 0 {
		c.Mix = DefaultMix()
	}
	if c.Start == (autoscaler.Shape{}) {
		c.Start.Replicas = 5
	}
	if c.Start.Class == "" {
		c.Start.Class = c.w.Classes[0]
		if slices.Contains(c.w.Classes, "medium") {
			c.Start.Class = "medium"
		}
	}
	c.startClass = c.Rules.Class(c.Start.Class)
	if c.startClass == nil {
		return fmt.Errorf("--class: no class %q in the rules", c.Start.Class)
	}
	if c.Start.Concurrency == 0 {
		c.Start.Concurrency = concurrencyOf(c.w, c.startClass)
	}
	if c.Start.TenantConcurrency == 0 {
		c.Start.TenantConcurrency = min(tenantOf(c.w, c.startClass), c.Start.Concurrency)
	}
	c.Start.Replicas = min(max(c.Start.Replicas, *c.w.MinReplicas), c.w.MaxReplicas)
	if c.w.RateBudget != "" {
		for i := range c.Rules.RateBudgets {
			if c.Rules.RateBudgets[i].Name == c.w.RateBudget {
				c.budget = &c.Rules.RateBudgets[i]
			}
		}
	}
	jobs, err := makeJobs(c.Arrivals, c.Types, c.Mix, c.Seed)
	if err != nil {
		return err
	}
	c.jobs = jobs
	return nil
}

// grace is the pods' grace period in seconds.
func (c *Config) grace() float64 { return max(c.TerminationGracePeriod.Seconds(), 0) }

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Result is how a policy did.
type Result struct {
	Policy            string  `json:"policy"`
	Jobs              int     `json:"jobs"`
	Completed         int     `json:"completed"`
	P50WaitSeconds    float64 `json:"p50WaitSeconds"`
	P95WaitSeconds    float64 `json:"p95WaitSeconds"`
	P99WaitSeconds    float64 `json:"p99WaitSeconds"`
	MeanWaitSeconds   float64 `json:"meanWaitSeconds"`
	OverTargetShare   float64 `json:"overTargetShare"`
	OverCriticalShare float64 `json:"overCriticalShare"`
	Cost              float64 `json:"cost"`
	PodHours          float64 `json:"podHours"`
	Actions           int     `json:"actions"`
	Rollouts          int     `json:"rollouts"`
	RateLimited       int     `json:"rateLimited429s"`
	OOMKills          int     `json:"oomKills"`
	FailedJobs        int     `json:"failedJobs"`
	// KilledJobs are the job attempts still running when their pod's grace period ended
	// (after a scale-in or a rollout); KilledJobsThatFit those of them whose remaining
	// time at SIGTERM fit the grace period at the speed their pod was guaranteed (its CPU
	// request over what its jobs ask for; the CPU above the request is lent, and no grace
	// period promises it), and KilledJobsThatFitOnLentCPU those that fit only at the speed
	// they ran at SIGTERM, lent CPU included, and lost it; WastedJobSeconds the work
	// (job-seconds at full speed) the killed attempts had done, to be done again.
	// KilledJobsInRollouts are the killed jobs whose pod a rollout removed: no policy
	// chooses those pods.
	KilledJobs                    int     `json:"killedJobs"`
	KilledJobsThatFit             int     `json:"killedJobsThatFit"`
	KilledJobsThatFitOnLentCPU    int     `json:"killedJobsThatFitOnLentCPU"`
	KilledJobsInRollouts          int     `json:"killedJobsInRollouts"`
	WastedJobSeconds              float64 `json:"wastedJobSeconds"`
	TerminationGracePeriodSeconds float64 `json:"terminationGracePeriodSeconds"`
	// MeanQueued and MeanInSystem are the time averages of the jobs queued, and queued or
	// running; with ArrivalRate they check Little's law.
	MeanQueued   float64 `json:"meanQueued"`
	MeanInSystem float64 `json:"meanInSystem"`
	ArrivalRate  float64 `json:"arrivalRate"`
	// Seconds is the simulated span: the arrivals, and the drain when asked for.
	Seconds float64 `json:"seconds"`
	// LowerBound marks the oracle: a bound on cost, not a policy anyone can run.
	LowerBound bool   `json:"lowerBound,omitempty"`
	Series     Series `json:"-"`
	// ClassChanges are the class changes the policy made, in order; End is its last shape.
	ClassChanges []ClassChange    `json:"-"`
	End          autoscaler.Shape `json:"-"`
}

// ClassChange is one change of the pod template's class.
type ClassChange struct {
	T        float64 // seconds since the start
	From, To string
}

// Series are a run's values over time, one point per SampleEvery.
type Series struct {
	T          []float64 // seconds since the start
	Arrivals   []float64 // jobs per second over the interval
	Queue      []float64 // jobs queued at the point
	WaitP95    []float64 // p95 wait of the jobs started over the interval
	Slots      []float64 // ready slots
	CostPerHr  []float64 // $ per hour of the pods at the point
	Replicas   []float64
	Concurrent []float64
}

// Run simulates the workload under policy p. It stops early when ctx is done.
func Run(ctx context.Context, cfg *Config, p Policy) (Result, error) {
	if err := cfg.Prepare(); err != nil {
		return Result{}, err
	}
	f := &fleet{cfg: cfg, w: cfg.w, jobs: slices.Clone(cfg.jobs), spec: cfg.Start}
	if c, ok := p.(DeletionCoster); ok {
		f.coster = c
	}
	f.tmpl = f.classTemplate(cfg.Start)
	for range cfg.Start.Replicas {
		f.newPod(0) // a warm start: the first pods are ready
	}
	if b := cfg.budget; b != nil {
		f.tokens = upstreamRate(b)
	}
	end := cfg.Arrivals.Duration().Seconds()
	horizon := end
	if cfg.Drain {
		horizon = 2 * end
	}
	obs := newObserver(cfg)
	f.push(event{t: 0, kind: evScrape})
	f.push(event{t: p.Period().Seconds(), kind: evDecide})
	f.push(event{t: 0, kind: evSample})
	var series Series
	var sampleWaits []float64
	startedBefore := 0
	for steps := 0; ; steps++ {
		if steps%4096 == 0 {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			if cfg.Progress != nil && steps%(1<<16) == 0 {
				cfg.Progress(min(f.now/horizon, 1))
			}
		}
		t := math.Inf(1)
		if f.next < len(f.jobs) {
			t = f.jobs[f.next].arrive
		}
		arrival := true
		if len(f.events) > 0 && f.events[0].t <= t {
			t, arrival = f.events[0].t, false
		}
		if t > horizon || (t > end && (!cfg.Drain || f.finished())) {
			break
		}
		f.now = t
		f.integrate()
		if arrival {
			f.enqueue(f.next)
			f.next++
			f.dispatch()
			continue
		}
		e := heap.Pop(&f.events).(event)
		if f.handle(e) {
			continue
		}
		switch e.kind {
		case evScrape:
			obs.scrape(f)
			f.push(event{t: t + cfg.ScrapeInterval.Seconds(), kind: evScrape})
		case evDecide:
			now := Epoch().Add(time.Duration(t * float64(time.Second)))
			st := f.state()
			f.apply(p.Decide(Snapshot{Now: now, Obs: obs.observe(t), State: st}))
			f.push(event{t: t + p.Period().Seconds(), kind: evDecide})
		case evSample:
			series.add(f, cfg, t, &sampleWaits, &startedBefore)
			f.push(event{t: t + cfg.SampleEvery.Seconds(), kind: evSample})
		}
	}
	f.now = math.Min(f.now, horizon)
	if cfg.Progress != nil {
		cfg.Progress(1)
	}
	for _, p := range f.pods {
		f.account(p)
	}
	return f.result(p.Name(), series), nil
}

// handle handles an event of the fleet's own (a pod ready, jobs done, a retry, a
// dispatch, a grace period's end), and reports whether it was one.
func (f *fleet) handle(e event) bool {
	switch e.kind {
	case evReady:
		if e.pod.readyAt == e.t && slices.Contains(f.pods, e.pod) {
			f.reconcile()
			f.dispatch()
		}
	case evDone:
		if e.version == e.pod.version && slices.Contains(f.pods, e.pod) {
			f.done(e.pod)
			f.dispatch()
		}
	case evRetry:
		f.enqueue(e.job)
		f.dispatch()
	case evDispatch:
		f.dispatch()
	case evKill:
		if slices.Contains(f.pods, e.pod) {
			f.kill(e.pod)
		}
	default:
		return false
	}
	return true
}

// finished reports whether every arrived job has completed or failed for good.
func (f *fleet) finished() bool {
	return f.next == len(f.jobs) && int(f.completed+f.failed) == len(f.jobs)
}

func (s *Series) add(f *fleet, cfg *Config, t float64, waits *[]float64, startedBefore *int) {
	step := cfg.SampleEvery.Seconds()
	from := max(t-step, 0)
	var arrived float64
	for sec := int(from); sec < int(t) && sec < len(cfg.Arrivals.Counts); sec++ {
		arrived += cfg.Arrivals.Counts[sec]
	}
	*waits = append((*waits)[:0], f.waits[*startedBefore:]...)
	*startedBefore = len(f.waits)
	var slots, cost, replicas float64
	for _, p := range f.pods {
		cost += p.cost
		if p.ready(f.now) {
			slots += float64(p.slots)
			replicas++
		}
	}
	s.T = append(s.T, t)
	s.Arrivals = append(s.Arrivals, arrived/max(t-from, 1))
	s.Queue = append(s.Queue, float64(f.queued()))
	s.WaitP95 = append(s.WaitP95, percentile(*waits, 0.95))
	s.Slots = append(s.Slots, slots)
	s.CostPerHr = append(s.CostPerHr, cost)
	s.Replicas = append(s.Replicas, replicas)
	s.Concurrent = append(s.Concurrent, float64(f.active()))
}

func (f *fleet) result(policy string, s Series) Result {
	// Jobs still queued or running at the end count with the wait they have had so far
	// (a lower bound), so a fleet that never serves its backlog cannot look fast.
	waits := slices.Clone(f.waits)
	for _, q := range []*queue{&f.prio, &f.normal} {
		for _, j := range q.items[q.head:] {
			waits = append(waits, f.jobs[j].waited+f.now-f.jobs[j].queuedAt)
		}
	}
	for _, p := range f.pods {
		for _, j := range p.running {
			waits = append(waits, f.jobs[j].waited)
		}
	}
	slices.Sort(waits)
	th := f.w.Thresholds[rules.WaitSeconds]
	var over, overCrit int
	var sum float64
	for _, w := range waits {
		sum += w
		if th.Target != nil && w > *th.Target {
			over++
		}
		if th.Critical != nil && w > *th.Critical {
			overCrit++
		}
	}
	n := float64(max(len(waits), 1))
	secs := max(f.now, 1)
	return Result{
		Policy: policy, Jobs: len(f.jobs), Completed: int(f.completed),
		P50WaitSeconds: sortedPercentile(waits, 0.5), P95WaitSeconds: sortedPercentile(waits, 0.95), P99WaitSeconds: sortedPercentile(waits, 0.99),
		MeanWaitSeconds: sum / n, OverTargetShare: float64(over) / n, OverCriticalShare: float64(overCrit) / n,
		Cost: f.podCost, PodHours: f.podHours, Actions: f.actions, Rollouts: f.rollouts,
		RateLimited: int(f.rejected429), OOMKills: f.oomKills, FailedJobs: int(f.failed),
		KilledJobs: f.killed, KilledJobsThatFit: f.killedFit, KilledJobsThatFitOnLentCPU: f.killedFitLent, KilledJobsInRollouts: f.killedInRollouts, WastedJobSeconds: f.wasted, TerminationGracePeriodSeconds: f.cfg.grace(),
		MeanQueued: f.queueArea / secs, MeanInSystem: f.systemArea / secs, ArrivalRate: float64(len(f.jobs)) / f.cfg.Arrivals.Duration().Seconds(),
		Seconds: secs, Series: s, ClassChanges: f.classChanges, End: f.spec,
	}
}

func percentile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return sortedPercentile(s, q)
}

// sortedPercentile is the nearest-rank percentile of sorted values; 0 for none.
func sortedPercentile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
