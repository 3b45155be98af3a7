package autoscaler

import (
	"fmt"
	"math"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// horizontal decides the replica count within the current class.
func (p *plan) horizontal() {
	cur := p.in.State.Replicas
	desired := cur
	if p.hasNeed {
		desired = ceilInt(p.need / float64(p.conc))
	} else {
		p.reasonf("no fresh metric sizes the fleet; holding at %d replicas", cur)
	}
	if desired > cur && p.breakerOpen() {
		p.limit(LimitCircuitBreaker)
		p.reasonf("circuit breaker: %s; not adding workers to a failing fleet (wanted %d)", p.breakerWhy(), desired)
		desired = cur
	}
	if len(p.missing) > 0 && desired < cur {
		p.reasonf("metrics missing or stale (%s): holding at %d replicas instead of scaling down to %d", strings.Join(p.missing, ", "), cur, desired)
		desired = cur
	}
	floored := false
	if f := p.w.FallbackReplicas; f != nil && len(p.missing) > 0 && desired < *f {
		p.reasonf("metrics missing or stale: the fallback of %d replicas applies as a floor", *f)
		desired, floored = *f, true
	}
	if cur > 0 && desired != cur && !floored {
		if ratio := math.Abs(float64(desired)/float64(cur) - 1); ratio <= *p.w.Horizontal.Tolerance {
			p.reasonf("%d replicas is within the %s%% tolerance of the current %d; no change", desired, num(*p.w.Horizontal.Tolerance*100), cur)
			desired = cur
		}
	}
	if len(p.hist.Recommendations) == 0 {
		// As the HPA does for a new object: the current count counts as a recommendation,
		// so a fresh start (or explain) cannot scale down before the window has passed.
		p.hist.Recommendations = []Recommendation{{Time: p.now, Replicas: cur}}
	}
	p.hist.Recommendations = append(p.hist.Recommendations, Recommendation{Time: p.now, Replicas: desired})
	p.hist.Recommendations = p.pruneRecommendations()
	desired = p.stabilize(desired)
	desired = p.rateLimit(desired)
	p.d.To.Replicas = desired
	p.clamp(p.class)
}

// clamp keeps the replica count within minReplicas, maxReplicas and the class's maximum.
func (p *plan) clamp(c *rules.Class) {
	to := &p.d.To.Replicas
	if hi := p.maxFor(c); *to > hi {
		name, what := LimitMaxReplicas, "maxReplicas"
		if c != nil && c.MaxReplicas > 0 && c.MaxReplicas <= p.w.MaxReplicas {
			name, what = LimitClassMax, fmt.Sprintf("the maximum of class %s", c.Name)
		}
		p.limit(name)
		p.reasonf("%d replicas wanted; capped at %d, %s", *to, hi, what)
		*to = hi
	}
	if lo := *p.w.MinReplicas; *to < lo {
		p.limit(LimitMinReplicas)
		p.reasonf("%d replicas wanted; raised to minReplicas %d", *to, lo)
		*to = lo
	}
}
