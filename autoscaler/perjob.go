package autoscaler

import (
	"fmt"
	"math"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// JobResources is what one running job uses, as measured: the fleet's CPU and memory use
// over the jobs it runs. The vertical axis is decided on it (docs/policy.md, "Vertical").
type JobResources struct {
	// CPU is cores per running job, smoothed (a half-life of cpuHalfLife); 0 until the
	// jobs in flight have been followed for a rate window.
	CPU float64 `json:"cpu"`
	// Memory is bytes per running job: the highest recent measurement, decaying toward
	// the current one (a half-life of memoryHalfLife), raised at each OOM kill.
	Memory float64 `json:"memory"`
	// Updated is when it was last measured.
	Updated time.Time `json:"updated"`
	// OOMBump is when the memory was last raised for an OOM kill.
	OOMBump time.Time `json:"oomBump,omitzero"`
	// ActiveSince is when the jobs in flight began to be followed, at the start or after
	// the last rollout: the CPU query is a rate over the rules' window, so a job's CPU is
	// measured only once a whole window has passed, over the jobs that window saw (the
	// active jobs averaged over it), not the jobs running now (a fleet filling up would
	// read as light jobs).
	ActiveSince time.Time `json:"activeSince,omitzero"`
}

// How the per-job estimate follows its measurements. Memory is kept high longer than CPU:
// too little memory kills the pod, too little CPU only slows it (the VPA's recommender
// weighs them the same way).
const (
	cpuHalfLife    = 5 * time.Minute
	memoryHalfLife = time.Hour
	// minBusy is the share of the slots that must be busy for a measurement: an idle
	// fleet's base memory spread over a few jobs would read as large jobs.
	minBusy = 0.25
	// oomBumpRatio and oomBumpMin raise the memory estimate at an OOM kill, as the VPA does.
	oomBumpRatio = 1.2
	oomBumpMin   = 100 << 20
)

// measureJobs updates the per-job estimate from this cycle's fresh CPU, memory and active
// jobs on the ready pods, and raises the memory estimate when containers were OOM-killed.
func (p *plan) measureJobs() {
	c := p.class
	if c == nil {
		return
	}
	est := p.hist.PerJob
	if est != nil {
		e := *est
		est = &e
	}
	cpu, okCPU := p.value(rules.CPU)
	mem, okMem := p.value(rules.Memory)
	active, okA := p.value(rules.ActiveJobs)
	ready := float64(p.in.State.ReadyReplicas)
	steady := !p.in.State.RolloutInProgress && p.in.State.ReadyReplicas == p.in.State.Replicas // one template, every pod counted
	window := p.r.Queries.RateWindow.D()
	switch {
	case p.in.State.RolloutInProgress:
		if est != nil {
			est.ActiveSince = time.Time{} // the window's CPU is of other pods: start again
		}
	case okA:
		if est == nil {
			est = &JobResources{}
		}
		if est.ActiveSince.IsZero() {
			est.ActiveSince = p.now
		}
	}
	if steady && okMem && okA && active >= 1 && ready > 0 && active >= minBusy*ready*float64(p.conc) {
		memJob := mem * c.Memory.Float() * ready / active
		if est.Memory == 0 {
			est.Memory = memJob
		} else {
			est.Memory = max(memJob, memJob+(est.Memory-memJob)*halving(p.now.Sub(est.Updated), memoryHalfLife))
		}
		if okCPU && !est.ActiveSince.IsZero() && p.now.Sub(est.ActiveSince) >= window && p.meanActive >= minBusy*ready*float64(p.conc) {
			cpuJob := cpu * c.CPU.Float() * ready / p.meanActive
			if est.CPU == 0 {
				est.CPU = cpuJob
			} else {
				est.CPU += (cpuJob - est.CPU) * (1 - halving(p.now.Sub(est.Updated), cpuHalfLife))
			}
		}
		est.Updated = p.now
	}
	if kills, ok := p.value(rules.OOMKills); ok && kills > 0 {
		if est == nil {
			est = &JobResources{Updated: p.now}
		}
		if est.Memory == 0 {
			// No measurement yet: a job needs more than a slot's share of the class.
			g, _ := p.concurrencyOf(c)
			est.Memory = c.Memory.Float() / float64(g)
		}
		if est.OOMBump.IsZero() || p.now.Sub(est.OOMBump) >= window {
			before := est.Memory
			est.Memory = max(est.Memory*oomBumpRatio, est.Memory+oomBumpMin)
			est.OOMBump = p.now
			p.reasonf("%s OOM kill(s) within %s: a job's memory is taken as %s MiB rather than %s MiB", num(kills), window, num(est.Memory/(1<<20)), num(before/(1<<20)))
		}
	}
	if est != nil && est.Memory == 0 && est.CPU == 0 && est.OOMBump.IsZero() && est.ActiveSince.IsZero() {
		est = nil
	}
	p.hist.PerJob = est
	switch {
	case est != nil && est.CPU > 0:
		p.reasonf("a running job uses %s cores and %s MiB (measured over the fleet's running jobs)", num(est.CPU), num(est.Memory/(1<<20)))
	case est != nil && est.Memory > 0:
		p.reasonf("a running job uses %s MiB (measured over the fleet's running jobs; its CPU once they have been followed for %s)", num(est.Memory/(1<<20)), window)
	}
}

// measured reports whether a job's CPU or memory has been measured (or inferred from an
// OOM kill); nil is not.
func (e *JobResources) measured() bool { return e != nil && (e.CPU > 0 || e.Memory > 0) }

// settled reports whether a job's CPU has been measured over a whole rate window.
func (e *JobResources) settled() bool { return e != nil && e.CPU > 0 }

// halving is the weight left after dt with the given half-life.
func halving(dt, halfLife time.Duration) float64 {
	if dt <= 0 {
		return 1
	}
	return math.Pow(0.5, dt.Seconds()/halfLife.Seconds())
}

// slotsOf is the concurrency a workload should run in class c: the class's (or the
// workload's), but no more slots than fit a job's measured CPU and memory within the
// class's requests at the thresholds' targets, so that a job that needs more than its slot
// gets fewer slots per pod rather than the same ratio in a bigger box. CPU is fitted at
// the planned occupancy (horizontal.utilization of the slots busy: CPU only slows a job),
// memory with every slot busy (memory kills the pod). The current class keeps its
// concurrency until its pods are under pressure (resourcePressure).
func (p *plan) slotsOf(c *rules.Class) int {
	if c == p.class && p.resourcePressure() == "" {
		g, _ := p.concurrencyOf(c)
		return g
	}
	g := p.jobFit(c)
	if _, pending := p.measuring(); pending && c != p.class && p.class != nil {
		// A job is not measured yet: another class gives a slot no less CPU and memory
		// (limits) than a slot has now, rather than packing unknown jobs tighter.
		perCPU := cpuLimit(p.class) / float64(p.conc)
		perMem := memLimit(p.class) / float64(p.conc)
		g = max(min(g, int(cpuLimit(c)/perCPU+1e-9), int(memLimit(c)/perMem+1e-9)), p.minConcurrency(), 1)
	}
	return g
}

// jobFit is the most slots of class c that a measured job fits (the class's concurrency
// while no job is measured), which no raise of concurrency goes past.
func (p *plan) jobFit(c *rules.Class) int {
	g, _ := p.concurrencyOf(c)
	return p.fitFrom(c, g)
}

// fitFrom is g, or fewer slots where a measured job needs more of class c.
func (p *plan) fitFrom(c *rules.Class, g int) int {
	est := p.hist.PerJob
	if !est.measured() {
		return g
	}
	fit := g
	// The thresholds grade use against the requests, so the slots fit the requests.
	cpuReq, memReq := c.CPU.Float(), c.Memory.Float()
	if t := p.w.Thresholds[rules.CPU].Target; est.CPU > 0 && t != nil {
		fit = min(fit, int(cpuReq**t/(est.CPU**p.w.Horizontal.Utilization)))
	}
	if t := p.w.Thresholds[rules.Memory].Target; est.Memory > 0 && t != nil {
		fit = min(fit, int(memReq**t/est.Memory))
	}
	if est.Memory > 0 {
		fit = min(fit, memoryLimitFit(memLimit(c)/est.Memory))
	}
	return max(fit, p.minConcurrency(), 1)
}

// memoryLimitFit is the most slots g whose jobs stay under the memory limit though they
// vary: the limit is r times a job's mean memory, and g jobs use g x mean, give or take
// sqrt(g) x their spread, which is taken as half the mean (the first seed's job types
// range from 100 MB to 2 GB), two spreads above the mean (about one pod in forty full
// of jobs would pass it, the rest never). g + sqrt(g) <= r.
func memoryLimitFit(r float64) int {
	if r <= 0 {
		return 0
	}
	// The positive root of x^2 + x - r = 0 is sqrt(g).
	x := (-1 + math.Sqrt(1+4*r)) / 2
	return int(x*x + 1e-9)
}

// cpuLimit is a class's CPU limit in cores: its request when it sets none.
func cpuLimit(c *rules.Class) float64 {
	if c.Limits != nil && c.Limits.CPU != nil {
		return c.Limits.CPU.Float()
	}
	return c.CPU.Float()
}

// memLimit is a class's memory limit in bytes: its request when it sets none.
func memLimit(c *rules.Class) float64 {
	if c.Limits != nil && c.Limits.Memory != nil {
		return c.Limits.Memory.Float()
	}
	return c.Memory.Float()
}

// fitConcurrency lowers the concurrency of a workload that stays in its class when its
// jobs do not fit the slots it runs (a rollout, behind the cooldown). It never raises it:
// raising is the 429 recovery's and the alert loop's.
func (p *plan) fitConcurrency() {
	est := p.hist.PerJob
	if !est.measured() || p.class == nil || p.d.To.Class != p.d.From.Class || *p.w.Env.Concurrency == "" || !p.templateOurs() || p.resourcePressure() == "" {
		return
	}
	fit := p.fitFrom(p.class, p.d.To.Concurrency)
	g := p.d.To.Concurrency
	if g <= fit {
		return
	}
	why := fmt.Sprintf("%s, and a job uses %s cores and %s MiB: %d slots fit class %s within its requests at the CPU and memory targets; lowering concurrency from %d to %d",
		p.resourcePressure(), num(est.CPU), num(est.Memory/(1<<20)), fit, p.class.Name, g, fit)
	if !p.rolloutAllowed(why) {
		return
	}
	p.d.To.Concurrency = fit
	p.d.To.TenantConcurrency = max(1, min(p.d.To.TenantConcurrency, fit))
	p.unmanagedEnv()
	// The same slots take more pods: keep the requirement.
	if p.hasNeed {
		p.d.To.Replicas = max(p.d.To.Replicas, ceilInt(p.need/float64(fit)))
	}
}

// resourcePressure says why the pods are short of CPU or memory: CPU at or above warning
// for sustainFor (the seed's "consistently"), memory at or above warning, or an OOM kill
// within the rate window; "" when they are not.
func (p *plan) resourcePressure() string {
	if est := p.hist.PerJob; est != nil && !est.OOMBump.IsZero() && p.now.Sub(est.OOMBump) < p.r.Queries.RateWindow.D() {
		return "containers were OOM-killed"
	}
	if p.grade(rules.Memory) == Warning || p.grade(rules.Memory) == Critical {
		return "memory is " + string(p.grade(rules.Memory))
	}
	if est := p.hist.PerJob; est.settled() && est.Memory > 0 && p.class != nil {
		if fit := memoryLimitFit(memLimit(p.class) / est.Memory); p.conc > fit {
			return fmt.Sprintf("a pod full of %s MiB jobs would pass its %s MiB memory limit (%d slots fit it)", num(est.Memory/(1<<20)), num(memLimit(p.class)/(1<<20)), max(fit, 1))
		}
	}
	if ok, held := p.sustained(condCPUHigh); ok {
		return fmt.Sprintf("CPU has been at or above warning for %s", held)
	}
	return ""
}

// jobFitMax is the most concurrency the current class's measured jobs fit, up to the
// workload's concurrency.max: the alert loop's raise stops there.
func (p *plan) jobFitMax() int {
	if p.class == nil || p.w.Concurrency.Max == nil {
		return math.MaxInt
	}
	return p.fitFrom(p.class, *p.w.Concurrency.Max)
}
