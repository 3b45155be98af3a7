package autoscaler

import (
	"fmt"
	"math"

	"github.com/workerscale/workerscale/rules"
)

// The rate limiter at the source: a member of a rate budget that names env.rateLimitMax
// gets its share of the budget as BullMQ's queue limiter {max, duration}, RATE_LIMIT_MAX
// jobs per RATE_LIMIT_DURATION ms. The limiter is global to the queue, so no number of
// replicas can drive the keys past the share. Writing it changes the pod template, so it
// shares the cooldown of a class or concurrency change, and it is not churned: it moves
// when the share moves by more than the tolerance, when the budget binds and the limit
// must come down, or when the pods roll anyway. docs/policy.md, "Rate budgets".

// RollsOut reports whether the decision changes the pod template (the class, the
// concurrency or the rate limiter), which replaces every pod. Such changes share the
// cooldown.
func (d Decision) RollsOut() bool {
	return d.ChangesSlots() || d.From.RateLimitMax != d.To.RateLimitMax
}

// ChangesSlots reports whether the decision changes the class or the concurrency: a pod
// is then a different number of slots, and the replica history starts afresh.
func (d Decision) ChangesSlots() bool {
	return d.From.Class != d.To.Class || d.From.Concurrency != d.To.Concurrency || d.From.TenantConcurrency != d.To.TenantConcurrency
}

// RateLimitWindowMillis is the limiter window of workload w in milliseconds (the value
// of env.rateLimitDuration), or 0 when w is on no budget of r.
func RateLimitWindowMillis(r *rules.Rules, w *rules.Workload) int64 {
	for _, b := range r.RateBudgets {
		if b.Name == w.RateBudget {
			return b.LimiterWindow.D().Milliseconds()
		}
	}
	return 0
}

// rateLimitManaged reports whether workerscale writes the workload's rate limiter.
func (p *plan) rateLimitManaged() bool {
	return p.w.RateBudget != "" && p.w.Env.RateLimitMax != nil && *p.w.Env.RateLimitMax != ""
}

// limiterHolds reports whether the queue's limiter, as it runs now, already holds the
// workload to share rps of budget b, whatever its replicas.
func (p *plan) limiterHolds(b *rules.RateBudget, share float64) bool {
	if !p.rateLimitManaged() || p.d.From.RateLimitMax <= 0 {
		return false
	}
	return float64(p.d.From.RateLimitMax)**p.w.RequestsPerJob/b.LimiterWindow.D().Seconds() <= share+eps
}

// keepRateLimit leaves the limiter as it is (not managed, or not changed now).
func (p *plan) keepRateLimit() { p.d.To.RateLimitMax = p.d.From.RateLimitMax }

// setRateLimit sets the workload's rate limiter from its share of budget b, in rps.
// binds says whether the budget's members ask for more than it has.
func (p *plan) setRateLimit(b *rules.RateBudget, share float64, binds bool) {
	if !p.rateLimitManaged() || p.in.State.RolloutInProgress || !p.templateOurs() {
		p.keepRateLimit()
		return
	}
	rpj := *p.w.RequestsPerJob
	window := b.LimiterWindow.D()
	perWindow := share / rpj * window.Seconds()
	want := int(math.Floor(perWindow + eps))
	name := *p.w.Env.RateLimitMax
	how := fmt.Sprintf("rate limiter: a share of %s rps / %s requests per job x %s = %s jobs per window",
		num(share), num(rpj), b.LimiterWindow, num(perWindow))
	if want < 1 {
		want = 1
		how += fmt.Sprintf("; less than one job per window, so 1, which lets it draw %s rps (a longer limiterWindow on rate budget %s would express the share)",
			num(rpj/window.Seconds()), b.Name)
	}
	cur := p.d.From.RateLimitMax
	msg := fmt.Sprintf("%s: setting %s to %d (was %d)", how, name, want, cur)
	if cur <= 0 {
		msg = fmt.Sprintf("%s: setting %s to %d (not set for a %s window)", how, name, want, b.LimiterWindow)
	}
	tol := *p.w.Horizontal.Tolerance
	switch {
	case want == cur:
		p.keepRateLimit()
		p.reasonf("%s: %s stays %d", how, name, cur)
	case p.d.To.Class != p.d.From.Class || p.d.To.Concurrency != p.d.From.Concurrency || p.d.To.TenantConcurrency != p.d.From.TenantConcurrency:
		// The pods roll anyway: the exact share costs nothing more.
		p.d.To.RateLimitMax = want
		p.reasonf("%s, with the rollout of the other changes", msg)
	case cur <= 0,
		binds && want < cur,
		math.Abs(float64(want-cur)) > tol*float64(cur)+eps:
		if p.rolloutAllowed(msg + " (a template change: the pods restart)") {
			p.d.To.RateLimitMax = want
		} else {
			p.keepRateLimit()
		}
	default:
		p.keepRateLimit()
		p.reasonf("%s; %s stays %d: within the %s%% tolerance, and the budget does not need it lower", how, name, cur, num(tol*100))
	}
}
