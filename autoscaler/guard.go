package autoscaler

import (
	"fmt"
	"math"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// The guard is the last stage of every decision. Whatever the earlier stages proposed
// (the same-class replicas, a class change of any rule, the concurrency raise), it
// enforces the safety invariants on capacity = replicas x concurrency, in this order of
// precedence (docs/policy.md, "Invariants"):
//
//  1. minReplicas, maxReplicas and the class maximum always hold.
//  2. The rate budget is a cap like maxReplicas (applyRateBudgets, after the guard).
//  3. The one-step concurrency decrease while rateLimited is critical is the only thing
//     that may shrink capacity against the floors below.
//  4. Floors: with a replica input missing, stale or invalid, or with the backlog
//     critical, capacity does not shrink; within the scale-down window it does not fall
//     below the highest recommendation (in slots), nor below the current capacity on
//     first sight; and a scale-in never leaves fewer slots than the jobs in flight (at
//     most the current capacity), so that it need not stop a running job.
//  5. Circuit breaker: capacity and per-pod concurrency do not grow, except by the
//     rounding of a floor up to whole pods in a new class.
//  6. fallbackReplicas is a floor while a replica input is missing, below the breaker.
//
// A rollout in progress keeps the shape; only the hard bounds and the budget apply.
//
// On an axis another autoscaler owns, the proposal keeps the current values; with the
// replicas another's, a template change that the replicas as they are cannot hold within
// these invariants is not made (guardTemplate, owners.go).

// LimitMissingMetrics, LimitCriticalBacklog and LimitJobsInFlight name the guard's floors
// in LimitedBy.
const (
	LimitMissingMetrics  = "missingMetrics"
	LimitCriticalBacklog = "criticalBacklog"
	LimitJobsInFlight    = "jobsInFlight"
)

// guard enforces the invariants on the proposal in p.d.To.
func (p *plan) guard() {
	p.pinOwned()
	if !p.replicasOurs() {
		p.guardTemplate()
		return
	}
	from := p.d.From
	if p.in.State.RolloutInProgress {
		p.d.To = from
		p.clampKnown()
		return
	}
	// No class change for cost while the capacity it was sized on is not known.
	if p.d.To.Class != from.Class && p.classRule == ruleCost && len(p.missing) > 0 {
		p.hold("no class change for cost while metrics are missing (%s)", strings.Join(p.missing, ", "))
	}
	p.guardConcurrency()
	p.concurrencyBounds()
	floor, floorWhy, floorLimit := p.floorSlots()
	toClass := p.r.Class(p.d.To.Class)
	if need := ceilInt(float64(floor) / float64(p.effConc(p.d.To))); need > p.maxFor(toClass) && p.d.To.Class != from.Class {
		p.holdClass(floor)
		floor, floorWhy, floorLimit = p.floorSlots() // in the class it holds
	}
	toConc := p.effConc(p.d.To)
	need := ceilInt(float64(floor) / float64(toConc))
	if p.d.To.Replicas < need {
		p.limit(floorLimit)
		p.reasonf("%s: at least %d slots, so %d replicas at concurrency %d rather than %d", floorWhy, floor, need, toConc, p.d.To.Replicas)
		p.d.To.Replicas = need
	} else if len(p.missing) > 0 {
		p.reasonf("metrics missing or stale (%s): no scale-down while they are", strings.Join(p.missing, ", "))
	}
	breakerCap := int32(-1)
	if p.breaker != "" {
		breakerCap = max(int32(p.fromCapacity()/toConc), need)
		if p.grade(RateLimited) == Critical && toConc < p.conc {
			// The concurrency step down is to lessen the pressure upstream: no replica
			// takes back the slots it gave up.
			breakerCap = min(breakerCap, max(p.d.From.Replicas, need))
		}
	}
	if f := p.w.FallbackReplicas; f != nil && len(p.missing) > 0 && p.d.To.Replicas < *f {
		to := *f
		if breakerCap >= 0 && to > breakerCap {
			to = max(breakerCap, p.d.To.Replicas)
			p.limit(LimitCircuitBreaker)
			p.reasonf("metrics missing or stale: the fallback of %d replicas is held to %d by the circuit breaker", *f, to)
		} else {
			p.reasonf("metrics missing or stale: the fallback of %d replicas applies as a floor", *f)
		}
		p.d.To.Replicas = to
	}
	if breakerCap >= 0 && p.d.To.Replicas > breakerCap {
		p.limit(LimitCircuitBreaker)
		p.reasonf("circuit breaker: %s; not adding capacity to a failing fleet (%d replicas x %d wanted, %d slots now)",
			p.breaker, p.d.To.Replicas, toConc, p.fromCapacity())
		p.d.To.Replicas = breakerCap
	}
	p.clampKnown()
	p.checkCostMove()
}

// fromCapacity is the fleet's capacity now, in slots.
func (p *plan) fromCapacity() int { return int(p.d.From.Replicas) * p.conc }

// effConc is the concurrency a shape runs with: its own, or when that is unknown (not
// managed and absent) its class's.
func (p *plan) effConc(s Shape) int {
	if s.Concurrency > 0 {
		return s.Concurrency
	}
	if s.Class == p.d.From.Class {
		return p.conc
	}
	if c := p.r.Class(s.Class); c != nil {
		g, _ := p.concurrencyOf(c)
		return g
	}
	return p.conc
}

// guardConcurrency: with the breaker open, per-pod concurrency never grows; with 429s
// critical, a rollout (a class change) also takes the one-step decrease.
// concurrencyBounds keeps a concurrency the decision writes within the workload's bounds
// in its class, whatever proposed it (an override included): at least concurrency.min, at
// most the larger of concurrency.max and the class's concurrency.
func (p *plan) concurrencyBounds() {
	to := &p.d.To
	c := p.r.Class(to.Class)
	if c == nil || *p.w.Env.Concurrency == "" || to.Concurrency == p.d.From.Concurrency {
		return
	}
	lo := 1
	if m := p.w.Concurrency.Min; m != nil {
		lo = *m
	}
	hi, _ := ClassConcurrency(p.w, c)
	if m := p.w.Concurrency.Max; m != nil {
		hi = max(hi, *m)
	}
	if v := min(max(to.Concurrency, lo), hi); v != to.Concurrency {
		p.reasonf("concurrency %d is outside [%d, %d], the bounds of %s in class %s: %d", to.Concurrency, lo, hi, p.w.Name, c.Name, v)
		to.Concurrency = v
		to.TenantConcurrency = max(1, min(to.TenantConcurrency, v))
	}
}

func (p *plan) guardConcurrency() {
	from, to := p.d.From, &p.d.To
	if p.breaker == "" {
		return
	}
	limit := p.conc
	if p.grade(RateLimited) == Critical && to.Class != from.Class && p.conc > p.minConcurrency() {
		limit = p.conc - 1
	}
	if p.effConc(*to) <= limit {
		return
	}
	if *p.w.Env.Concurrency == "" {
		// The concurrency is not ours to write, and the new class would run more.
		p.hold("circuit breaker: %s; class %s would run concurrency %d, above the %d running now, which is not ours to lower", p.breaker, to.Class, p.effConc(*to), p.conc)
		return
	}
	p.limit(LimitCircuitBreaker)
	// The replicas are recomputed for the lower concurrency, so that the class change
	// keeps the slots it was sized on (the breaker caps them next).
	slots := int(to.Replicas) * p.effConc(*to)
	p.reasonf("circuit breaker: %s; concurrency %d rather than %d", p.breaker, limit, p.effConc(*to))
	to.Concurrency = limit
	to.TenantConcurrency = max(1, min(to.TenantConcurrency, limit))
	to.Replicas = ceilInt(float64(slots) / float64(limit))
}

// floorSlots is the capacity the decision may not go below, why, and the limit it is.
func (p *plan) floorSlots() (slots int, why, limit string) {
	fromCap := p.fromCapacity()
	if window := min(fromCap, int(p.recentSlots())); window > 0 {
		slots, why, limit = window, fmt.Sprintf("scale-down stabilization: the highest recommendation in the last %s is %d slots", p.w.Behavior.ScaleDown.StabilizationWindow, window), LimitBehavior
	}
	var backlog []string
	for _, m := range []string{rules.QueueDepth, rules.WaitSeconds} {
		if p.grade(m) == Critical {
			backlog = append(backlog, m)
		}
	}
	if len(backlog) > 0 {
		slots, why, limit = fromCap, fmt.Sprintf("the backlog is critical (%s): the fleet's %d slots are kept", strings.Join(backlog, ", "), fromCap), LimitCriticalBacklog
	}
	if len(p.missing) > 0 {
		slots, why, limit = fromCap, fmt.Sprintf("metrics missing or stale (%s): the fleet's %d slots are kept", strings.Join(p.missing, ", "), fromCap), LimitMissingMetrics
	}
	if active, ok := p.value(rules.ActiveJobs); ok {
		// The jobs finishing on Terminating pods run on capacity already leaving.
		leaving, on := p.leavingJobs()
		staying := math.Max(0, active-leaving)
		if inFlight := min(fromCap, int(ceilInt(staying))); inFlight > slots {
			slots, why, limit = inFlight, fmt.Sprintf("%g jobs are running: a scale-in keeps a slot for each", staying), LimitJobsInFlight
			if leaving > 0 {
				why = fmt.Sprintf("%g jobs are running on pods that stay (%g of the %g run on Terminating pods %s): a scale-in keeps a slot for each", staying, leaving, active, strings.Join(on, ", "))
			}
		}
	}
	// The one exception: 429s critical lower concurrency by one, with the replicas kept.
	// Only one step: a further cut in the same decision (a class with fewer slots, a job
	// that fits fewer) is held to the floors by more replicas.
	if toConc := p.effConc(p.d.To); p.grade(RateLimited) == Critical && toConc < p.conc {
		step := max(toConc, p.conc-1)
		if lowered := int(p.d.From.Replicas) * step; lowered < slots {
			slots = lowered
			why += fmt.Sprintf(", less the one-step concurrency decrease to %d while upstream rate limiting is critical", step)
		}
	}
	return slots, why, limit
}

// holdClass is for a class change whose class cannot hold the floor within its maximum:
// the workload stays in its class when it may, or else moves to the cheapest allowed
// class that holds it (the one that holds the most when none does).
func (p *plan) holdClass(floor int) {
	to := p.r.Class(p.d.To.Class)
	allowed := p.allowedClasses()
	for _, c := range allowed {
		if c == p.class {
			p.hold("class %s cannot hold the %d slots the fleet must keep within its %d workers; the class stays", to.Name, floor, p.maxFor(to))
			return
		}
	}
	var best *rules.Class
	var bestHolds bool
	var bestCost float64
	var bestSlots int
	for _, c := range allowed {
		g := p.slotsOf(c)
		n := ceilInt(float64(floor) / float64(g))
		holds, cost, slots := n <= p.maxFor(c), float64(n)*c.CostPerHour, int(p.maxFor(c))*g
		better := best == nil ||
			(holds && (!bestHolds || cost < bestCost)) ||
			(!holds && !bestHolds && slots > bestSlots)
		if better {
			best, bestHolds, bestCost, bestSlots = c, holds, cost, slots
		}
	}
	if best == nil || best == to {
		return
	}
	_, t := p.concurrencyOf(best)
	g := p.slotsOf(best)
	t = max(1, min(t, g))
	p.reasonf("class %s cannot hold the %d slots the fleet must keep within its %d workers; moving to %s instead", to.Name, floor, p.maxFor(to), best.Name)
	p.d.To = Shape{Replicas: p.d.To.Replicas, Class: best.Name, Concurrency: g, TenantConcurrency: t}
	p.unmanagedEnv()
	p.guardConcurrency()
}

// hold abandons the proposal: the workload keeps its shape (the hard bounds still apply),
// with the same-class concurrency step (the 429 decrease) that a class change replaced.
func (p *plan) hold(format string, args ...any) {
	p.reasonf(format, args...)
	p.d.To = p.d.From
	p.classRule = ""
	p.concurrency()
}

// clampKnown applies the hard bounds in the target class, when it is known.
func (p *plan) clampKnown() {
	c := p.r.Class(p.d.To.Class)
	if c != nil || p.d.To.Class == CustomClass || p.class == nil {
		p.clamp(c)
	}
}

// checkCostMove keeps a class change made for cost only when the final decision still
// saves what the rules ask for against the same slots in the current class; its reason
// is stated by finish, from the final numbers.
func (p *plan) checkCostMove() {
	if p.classRule != ruleCost || p.d.To.Class == p.d.From.Class {
		return
	}
	then, alt := p.costMove()
	if alt > 0 && 1-then/alt+eps >= *p.w.Vertical.MinSavings {
		return
	}
	p.hold("the move to class %s for cost would cost $%s/h, against $%s/h for the same slots in class %s, once every limit applies; the class stays",
		p.d.To.Class, num(then), num(alt), p.d.From.Class)
	p.clampKnown()
}

// costMove is the cost of the final shape, and of the same slots in the current class.
func (p *plan) costMove() (then, alt float64) {
	slots := float64(p.d.To.Replicas) * float64(p.effConc(p.d.To))
	same := Shape{Replicas: max(ceilInt(slots/float64(p.conc)), *p.w.MinReplicas), Class: p.d.From.Class}
	return p.shapeCost(p.d.To), p.shapeCost(same)
}

// shapeCost is a shape's cost per hour; 0 when its class has no cost.
func (p *plan) shapeCost(s Shape) float64 {
	if c := p.r.Class(s.Class); c != nil {
		return float64(s.Replicas) * c.CostPerHour
	}
	return 0
}
