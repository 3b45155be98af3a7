package autoscaler

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// Input is one workload's input to the engine.
type Input struct {
	Workload     *rules.Workload
	Observations Observations
	State        State
	History      History
}

// Decide decides for one workload alone (a rate budget it shares is treated as its own).
func Decide(now time.Time, r *rules.Rules, in Input) Decision {
	return DecideAll(now, r, []Input{in})[0]
}

// DecideAll decides for all workloads at time now: each workload on its own first, then
// every shared rate budget is split among the workloads that draw on it. The result is in
// the order of inputs.
func DecideAll(now time.Time, r *rules.Rules, inputs []Input) []Decision {
	plans := make([]*plan, len(inputs))
	for i := range inputs {
		plans[i] = newPlan(now, r, &inputs[i])
		plans[i].decide()
	}
	room := applyRateBudgets(r, plans)
	for _, p := range plans {
		p.raiseConcurrency(room)
	}
	out := make([]Decision, len(plans))
	for i, p := range plans {
		out[i] = p.finish()
	}
	return out
}

// eps absorbs floating-point noise before rounding up: 500 / 4 x 1.2 is 150, not 151.
const eps = 1e-9

func ceilInt(v float64) int32 {
	if v <= 0 {
		return 0
	}
	c := math.Ceil(v - eps)
	if c > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(c)
}

// plan is one workload's decision in the making.
type plan struct {
	now  time.Time
	r    *rules.Rules
	in   *Input
	w    *rules.Workload
	obs  Observations // usable observations only
	d    Decision
	hist History

	class *rules.Class // current class, nil when custom
	// need is the concurrency slots the work requires; hasNeed is false when no metric
	// could size it.
	need    float64
	hasNeed bool
	// missing names the replica inputs that are missing or stale: no scale-down then.
	missing []string
	// duration is the mean job duration in seconds, 0 when unknown.
	duration    float64
	durationWhy string
	// conc is the concurrency the fleet runs with now: the state's, or when that is
	// unknown (0: the env var is absent or not managed) the class's.
	conc int
}

func newPlan(now time.Time, r *rules.Rules, in *Input) *plan {
	p := &plan{now: now, r: r, in: in, w: in.Workload, obs: Observations{}}
	p.d = Decision{
		Workload: in.Workload.Name,
		From:     in.State.Shape,
		To:       in.State.Shape,
		Grades:   map[string]Grade{},
		Metrics:  Observations{},
		DryRun:   in.Workload.DryRun,
	}
	p.hist = in.History
	p.hist.Since = map[string]time.Time{}
	for k, v := range in.History.Since {
		p.hist.Since[k] = v
	}
	p.class = r.Class(in.State.Class)
	p.conc = in.State.Concurrency
	if p.conc <= 0 {
		p.conc = 1
		if p.class != nil {
			p.conc, _ = p.concurrencyOf(p.class)
		}
	}
	return p
}

func (p *plan) reasonf(format string, args ...any) {
	p.d.Reasons = append(p.d.Reasons, fmt.Sprintf(format, args...))
}

func (p *plan) limit(name string) {
	if !slices.Contains(p.d.LimitedBy, name) {
		p.d.LimitedBy = append(p.d.LimitedBy, name)
	}
}

func (p *plan) value(metric string) (float64, bool) {
	o, ok := p.obs[metric]
	return o.Value, ok
}

func (p *plan) grade(metric string) Grade {
	if g, ok := p.d.Grades[metric]; ok {
		return g
	}
	return Unknown
}

func (p *plan) decide() {
	p.observe()
	p.sustain()
	if p.in.State.RolloutInProgress {
		p.limit(LimitCooldown)
		p.reasonf("a rollout of an earlier change is still in progress; nothing changes until it completes")
		// min and max hold even then (rules reloaded mid-rollout).
		if p.class != nil || p.in.State.Class == CustomClass {
			p.clamp(p.class)
		}
		return
	}
	p.sizeWork()
	// A class change skips the replica windows, so it is sized on the stabilized
	// requirement: a dip within the scale-down window does not shrink the fleet by way of
	// a class change.
	raw := p.need
	if floor := p.recentSlots(); p.hasNeed && floor > p.need {
		p.need = floor
	}
	to := p.chooseClass()
	if to != p.class && len(p.missing) > 0 && p.heldReplicas(to) > p.maxFor(to) {
		p.reasonf("metrics are missing, and class %s cannot hold the fleet's %d slots within its %d workers; the class stays",
			to.Name, int(p.in.State.Replicas)*p.conc, p.maxFor(to))
		to = p.class
	}
	if p.class == nil || to == p.class {
		p.need = raw
		p.horizontal()
		p.concurrency()
		return
	}
	p.changeClass(to)
}

// recentSlots is the highest replica recommendation within the scale-down window, in
// slots at the current concurrency.
func (p *plan) recentSlots() float64 {
	cutoff := p.now.Add(-p.w.Behavior.ScaleDown.StabilizationWindow.D())
	var most int32
	for _, r := range p.in.History.Recommendations {
		if r.Time.After(cutoff) {
			most = max(most, r.Replicas)
		}
	}
	return float64(most) * float64(p.conc)
}

// finish puts a one-line summary first and completes the decision.
func (p *plan) finish() Decision {
	d := p.d
	from, to := d.From, d.To
	var parts []string
	switch {
	case to.Replicas > from.Replicas:
		parts = append(parts, fmt.Sprintf("scale out from %d to %d replicas", from.Replicas, to.Replicas))
	case to.Replicas < from.Replicas:
		parts = append(parts, fmt.Sprintf("scale in from %d to %d replicas", from.Replicas, to.Replicas))
	}
	if to.Class != from.Class {
		parts = append(parts, fmt.Sprintf("change class from %s to %s", from.Class, to.Class))
	}
	if to.Concurrency != from.Concurrency || to.TenantConcurrency != from.TenantConcurrency {
		parts = append(parts, fmt.Sprintf("set concurrency %d/%d (was %d/%d)", to.Concurrency, to.TenantConcurrency, from.Concurrency, from.TenantConcurrency))
	}
	summary := fmt.Sprintf("hold at %d replicas of %s", to.Replicas, to.Class)
	if len(parts) > 0 {
		summary = strings.Join(parts, "; ")
	}
	if len(d.LimitedBy) > 0 {
		summary += " (limited by " + strings.Join(d.LimitedBy, ", ") + ")"
	}
	d.Reasons = append([]string{summary}, d.Reasons...)
	if d.LimitedBy == nil {
		d.LimitedBy = []string{}
	}
	d.History = p.hist
	d.Missing = p.missing
	return d
}
