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
	// Override is the workload's runtime override, if any (override.go).
	Override *Override
	// Owners names the other autoscalers that own an axis of the workload (owners.go).
	Owners Owners
	// PodLoads are what each pod is busy with (the per-pod metrics), for the choice of
	// the pods a scale-in removes (victims.go); nil when none was measured.
	PodLoads PodLoads
}

// Decide decides for one workload alone (a rate budget it shares is treated as its own).
func Decide(now time.Time, r *rules.Rules, in Input) Decision {
	return DecideAll(now, r, []Input{in})[0]
}

// DecideAll decides for all workloads at time now. Each workload's shape is proposed on
// its own (signals, sizing, class, replicas, concurrency), then guarded (guard.go: the
// safety invariants, whatever proposed the shape); then every shared rate budget caps the
// workloads that draw on it, and concurrency is raised into what is left of a budget.
// Last, on an axis another autoscaler owns, the decision keeps what the workload runs
// (owners.go). The result is in the order of inputs.
func DecideAll(now time.Time, r *rules.Rules, inputs []Input) []Decision {
	plans := make([]*plan, len(inputs))
	for i := range inputs {
		plans[i] = newPlan(now, r, &inputs[i])
		plans[i].decide()
		plans[i].override()
		plans[i].guard()
		plans[i].holdBusyOrdinals()
	}
	room := applyRateBudgets(r, plans)
	for _, p := range plans {
		p.raiseConcurrency(room)
		p.standBack()
		p.victims()
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
	// meanActive is the active jobs averaged over the rate window (averageInFlight).
	meanActive float64
	// conc is the concurrency the fleet runs with now: the state's, or when that is
	// unknown (0: the env var is absent or not managed) the class's.
	conc int
	// classRule names the class rule (ruleCost, ...) that proposed a class change.
	classRule string
	// breaker says why the circuit breaker is open; "" while it is closed.
	breaker string
	// asleep is set when scale to zero leaves the fleet at 0 replicas (activate): then no
	// class change starts it either.
	asleep bool
}

func newPlan(now time.Time, r *rules.Rules, in *Input) *plan {
	p := &plan{now: now, r: r, in: in, w: in.Workload}
	p.d = Decision{
		Workload: in.Workload.Name,
		From:     in.State.Shape,
		To:       in.State.Shape,
		Grades:   map[string]Grade{},
		Metrics:  make(Observations, len(in.Observations)+2), // and the derived ones
		DryRun:   in.Workload.DryRun,
		Owners:   in.Owners,
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
	o, ok := p.usable(metric)
	return o.Value, ok
}

// usable is the metric's observation when it can be used: measured fresh, a finite number
// within its domain, or derived from such (observe, derive); the decision's Metrics hold
// the others too, with why they cannot be.
func (p *plan) usable(metric string) (Observation, bool) {
	o, ok := p.d.Metrics[metric]
	return o, ok && o.usable()
}

func (p *plan) grade(metric string) Grade {
	if g, ok := p.d.Grades[metric]; ok {
		return g
	}
	return Unknown
}

// decide proposes a shape for the workload: the signals, the requirement in slots, the
// class, then the replicas and concurrency in that class. The guard, run later on every
// path, enforces the safety invariants on whatever is proposed here.
func (p *plan) decide() {
	p.observe()
	p.sustain()
	p.measureJobs()
	p.graceCheck()
	p.breaker = p.breakerWhy()
	if p.in.State.RolloutInProgress {
		p.limit(LimitCooldown)
		p.reasonf("a rollout of an earlier change is still in progress; nothing changes until it completes")
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
	to := p.class
	if p.templateOurs() && !p.asleep {
		to = p.chooseClass()
	}
	if p.class == nil || to == p.class {
		p.need = raw
		p.horizontal()
		p.concurrency()
		p.fitConcurrency()
		return
	}
	p.need = raw
	p.recommendation(false) // for the windows, should the change not be applied
	p.need = max(raw, p.recentSlots())
	p.changeClass(to)
}

// recentSlots is the highest replica recommendation within the scale-down window, in
// slots at the current concurrency. On first sight the current count is one (see
// recommendation), so a restart cannot shrink the fleet before the window has passed.
func (p *plan) recentSlots() float64 {
	cutoff := p.now.Add(-p.w.Behavior.ScaleDown.StabilizationWindow.D())
	recs := p.hist.Recommendations
	if len(recs) == 0 {
		recs = []Recommendation{{Time: p.now, Replicas: p.in.State.Replicas}}
	}
	var most int32
	for _, r := range recs {
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
	if to.RateLimitMax != from.RateLimitMax {
		parts = append(parts, fmt.Sprintf("set the rate limit to %d jobs per window (was %d)", to.RateLimitMax, from.RateLimitMax))
	}
	summary := fmt.Sprintf("hold at %d replicas of %s", to.Replicas, to.Class)
	if len(parts) > 0 {
		summary = strings.Join(parts, "; ")
	}
	if len(d.LimitedBy) > 0 {
		summary += " (limited by " + strings.Join(d.LimitedBy, ", ") + ")"
	}
	d.Reasons = append([]string{summary}, d.Reasons...)
	// The numbers of the outcome, from the final decision only.
	if d.Changed() {
		fromCap, toCap := int(from.Replicas)*p.conc, int(to.Replicas)*p.effConc(to)
		d.Reasons = append(d.Reasons, fmt.Sprintf("capacity: %d replicas of %s x concurrency %d = %d slots (was %d x %d = %d)",
			to.Replicas, to.Class, p.effConc(to), toCap, from.Replicas, p.conc, fromCap))
		now, then := p.shapeCost(from), p.shapeCost(to)
		switch {
		case p.classRule == ruleCost && to.Class != from.Class:
			_, alt := p.costMove()
			d.Reasons = append(d.Reasons, fmt.Sprintf("cost: $%s/h instead of $%s/h now; the same %d slots in class %s would cost $%s/h (%s%% less, at least %s%% needed for a class change)",
				num(then), num(now), toCap, from.Class, num(alt), num((1-then/alt)*100), num(*p.w.Vertical.MinSavings*100)))
		case now != then:
			d.Reasons = append(d.Reasons, fmt.Sprintf("cost: $%s/h instead of $%s/h", num(then), num(now)))
		}
	}
	if d.LimitedBy == nil {
		d.LimitedBy = []string{}
	}
	d.History = p.hist
	d.Missing = p.missing
	return d
}
