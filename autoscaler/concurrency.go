package autoscaler

import (
	"fmt"
	"slices"

	"github.com/workerscale/workerscale/rules"
)

// concurrencyOf is what a workload runs with in class c: the workload's override or the
// class's value, within the workload's bounds.
func (p *plan) concurrencyOf(c *rules.Class) (global, tenant int) {
	return ClassConcurrency(p.w, c)
}

// ClassConcurrency is what workload w runs with in class c: the workload's override or the
// class's value, within the workload's bounds; the tenant concurrency at most the global.
func ClassConcurrency(w *rules.Workload, c *rules.Class) (global, tenant int) {
	cc := w.Concurrency
	global, tenant = *c.Concurrency, *c.TenantConcurrency
	if cc.Global != nil {
		global = *cc.Global
	}
	if cc.Tenant != nil {
		tenant = *cc.Tenant
	}
	global = boundConcurrency(w, global)
	return global, max(1, min(tenant, global))
}

func (p *plan) boundConcurrency(c int) int { return boundConcurrency(p.w, c) }

// boundConcurrency keeps c within the workload's concurrency.min and max, and at least 1.
func boundConcurrency(w *rules.Workload, c int) int {
	if m := w.Concurrency.Max; m != nil {
		c = min(c, *m)
	}
	if m := w.Concurrency.Min; m != nil {
		c = max(c, *m)
	}
	return max(c, 1)
}

// unmanagedEnv keeps what the workload does not let workerscale write: with no env var
// for (tenant) concurrency, the value stays as read.
func (p *plan) unmanagedEnv() {
	if *p.w.Env.Concurrency == "" {
		p.d.To.Concurrency = p.d.From.Concurrency
	}
	if *p.w.Env.TenantConcurrency == "" {
		p.d.To.TenantConcurrency = p.d.From.TenantConcurrency
	}
}

// concurrency decides concurrency within the current class.
func (p *plan) concurrency() {
	st := p.in.State
	if p.class == nil || !p.templateOurs() {
		return
	}
	g, t := p.concurrencyOf(p.class)
	if st.Concurrency > 0 {
		g = p.boundConcurrency(st.Concurrency)
		if g != st.Concurrency && *p.w.Env.Concurrency != "" {
			p.reasonf("concurrency %d is outside the workload's bounds; set to %d", st.Concurrency, g)
		}
	}
	if st.TenantConcurrency > 0 {
		t = st.TenantConcurrency
	}
	if p.grade(RateLimited) == Critical && g > p.minConcurrency() && *p.w.Env.Concurrency != "" {
		if p.rolloutAllowed(fmt.Sprintf("upstream rate limiting is critical: lowering concurrency from %d to %d", g, g-1)) {
			g--
		}
	}
	p.d.To.Concurrency, p.d.To.TenantConcurrency = g, min(max(t, 1), g)
	p.unmanagedEnv()
}

// condRateLimitOK is the sustained condition (History.Since) of upstream rate limiting at
// or below its target: what concurrency lowered for 429s waits for before it comes back.
const condRateLimitOK = "rateLimitOK"

// trackRateLimitOK keeps condRateLimitOK: it holds while rateLimited is fresh and at or
// below its target; a missing sample breaks the run, as for the vertical conditions.
func (p *plan) trackRateLimitOK() {
	v, ok := p.value(RateLimited)
	th, has := p.w.Thresholds[RateLimited]
	holds := ok && has && th.Target != nil
	if holds {
		if th.Direction == rules.LowerIsWorse {
			holds = v >= *th.Target
		} else {
			holds = v <= *th.Target
		}
	}
	if !holds {
		delete(p.hist.Since, condRateLimitOK)
		return
	}
	if _, ok := p.hist.Since[condRateLimitOK]; !ok {
		p.hist.Since[condRateLimitOK] = p.now
	}
}

// raiseConcurrency is the last stage of a workload on no rate budget: the 429 recovery
// or the alert loop's raise (stepConcurrency). The members of a budget took their step in
// applyRateBudgets, into the budget's room, before their rate limiters were set.
func (p *plan) raiseConcurrency(room *budgetRoom) {
	if room.settled[p] {
		return
	}
	p.stepConcurrency(nil, 0, "")
	p.keepRateLimit()
}

// stepConcurrency adds one to concurrency, at most once per decision: first to restore
// concurrency lowered for 429s (canRecoverConcurrency), otherwise for the second seed's alert
// loop (once replicas are held at their maximum, the queue is at warning or worse and CPU,
// memory and the upstream are healthy). For a workload on rate budget budget, left is
// the rps the budget has left, which the step must fit in (and is reduced by), and
// perSlot the rps one slot makes (0 when unknown: no step); left is nil for a workload on
// no budget.
func (p *plan) stepConcurrency(left *float64, perSlot float64, budget string) {
	p.trackRateLimitOK()
	g := p.effConc(p.d.To) // the running value, or the class's when it is not known
	if p.overridesConcurrency() || p.in.State.RolloutInProgress || p.class == nil || p.d.To.Class != p.d.From.Class || *p.w.Env.Concurrency == "" || !p.templateOurs() {
		return
	}
	var why string
	switch {
	case p.canRecoverConcurrency(g):
		target, _ := p.concurrencyOf(p.class)
		why = fmt.Sprintf("upstream rate limiting has been at or below its target (%s = %s) for %s: restoring concurrency from %d to %d, toward the configured %d",
			RateLimited, num(p.d.Metrics[RateLimited].Value), p.w.Vertical.SustainFor, g, g+1, target)
	case p.canRaiseConcurrency(g):
		why = fmt.Sprintf("replicas are at their maximum and the queue is %s with CPU and memory below warning: raising concurrency from %d to %d", p.grade(rules.QueueDepth), g, g+1)
	default:
		return
	}
	var extra float64
	if left != nil {
		if perSlot <= 0 {
			p.reasonf("not raising concurrency: the requests one more slot per worker would make to rate budget %s are unknown", budget)
			return
		}
		extra = float64(p.d.To.Replicas) * perSlot
		if extra > *left+eps {
			if !p.rateLimitManaged() {
				p.reasonf("raising concurrency would add %s rps to rate budget %s, which has %s rps left", num(extra), budget, num(*left))
				return
			}
			// The queue's limiter is set from the share with this change (the pods roll
			// anyway), so the slots may outrun the share: the limiter holds the keys to it,
			// and the extra slots take up jobs that run longer than the mean.
			p.reasonf("raising concurrency would add %s rps to rate budget %s, which has %s rps left; %s holds the queue to its share", num(extra), budget, num(*left), *p.w.Env.RateLimitMax)
			extra = *left
		}
	}
	if !p.rolloutAllowed(why) {
		return
	}
	p.d.To.Concurrency = g + 1
	if _, t := p.concurrencyOf(p.class); p.d.To.TenantConcurrency < 1 {
		p.d.To.TenantConcurrency = min(t, g+1)
	}
	p.unmanagedEnv()
	if left != nil {
		*left -= extra
	}
}

// canRecoverConcurrency: concurrency runs below the configured value (the class's or
// the workload's concurrency.global, within its bounds), nothing else changes it in this
// decision, rateLimited has been at or below its target for sustainFor, no breaker is
// open and CPU and memory are below warning.
func (p *plan) canRecoverConcurrency(g int) bool {
	target := p.jobFit(p.class) // the class's, or less where a measured job needs more room
	if g >= target || p.d.To.Concurrency != p.d.From.Concurrency || p.breakerOpen() {
		return false
	}
	if held, _ := p.sustained(condRateLimitOK); !held {
		return false
	}
	for _, m := range []string{rules.CPU, rules.Memory} {
		if g := p.grade(m); g == Warning || g == Critical {
			return false
		}
	}
	return true
}

func (p *plan) minConcurrency() int {
	if m := p.w.Concurrency.Min; m != nil {
		return *m
	}
	return 1
}

// canRaiseConcurrency: the workload sets concurrency.max above the current value, replicas
// are held at their maximum, the queue is at warning or worse, and CPU, memory and the
// upstream are healthy.
func (p *plan) canRaiseConcurrency(g int) bool {
	m := p.w.Concurrency.Max
	atMax := p.maxFor(p.class)
	if m == nil || g >= *m || g >= p.jobFitMax() || *p.w.Env.Concurrency == "" || p.in.State.Replicas < atMax || p.d.To.Replicas < atMax ||
		p.breakerOpen() || slices.Contains(p.d.LimitedBy, LimitRateBudget) {
		return false
	}
	q := p.grade(rules.QueueDepth)
	return (q == Warning || q == Critical) && p.grade(rules.CPU) == OK && p.grade(rules.Memory) == OK
}
