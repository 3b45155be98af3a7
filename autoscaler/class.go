package autoscaler

import (
	"fmt"
	"slices"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// maxFor is the most replicas the workload may run in class c.
func (p *plan) maxFor(c *rules.Class) int32 {
	m := p.w.MaxReplicas
	if c != nil && c.MaxReplicas > 0 {
		m = min(m, c.MaxReplicas)
	}
	return m
}

// replicasAt is the replica count that supplies the needed slots in class c, at the
// concurrency its jobs fit (slotsOf).
func (p *plan) replicasAt(c *rules.Class) int32 {
	return max(ceilInt(p.need/float64(p.slotsOf(c))), *p.w.MinReplicas)
}

func (p *plan) costAt(c *rules.Class) float64 {
	return float64(p.replicasAt(c)) * c.CostPerHour
}

// chooseClass applies the vertical rules and returns the class to run in.
func (p *plan) chooseClass() *rules.Class {
	cur := p.class
	if cur == nil {
		if p.in.State.Class != CustomClass {
			p.reasonf("class %q is not in the rules; its resources are left as they are", p.in.State.Class)
		} else {
			p.reasonf("the workload's resources match no class (custom); its class is never changed")
		}
		return nil
	}
	allowed := p.allowedClasses()
	idx := slices.Index(allowed, cur)
	if idx < 0 {
		// Running in a class the workload may not use: move to the nearest allowed one.
		to := allowed[0]
		for _, c := range allowed {
			if c.CPU.Cmp(cur.CPU.Quantity) <= 0 {
				to = c
			}
		}
		return p.gate(to, ruleDisallowed, fmt.Sprintf("class %s is not among the workload's allowed classes; moving to %s", cur.Name, to.Name))
	}
	if !*p.w.Vertical.Enabled || len(allowed) == 1 {
		return cur
	}
	var larger []*rules.Class
	if idx+1 < len(allowed) {
		larger = allowed[idx+1:]
	}
	// 1. Pressure: one class up. Only while a job's resources are not measured: once they
	// are, a job that needs more than its slot is given fewer slots per pod (slotsOf), in
	// this class or the cheapest that fits, which the capacity and cost rules choose.
	for _, cond := range []struct{ name, what string }{
		{condResourceFailures, "jobs are failing while CPU or memory is critical"},
		{condCPUHigh, fmt.Sprintf("CPU at or above %s", num(*p.w.Thresholds[rules.CPU].Warning))},
		{condMemoryHigh, fmt.Sprintf("memory at or above %s", num(*p.w.Thresholds[rules.Memory].Warning))},
	} {
		if p.hist.PerJob.measured() {
			break
		}
		ok, held := p.sustained(cond.name)
		if !ok {
			if held > 0 {
				p.reasonf("%s for %s of the %s that a class step needs", cond.what, held, p.w.Vertical.SustainFor)
			}
			continue
		}
		if len(larger) == 0 {
			p.reasonf("%s for %s, but %s is the largest allowed class", cond.what, held, cur.Name)
			return cur
		}
		return p.gate(larger[0], rulePressure, fmt.Sprintf("%s for %s (sustainFor %s): stepping up from %s to %s", cond.what, held, p.w.Vertical.SustainFor, cur.Name, larger[0].Name))
	}
	if !p.hasNeed {
		return cur
	}
	// 2. Capacity: the required workers exceed what the class may run.
	if need := p.replicasAt(cur); need > p.maxFor(cur) {
		if len(larger) == 0 {
			return cur // the classMax limit explains it
		}
		var fitting []*rules.Class
		for _, c := range larger {
			if p.replicasAt(c) <= p.maxFor(c) {
				fitting = append(fitting, c)
			}
		}
		var to *rules.Class
		if len(fitting) > 0 {
			to = p.cheapest(fitting)
		} else {
			// None holds the work: one step up the seed's path, to the next class that
			// holds more slots than this one (a bigger box with as many slots adds
			// nothing).
			here := p.slotsOf(cur) * int(p.maxFor(cur))
			for _, c := range larger {
				if p.slotsOf(c)*int(p.maxFor(c)) > here {
					to = c
					break
				}
			}
			if to == nil {
				p.reasonf("%d workers are needed but class %s runs at most %d, and no larger class holds more slots at the concurrency its jobs fit", need, cur.Name, p.maxFor(cur))
				return cur
			}
		}
		g := p.slotsOf(to)
		return p.gate(to, ruleCapacity, fmt.Sprintf("%d workers are needed but class %s runs at most %d: stepping up to %s (%d concurrency, at most %d workers)",
			need, cur.Name, p.maxFor(cur), to.Name, g, p.maxFor(to)))
	}
	// 3. Cost: a class that supplies the same capacity for enough less. Never while a
	// replica input is missing: the capacity it would be sized on is not known.
	if len(p.missing) > 0 {
		return cur
	}
	if !p.replicasOurs() {
		p.reasonf("no class change for cost: a class's cost is its price times a replica count, and the replicas are left to %s", p.in.Owners.Horizontal)
		return cur
	}
	candidates := []*rules.Class{}
	for _, c := range larger {
		if p.replicasAt(c) <= p.maxFor(c) {
			candidates = append(candidates, c)
		}
	}
	switch {
	case p.hist.PerJob.measured():
		// Every allowed class that fits a job and the requirement is a candidate: the
		// choice rests on what a job uses, which no class change alters, so the class it
		// leaves would not be chosen back under the same load.
		for _, c := range allowed[:idx] {
			if p.replicasAt(c) <= p.maxFor(c) {
				candidates = append(candidates, c)
			}
		}
	case idx > 0:
		if smaller := allowed[idx-1]; p.canStepDown(cur, smaller) {
			candidates = append(candidates, smaller)
		}
	}
	if len(candidates) == 0 {
		return cur
	}
	best := p.cheapest(candidates)
	now, then := p.costAt(cur), p.costAt(best)
	saving := 1 - then/now
	// The saving counts the rollout: for about rolloutTime both fleets run side by side
	// (maxSurge 25 %), which the saving over sustainFor must pay for.
	rollout := 0.25 * max(now, then) * rolloutTime.Hours()
	pays := (now-then)*p.w.Vertical.SustainFor.D().Hours() > rollout
	if now > 0 && saving+eps >= *p.w.Vertical.MinSavings && !pays {
		p.reasonf("class %s would save $%s/h, which does not pay for a rollout within %s", best.Name, num(now-then), p.w.Vertical.SustainFor)
	}
	if now > 0 && saving+eps >= *p.w.Vertical.MinSavings && pays {
		// The numbers of the move are stated by finish, from the final decision.
		return p.gate(best, ruleCost, fmt.Sprintf("class %s supplies the required %s slots for less than class %s", best.Name, num(p.need), cur.Name))
	}
	if then < now {
		p.reasonf("class %s would cost $%s/h instead of $%s/h (%s%% less), short of the %s%% that is worth a rollout",
			best.Name, num(then), num(now), num(saving*100), num(*p.w.Vertical.MinSavings*100))
	} else {
		p.reasonf("no other allowed class supplies this capacity for less: the cheapest, %s, would cost $%s/h against $%s/h now",
			best.Name, num(then), num(now))
	}
	return cur
}

// canStepDown reports whether the workload may move to the next smaller class: CPU has
// stayed low for sustainFor, and CPU and memory projected onto the smaller class stay
// below their warning levels.
func (p *plan) canStepDown(cur, smaller *rules.Class) bool {
	ok, held := p.sustained(condCPULow)
	if !ok {
		if held > 0 {
			p.reasonf("CPU below %s for %s of the %s a step down needs", num(*p.w.Vertical.ScaleDownCPUBelow), held, p.w.Vertical.SustainFor)
		}
		return false
	}
	cpu, okCPU := p.value(rules.CPU)
	mem, okMem := p.value(rules.Memory)
	if !okCPU || !okMem {
		p.reasonf("a step down to %s needs fresh CPU and memory", smaller.Name)
		return false
	}
	// Project onto the smaller class the jobs each pod would run there, not the ratio of
	// the classes' concurrency: a fleet running few jobs per pod would look idle.
	gCur, _ := p.concurrencyOf(cur)
	gSmall, _ := p.concurrencyOf(smaller)
	perPod := float64(gSmall) / float64(gCur) // the old projection, without active jobs
	if a, ok := p.value(rules.ActiveJobs); ok && p.in.State.ReadyReplicas > 0 && a > 0 {
		jobsHere := a / float64(p.in.State.ReadyReplicas)
		jobsThere := min(float64(gSmall), a/float64(p.replicasAt(smaller)))
		perPod = jobsThere / jobsHere
	}
	cpuThere := cpu * perPod * cur.CPU.Float() / smaller.CPU.Float()
	memThere := mem * perPod * cur.Memory.Float() / smaller.Memory.Float()
	if cpuThere >= *p.w.Thresholds[rules.CPU].Warning || memThere >= *p.w.Thresholds[rules.Memory].Warning {
		p.reasonf("on %s, CPU would be %s and memory %s of the request: too close to warning to step down", smaller.Name, num(cpuThere), num(memThere))
		return false
	}
	if p.replicasAt(smaller) > p.maxFor(smaller) {
		p.reasonf("class %s would need %d workers, more than its %d", smaller.Name, p.replicasAt(smaller), p.maxFor(smaller))
		return false
	}
	return true
}

func (p *plan) cheapest(cs []*rules.Class) *rules.Class {
	best := cs[0]
	for _, c := range cs[1:] {
		if p.costAt(c) < p.costAt(best) {
			best = c
		}
	}
	return best
}

func (p *plan) allowedClasses() []*rules.Class {
	var out []*rules.Class
	for _, name := range p.w.Classes {
		if c := p.r.Class(name); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// rolloutTime is about how long a rollout runs both fleets: four waves of 25 % of the pods,
// each waiting for its pods' start.
const rolloutTime = 2 * time.Minute

// The class rules, first match wins: a class the workload may not use, pressure, capacity,
// cost.
const (
	ruleDisallowed = "disallowed"
	rulePressure   = "pressure"
	ruleCapacity   = "capacity"
	ruleCost       = "cost"
)

// gate lets a class change through unless the last rollout is too recent (a step up for
// capacity excepted), and records the rule that made it.
func (p *plan) gate(to *rules.Class, rule, why string) *rules.Class {
	if wait := p.settling(); wait != "" && rule == ruleCost {
		p.reasonf("%s; but %s", why, wait)
		return p.class
	}
	if rule == ruleCapacity {
		// The work outgrew the class: like the HPA's scale-up, this waits for no
		// cooldown (only for a rollout in progress, which holds every change).
		p.classRule = rule
		p.reasonf("%s", why)
		return to
	}
	if p.rolloutAllowed(why) {
		p.classRule = rule
		return to
	}
	return p.class
}

// settling says why a class is not chosen for its cost yet: a job's measurement is
// pending; "" otherwise.
func (p *plan) settling() string {
	soFar, pending := p.measuring()
	if !pending {
		return ""
	}
	p.limit(LimitSettling)
	return fmt.Sprintf("a job's CPU and memory are measured over a %s window first (%s of it so far)", p.r.Queries.RateWindow.D(), soFar.Round(time.Second))
}

// measuring reports whether a job's measurement is pending, and for how long it has
// been: the fleet is busy enough for a job's CPU to be measured (activeJobs and cpu are
// queried), but the jobs in flight have not been followed for a whole rate window since
// the start or the last rollout, so neither a job's CPU nor, while the long jobs are
// still joining the mix in flight, its memory is known. The VPA's recommender likewise
// waits for history.
func (p *plan) measuring() (time.Duration, bool) {
	a, okA := p.value(rules.ActiveJobs)
	_, okCPU := p.value(rules.CPU)
	e := p.hist.PerJob
	if !okA || !okCPU || e.settled() || a < minBusy*float64(p.in.State.ReadyReplicas)*float64(p.conc) {
		return 0, false
	}
	var soFar time.Duration
	if e != nil && !e.ActiveSince.IsZero() {
		soFar = p.now.Sub(e.ActiveSince)
	}
	// Followed for a window, yet not measured (the pods were never all ready): decide
	// without it.
	return soFar, soFar < p.r.Queries.RateWindow.D()
}

// rolloutAllowed reports whether a change that rolls the pods (class or concurrency) may
// happen now: not within sustainFor of the last one. It records why either way.
func (p *plan) rolloutAllowed(why string) bool {
	last := p.in.History.LastClassChange
	if wait := p.w.Vertical.SustainFor.D(); !last.IsZero() && p.now.Sub(last) < wait {
		p.limit(LimitCooldown)
		p.reasonf("%s; but the last class or concurrency change was %s ago, within the %s cooldown", why, p.now.Sub(last).Round(time.Second), p.w.Vertical.SustainFor)
		return false
	}
	p.reasonf("%s", why)
	return true
}

// heldReplicas is the replica count that keeps the fleet's current slots in class c.
func (p *plan) heldReplicas(c *rules.Class) int32 {
	g, _ := p.concurrencyOf(c)
	return ceilInt(float64(p.in.State.Replicas) * float64(p.conc) / float64(g))
}

// changeClass moves the workload to another class, with the replica count recomputed for
// the new class's concurrency. Stabilization and rate policies do not apply: the rollout
// replaces every pod anyway, and the old counts were in other units. The scale-down
// window does, in slots, through the sizing on the stabilized requirement and the guard.
func (p *plan) changeClass(to *rules.Class) {
	_, t := p.concurrencyOf(to)
	g := p.slotsOf(to)
	t = max(1, min(t, g))
	replicas := p.replicasAt(to)
	if !p.hasNeed {
		replicas = p.heldReplicas(to) // keep the capacity the fleet has
	}
	p.d.To = Shape{Replicas: replicas, Class: to.Name, Concurrency: g, TenantConcurrency: t}
	p.unmanagedEnv()
}
