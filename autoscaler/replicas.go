package autoscaler

import (
	"fmt"
	"math"

	"github.com/workerscale/workerscale/rules"
)

// horizontal proposes the replica count within the current class: the requirement, the
// tolerance, then the HPA's stabilization windows and rate policies. The safety holds
// (circuit breaker, missing data, a critical backlog, fallbackReplicas) are not here: the
// guard applies them to whatever was proposed, on every path.
func (p *plan) horizontal() {
	cur := p.in.State.Replicas
	desired := p.recommendation(true)
	if !p.hasNeed {
		p.reasonf("no fresh metric sizes the fleet; holding at %d replicas", cur)
	}
	desired = p.stabilize(desired)
	desired = p.rateLimit(desired)
	p.d.To.Replicas = desired
}

// recommendation is this cycle's unstabilized replica count in the current class: the
// requirement, or the current count when nothing sizes it, within the tolerance of the
// current count. It is recorded for the stabilization windows (and the guard's
// scale-down window in slots), on every path: as the HPA does for a new object, the
// current count counts as a recommendation on first sight, so a fresh start (or explain,
// or a new leader) cannot scale down before the window has passed.
func (p *plan) recommendation(explain bool) int32 {
	cur := p.in.State.Replicas
	desired := cur
	if p.hasNeed {
		desired = ceilInt(p.need / float64(p.conc))
	}
	if cur > 0 && desired != cur {
		if ratio := math.Abs(float64(desired)/float64(cur) - 1); ratio <= *p.w.Horizontal.Tolerance {
			if explain {
				p.reasonf("%d replicas is within the %s%% tolerance of the current %d; no change", desired, num(*p.w.Horizontal.Tolerance*100), cur)
			}
			desired = cur
		}
	}
	if len(p.hist.Recommendations) == 0 {
		p.hist.Recommendations = []Recommendation{{Time: p.now, Replicas: cur}}
	}
	p.hist.Recommendations = append(p.hist.Recommendations, Recommendation{Time: p.now, Replicas: desired})
	p.hist.Recommendations = p.pruneRecommendations()
	return desired
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
