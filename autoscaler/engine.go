package autoscaler

import (
	"fmt"
	"maps"
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

// observe keeps the usable observations, estimates and derives what can be, and grades
// every metric that has a threshold.
func (p *plan) observe() {
	st := p.in.State
	for name, o := range p.in.Observations {
		switch {
		case o.usable():
			p.obs[name] = o
		case o.Status == Fresh: // NaN or Inf that slipped through: never a number
			o = Observation{Status: Missing, Reason: fmt.Sprintf("the value %v is not a finite number", o.Value)}
		default:
			o.Value = 0 // a missing or stale value is not shown, nor used
		}
		p.d.Metrics[name] = o
	}
	conc := float64(p.conc)
	ready := float64(st.ReadyReplicas)
	if _, ok := p.obs[rules.Saturation]; !ok {
		if a, ok := p.value(rules.ActiveJobs); ok && ready > 0 {
			p.derive(rules.Saturation, a/(ready*conc))
		}
	}
	if _, ok := p.obs[rules.ActiveJobs]; !ok {
		if s, ok := p.value(rules.Saturation); ok && ready > 0 {
			p.derive(rules.ActiveJobs, s*ready*conc)
		}
	}
	if _, ok := p.obs[rules.WaitSeconds]; !ok {
		p.estimateWait()
	}
	// The mean job duration: Little's law over the jobs in flight when both are measured,
	// otherwise the configured one.
	a, okA := p.value(rules.ActiveJobs)
	t, okT := p.value(rules.Throughput)
	switch jd := p.w.Horizontal.JobDuration; {
	case okA && okT && a > 0 && t > 0 && !math.IsInf(a/t, 0):
		p.duration = a / t
		p.durationWhy = fmt.Sprintf("a mean job duration of %ss (%s active jobs / %s jobs/s, Little's law)", num(p.duration), num(a), num(t))
	case jd != nil:
		p.duration, p.durationWhy = jd.D().Seconds(), fmt.Sprintf("the configured mean job duration %s", jd)
	}
	for _, name := range slices.Sorted(maps.Keys(p.w.Thresholds)) {
		o, ok := p.obs[name]
		if !ok {
			p.d.Grades[name] = Unknown
			continue
		}
		g := GradeValue(o.Value, p.w.Thresholds[name])
		p.d.Grades[name] = g
		if r := gradeReason(name, o, g, p.w.Thresholds[name]); r != "" {
			p.d.Reasons = append(p.d.Reasons, r)
		}
	}
}

func (p *plan) derive(metric string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return // from absurd inputs; a derived value is never a non-number
	}
	o := Observation{Value: v, Status: Fresh, Estimated: true}
	p.obs[metric] = o
	p.d.Metrics[metric] = o
}

// estimateWait applies Little's law to the backlog: wait = queue depth / throughput.
func (p *plan) estimateWait() {
	q, okQ := p.value(rules.QueueDepth)
	t, okT := p.value(rules.Throughput)
	switch {
	case !okQ || !okT:
		return
	case q == 0:
		p.derive(rules.WaitSeconds, 0)
	case t > 0:
		p.derive(rules.WaitSeconds, q/t)
		p.reasonf("no wait-time metric: waitSeconds estimated as %s jobs / %s jobs/s = %ss (Little's law)", num(q), num(t), num(q/t))
	}
}

// sustain tracks how long each condition of the vertical rules has held.
func (p *plan) sustain() {
	cpu, okCPU := p.value(rules.CPU)
	mem, okMem := p.value(rules.Memory)
	th := p.w.Thresholds
	set := func(cond string, holds bool) {
		if !holds {
			delete(p.hist.Since, cond)
			return
		}
		if _, ok := p.hist.Since[cond]; !ok {
			p.hist.Since[cond] = p.now
		}
	}
	set(condCPUHigh, okCPU && cpu >= *th[rules.CPU].Warning)
	set(condMemoryHigh, okMem && mem >= *th[rules.Memory].Warning)
	set(condCPULow, okCPU && cpu < *p.w.Vertical.ScaleDownCPUBelow)
	// Jobs failing for lack of resources: completion rate at warning or worse while CPU or
	// memory is critical.
	failing := p.grade(rules.CompletionRate) != OK && p.grade(rules.CompletionRate) != Unknown &&
		(p.grade(rules.CPU) == Critical || p.grade(rules.Memory) == Critical)
	set(condResourceFailures, failing)
}

// sustained reports whether cond has held for the workload's sustainFor, and for how long.
func (p *plan) sustained(cond string) (bool, time.Duration) {
	since, ok := p.hist.Since[cond]
	if !ok {
		return false, 0
	}
	held := p.now.Sub(since)
	return held >= p.w.Vertical.SustainFor.D(), held
}

// sizeWork computes the concurrency slots the work needs: the largest of the queue term,
// the throughput floor and the wait term, each from fresh metrics only.
func (p *plan) sizeWork() {
	h := p.w.Horizontal
	util, buffer := *h.Utilization, *h.Buffer
	conc := float64(p.conc)
	type term struct {
		slots float64
		why   string
	}
	var terms []term
	if q, ok := p.value(rules.QueueDepth); ok {
		s := q / util * (1 + buffer)
		terms = append(terms, term{s, fmt.Sprintf("queue: %s jobs / (%s concurrency x %s utilization) x (1 + %s buffer) = %s workers",
			num(q), num(conc), num(util), num(buffer), num(s/max(conc, 1)))})
	}
	if t, ok := p.value(rules.Throughput); ok && p.duration > 0 {
		s := t * p.duration / util
		terms = append(terms, term{s, fmt.Sprintf("throughput floor: %s jobs/s x %ss mean duration / (%s concurrency x %s utilization) = %s workers, from %s",
			num(t), num(p.duration), num(conc), num(util), num(s/max(conc, 1)), p.durationWhy)})
	} else if a, ok := p.value(rules.ActiveJobs); ok {
		s := a / util
		terms = append(terms, term{s, fmt.Sprintf("jobs in flight: %s active jobs / (%s concurrency x %s utilization) = %s workers",
			num(a), num(conc), num(util), num(s/max(conc, 1)))})
	}
	if wait, ok := p.value(rules.WaitSeconds); ok && p.grade(rules.WaitSeconds) != OK {
		target := *p.w.Thresholds[rules.WaitSeconds].Target
		q, okQ := p.value(rules.QueueDepth)
		t, _ := p.value(rules.Throughput)
		switch {
		case !okQ || target <= 0:
		case p.duration <= 0:
			p.reasonf("the wait of %ss is past warning, but the mean job duration is unknown (set horizontal.jobDuration), so the wait term is left out", num(wait))
		default:
			rate := t + q/target
			s := rate * p.duration / util
			terms = append(terms, term{s, fmt.Sprintf("wait: draining %s jobs within the %ss target while serving %s jobs/s needs %s jobs/s, x %ss / (%s concurrency x %s utilization) = %s workers",
				num(q), num(target), num(t), num(rate), num(p.duration), num(conc), num(util), num(s/max(conc, 1)))})
		}
	}
	for _, m := range p.replicaInputs() {
		if _, ok := p.obs[m]; !ok {
			why := "missing"
			if o, seen := p.d.Metrics[m]; seen && o.Reason != "" {
				why = string(o.Status) + ": " + o.Reason
			} else if seen {
				why = string(o.Status)
			}
			p.missing = append(p.missing, fmt.Sprintf("%s (%s)", m, why))
		}
	}
	if len(terms) == 0 {
		return
	}
	best := 0
	for i, t := range terms {
		if t.slots > terms[best].slots {
			best = i
		}
		p.d.Reasons = append(p.d.Reasons, t.why)
	}
	p.need, p.hasNeed = terms[best].slots, true
	if len(terms) > 1 {
		p.reasonf("the largest requirement is the %s term", strings.SplitN(terms[best].why, ":", 2)[0])
	}
}

// replicaInputs are the metrics the replica count rests on: the queue depth, and whatever
// else of throughput, active jobs and wait the workload's queries read. While any of them
// is missing or stale the fleet is never scaled down.
func (p *plan) replicaInputs() []string {
	inputs := []string{rules.QueueDepth}
	for _, m := range []string{rules.Throughput, rules.ActiveJobs, rules.WaitSeconds} {
		if _, ok := p.w.Queries[m]; ok {
			inputs = append(inputs, m)
		}
	}
	if _, ok := p.w.Queries[rules.Saturation]; ok && !slices.Contains(inputs, rules.ActiveJobs) {
		inputs = append(inputs, rules.Saturation)
	}
	return inputs
}

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
		return p.gate(to, fmt.Sprintf("class %s is not among the workload's allowed classes; moving to %s", cur.Name, to.Name))
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
		return p.gate(larger[0], fmt.Sprintf("%s for %s (sustainFor %s): stepping up from %s to %s", cond.what, held, p.w.Vertical.SustainFor, cur.Name, larger[0].Name))
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
		return p.gate(to, fmt.Sprintf("%d workers are needed but class %s runs at most %d: stepping up to %s (%d concurrency, at most %d workers)",
			need, cur.Name, p.maxFor(cur), to.Name, g, p.maxFor(to)))
	}
	// 3. Cost: a class that supplies the same capacity for enough less.
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
		return p.gate(best, fmt.Sprintf("class %s supplies the same capacity with %d workers for $%s/h instead of $%s/h with %d %s workers (%s%% less, at least %s%% needed)",
			best.Name, p.replicasAt(best), num(then), num(now), p.replicasAt(cur), cur.Name, num(saving*100), num(*p.w.Vertical.MinSavings*100)))
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

// gate lets a class change through unless the last rollout is too recent.
func (p *plan) gate(to *rules.Class, why string) *rules.Class {
	if p.rolloutAllowed(why) {
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

// changeClass moves the workload to another class, with the replica count recomputed for
// the new class's concurrency. Stabilization and rate policies do not apply: the rollout
// replaces every pod anyway, and the old counts were in other units.
func (p *plan) changeClass(to *rules.Class) {
	g, t := p.concurrencyOf(to)
	cur := p.in.State
	replicas := p.replicasAt(to)
	held := p.heldReplicas(to)
	if !p.hasNeed {
		replicas = held // keep the capacity the fleet has
	}
	if len(p.missing) > 0 && replicas < held {
		p.reasonf("metrics missing (%s): keeping the fleet's %d slots in the new class", strings.Join(p.missing, ", "), int(cur.Replicas)*p.conc)
		replicas = held
	}
	p.d.To = Shape{Replicas: replicas, Class: to.Name, Concurrency: g, TenantConcurrency: t}
	p.unmanagedEnv()
	p.clamp(to)
	p.reasonf("in class %s: %d workers at concurrency %d", to.Name, p.d.To.Replicas, g)
}

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

// breakerOpen reports whether adding workers would feed a failing fleet: a critical
// completion rate, or upstream rate limiting (rateLimited) at warning or worse.
func (p *plan) breakerOpen() bool { return p.breakerWhy() != "" }

func (p *plan) breakerWhy() string {
	var why []string
	if p.grade(rules.CompletionRate) == Critical {
		why = append(why, fmt.Sprintf("completion rate %s is critical", num(p.obs[rules.CompletionRate].Value)))
	}
	if g := p.grade(RateLimited); g == Warning || g == Critical {
		why = append(why, fmt.Sprintf("upstream rate limiting (%s = %s) is %s", RateLimited, num(p.obs[RateLimited].Value), g))
	}
	return strings.Join(why, " and ")
}

// RateLimited is the optional metric of upstream 429 responses per second (rules.RateLimited).
const RateLimited = rules.RateLimited

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
	g := p.d.To.Concurrency
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
