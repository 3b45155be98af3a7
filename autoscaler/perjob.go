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
	// CPU is cores per running job, smoothed (a half-life of cpuHalfLife).
	CPU float64 `json:"cpu"`
	// Memory is bytes per running job: the highest recent measurement, decaying toward
	// the current one (a half-life of memoryHalfLife), raised at each OOM kill.
	Memory float64 `json:"memory"`
	// Updated is when it was last measured.
	Updated time.Time `json:"updated"`
	// OOMBump is when the memory was last raised for an OOM kill.
	OOMBump time.Time `json:"oomBump,omitzero"`
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
	if steady && okCPU && okMem && okA && active >= 1 && ready > 0 && active >= minBusy*ready*float64(p.conc) {
		cpuJob := cpu * c.CPU.Float() * ready / active
		memJob := mem * c.Memory.Float() * ready / active
		if est == nil {
			est = &JobResources{CPU: cpuJob, Memory: memJob}
		} else {
			dt := p.now.Sub(est.Updated)
			if est.CPU == 0 { // created by an OOM kill, before any measurement
				est.CPU = cpuJob
			}
			est.CPU += (cpuJob - est.CPU) * (1 - halving(dt, cpuHalfLife))
			est.Memory = max(memJob, memJob+(est.Memory-memJob)*halving(dt, memoryHalfLife))
		}
		est.Updated = p.now
	}
	if kills, ok := p.value(rules.OOMKills); ok && kills > 0 {
		window := p.r.Queries.RateWindow.D()
		if est == nil {
			// No measurement yet: a job needs more than a slot's share of the class.
			g, _ := p.concurrencyOf(c)
			est = &JobResources{Memory: c.Memory.Float() / float64(g), Updated: p.now}
		}
		if est.OOMBump.IsZero() || p.now.Sub(est.OOMBump) >= window {
			before := est.Memory
			est.Memory = max(est.Memory*oomBumpRatio, est.Memory+oomBumpMin)
			est.OOMBump = p.now
			p.reasonf("%s OOM kill(s) within %s: a job's memory is taken as %s MiB rather than %s MiB", num(kills), window, num(est.Memory/(1<<20)), num(before/(1<<20)))
		}
	}
	p.hist.PerJob = est
	if est != nil && est.CPU > 0 {
		p.reasonf("a running job uses %s cores and %s MiB (measured over the fleet's running jobs)", num(est.CPU), num(est.Memory/(1<<20)))
	}
}

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
	return p.jobFit(c)
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
	if est == nil {
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
	return max(fit, p.minConcurrency(), 1)
}

// fitConcurrency lowers the concurrency of a workload that stays in its class when its
// jobs do not fit the slots it runs (a rollout, behind the cooldown). It never raises it:
// raising is the 429 recovery's and the alert loop's.
func (p *plan) fitConcurrency() {
	est := p.hist.PerJob
	if est == nil || p.class == nil || p.d.To.Class != p.d.From.Class || *p.w.Env.Concurrency == "" || p.resourcePressure() == "" {
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
