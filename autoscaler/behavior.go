package autoscaler

import (
	"math"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// pruneRecommendations drops recommendations older than both stabilization windows, and
// those no window can need: one followed by a recommendation at least as high and one at
// least as low. The windows are read for their lowest and highest recommendations and
// all end now, so a window that holds the dropped one holds both later ones too, and its
// lowest and highest do not change. Without this a steady workload kept one
// recommendation per cycle for the whole window: 300 per workload at `interval: 1s`
// (BenchmarkResidentMemory). Where the list is not in time order (a history built by
// hand), the part before the disorder is kept as it is.
func (p *plan) pruneRecommendations() []Recommendation {
	keep := max(p.w.Behavior.ScaleUp.StabilizationWindow.D(), p.w.Behavior.ScaleDown.StabilizationWindow.D())
	recs := p.hist.Recommendations
	kept := make([]bool, len(recs))
	n := 0
	var hi, lo int32 // of the recommendations after the one looked at
	ordered := true
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if i+1 < len(recs) && r.Time.After(recs[i+1].Time) {
			ordered = false
		}
		dominated := ordered && i+1 < len(recs) && r.Replicas <= hi && r.Replicas >= lo
		if p.now.Sub(r.Time) <= keep && !dominated {
			kept[i] = true
			n++
		}
		if i+1 == len(recs) {
			hi, lo = r.Replicas, r.Replicas
		} else {
			hi, lo = max(hi, r.Replicas), min(lo, r.Replicas)
		}
	}
	out := make([]Recommendation, 0, n)
	for i, r := range recs {
		if kept[i] {
			out = append(out, r)
		}
	}
	return out
}

// stabilize applies the stabilization windows as the HPA does: a scale-up goes no higher
// than the lowest recommendation within the scale-up window, and a scale-down no lower than
// the highest within the scale-down window, so the count follows only changes that last.
func (p *plan) stabilize(desired int32) int32 {
	cur := p.in.State.Replicas
	b := p.w.Behavior
	upCutoff := p.now.Add(-b.ScaleUp.StabilizationWindow.D())
	downCutoff := p.now.Add(-b.ScaleDown.StabilizationWindow.D())
	up, down := desired, desired
	for _, r := range p.hist.Recommendations {
		if r.Time.After(upCutoff) {
			up = min(up, r.Replicas)
		}
		if r.Time.After(downCutoff) {
			down = max(down, r.Replicas)
		}
	}
	out := cur
	if out < up {
		out = up
	}
	if out > down {
		out = down
	}
	if out != desired {
		p.limit(LimitBehavior)
		switch {
		case desired < cur:
			p.reasonf("scale-down stabilization: the highest recommendation in the last %s is %d, so %d replicas rather than %d",
				b.ScaleDown.StabilizationWindow, down, out, desired)
		default:
			p.reasonf("scale-up stabilization: the lowest recommendation in the last %s is %d, so %d replicas rather than %d",
				b.ScaleUp.StabilizationWindow, up, out, desired)
		}
	}
	return out
}

// rateLimit applies the scaling policies as the HPA does: within each policy's period,
// counted back from now, at most Value pods or Value percent of the count at the period's
// start may be added (or removed). selectPolicy Max takes the policy that allows the most
// change, Min the least, Disabled none.
func (p *plan) rateLimit(desired int32) int32 {
	cur := p.in.State.Replicas
	switch {
	case desired > cur:
		limit := p.scaleLimit(p.w.Behavior.ScaleUp, true)
		// Where maxReplicas binds tighter, it is the limit that applies (clamp says so).
		if desired > limit && limit < p.maxFor(p.class) {
			p.limit(LimitBehavior)
			p.reasonf("scale-up policy (%s) allows at most %d replicas now; %d wanted", describePolicies(p.w.Behavior.ScaleUp), limit, desired)
			return max(limit, cur)
		}
	case desired < cur:
		limit := p.scaleLimit(p.w.Behavior.ScaleDown, false)
		if desired < limit && limit > *p.w.MinReplicas {
			p.limit(LimitBehavior)
			p.reasonf("scale-down policy (%s) allows no fewer than %d replicas now; %d wanted", describePolicies(p.w.Behavior.ScaleDown), limit, desired)
			return min(limit, cur)
		}
	}
	return desired
}

// scaleLimit is the furthest the count may go now in one direction.
func (p *plan) scaleLimit(s rules.ScalingRules, up bool) int32 {
	cur := p.in.State.Replicas
	if s.SelectPolicy == rules.SelectDisabled {
		return cur
	}
	var best int32
	for i, pol := range s.Policies {
		// As the HPA counts it: the replicas at the period's start are the current ones
		// less those added within it, plus those removed.
		added, removed := p.changedWithin(pol.Period.D())
		start := cur - added + removed
		var proposed int32
		switch {
		case up && pol.Type == rules.PolicyPods:
			proposed = start + pol.Value
		case up:
			proposed = int32(math.Ceil(float64(start) * (1 + float64(pol.Value)/100)))
		case pol.Type == rules.PolicyPods:
			proposed = start - pol.Value
		default:
			proposed = int32(float64(start) * (1 - float64(pol.Value)/100))
		}
		// Max means the most change: the highest limit up, the lowest down.
		mostChange := (s.SelectPolicy == rules.SelectMax) == up
		if i == 0 || (mostChange && proposed > best) || (!mostChange && proposed < best) {
			best = proposed
		}
	}
	if up && cur == 0 {
		// A percentage of nothing is nothing; from zero (minReplicas 0) one pod may start.
		best = max(best, 1)
	}
	return max(best, 0)
}

// changedWithin sums the applied changes within the period: replicas added and removed.
func (p *plan) changedWithin(period time.Duration) (added, removed int32) {
	cutoff := p.now.Add(-period)
	for _, e := range p.in.History.ScaleEvents {
		if !e.Time.After(cutoff) {
			continue
		}
		if e.Delta > 0 {
			added += e.Delta
		} else {
			removed -= e.Delta
		}
	}
	return added, removed
}

func describePolicies(s rules.ScalingRules) string {
	out := s.SelectPolicy + " of"
	for i, pol := range s.Policies {
		if i > 0 {
			out += ","
		}
		unit := " pods"
		if pol.Type == rules.PolicyPercent {
			unit = "%"
		}
		out += " " + num(float64(pol.Value)) + unit + " per " + pol.Period.String()
	}
	return out
}
