package autoscaler

import (
	"fmt"
	"slices"

	"github.com/workerscale/workerscale/rules"
)

// concurrencyOf is what a workload runs with in class c: the workload's override or the
// class's value, within the workload's bounds.
func (p *plan) concurrencyOf(c *rules.Class) (global, tenant int) {
	cc := p.w.Concurrency
	global, tenant = *c.Concurrency, *c.TenantConcurrency
	if cc.Global != nil {
		global = *cc.Global
	}
	if cc.Tenant != nil {
		tenant = *cc.Tenant
	}
	global = p.boundConcurrency(global)
	return global, max(1, min(tenant, global))
}

func (p *plan) boundConcurrency(c int) int {
	if m := p.w.Concurrency.Max; m != nil {
		c = min(c, *m)
	}
	if m := p.w.Concurrency.Min; m != nil {
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
	if p.class == nil {
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

// raiseConcurrency adds one to concurrency (the second seed's alert loop) once replicas
// are held at their maximum, the queue is at warning or worse and CPU, memory and the
// upstream are healthy. It runs after the rate budgets: a workload on a budget is raised
// only into the budget's room, which room tracks per budget name.
func (p *plan) raiseConcurrency(room map[string]float64) {
	g := p.effConc(p.d.To) // the running value, or the class's when it is not known
	if p.in.State.RolloutInProgress || p.class == nil || p.d.To.Class != p.d.From.Class || !p.canRaiseConcurrency(g) {
		return
	}
	var extra float64
	if b := p.w.RateBudget; b != "" {
		left, known := room[b]
		if !known || p.duration <= 0 {
			return // the budget binds, or cannot be computed: no more requests
		}
		extra = float64(p.d.To.Replicas) * *p.w.RequestsPerJob / p.duration
		if extra > left+eps {
			p.reasonf("raising concurrency would add %s rps to rate budget %s, which has %s rps left", num(extra), b, num(left))
			return
		}
	}
	if p.rolloutAllowed(fmt.Sprintf("replicas are at their maximum and the queue is %s with CPU and memory below warning: raising concurrency from %d to %d", p.grade(rules.QueueDepth), g, g+1)) {
		p.d.To.Concurrency = g + 1
		if _, t := p.concurrencyOf(p.class); p.d.To.TenantConcurrency < 1 {
			p.d.To.TenantConcurrency = min(t, g+1)
		}
		p.unmanagedEnv()
		if b := p.w.RateBudget; b != "" {
			room[b] -= extra
		}
	}
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
	if m == nil || g >= *m || *p.w.Env.Concurrency == "" || p.in.State.Replicas < atMax || p.d.To.Replicas < atMax ||
		p.breakerOpen() || slices.Contains(p.d.LimitedBy, LimitRateBudget) {
		return false
	}
	q := p.grade(rules.QueueDepth)
	return (q == Warning || q == Critical) && p.grade(rules.CPU) == OK && p.grade(rules.Memory) == OK
}
