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

// replicasAt is the replica count that supplies the needed slots in class c.
func (p *plan) replicasAt(c *rules.Class) int32 {
	g, _ := p.concurrencyOf(c)
	return max(ceilInt(p.need/float64(g)), *p.w.MinReplicas)
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
	// 1. Pressure: one class up.
	for _, cond := range []struct{ name, what string }{
		{condResourceFailures, "jobs are failing while CPU or memory is critical"},
		{condCPUHigh, fmt.Sprintf("CPU at or above %s", num(*p.w.Thresholds[rules.CPU].Warning))},
		{condMemoryHigh, fmt.Sprintf("memory at or above %s", num(*p.w.Thresholds[rules.Memory].Warning))},
	} {
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
		to := larger[0]
		if len(fitting) > 0 {
			to = p.cheapest(fitting)
		}
		g, _ := p.concurrencyOf(to)
		return p.gate(to, ruleCapacity, fmt.Sprintf("%d workers are needed but class %s runs at most %d: stepping up to %s (%d concurrency, at most %d workers)",
			need, cur.Name, p.maxFor(cur), to.Name, g, p.maxFor(to)))
	}
	// 3. Cost: a class that supplies the same capacity for enough less. Never while a
	// replica input is missing: the capacity it would be sized on is not known.
	if len(p.missing) > 0 {
		return cur
	}
	candidates := []*rules.Class{}
	for _, c := range larger {
		if p.replicasAt(c) <= p.maxFor(c) {
			candidates = append(candidates, c)
		}
	}
	if idx > 0 {
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
	if now > 0 && saving+eps >= *p.w.Vertical.MinSavings {
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
	gCur, _ := p.concurrencyOf(cur)
	gSmall, _ := p.concurrencyOf(smaller)
	perJob := float64(gSmall) / float64(gCur)
	cpuThere := cpu * perJob * cur.CPU.Float() / smaller.CPU.Float()
	memThere := mem * perJob * cur.Memory.Float() / smaller.Memory.Float()
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

// The class rules, first match wins: a class the workload may not use, pressure, capacity,
// cost.
const (
	ruleDisallowed = "disallowed"
	rulePressure   = "pressure"
	ruleCapacity   = "capacity"
	ruleCost       = "cost"
)

// gate lets a class change through unless the last rollout is too recent, and records the
// rule that made it.
func (p *plan) gate(to *rules.Class, rule, why string) *rules.Class {
	if p.rolloutAllowed(why) {
		p.classRule = rule
		return to
	}
	return p.class
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
	g, t := p.concurrencyOf(to)
	replicas := p.replicasAt(to)
	if !p.hasNeed {
		replicas = p.heldReplicas(to) // keep the capacity the fleet has
	}
	p.d.To = Shape{Replicas: replicas, Class: to.Name, Concurrency: g, TenantConcurrency: t}
	p.unmanagedEnv()
}
