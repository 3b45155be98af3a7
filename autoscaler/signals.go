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

// observe keeps the usable observations, estimates and derives what can be, and grades
// every metric that has a threshold.
func (p *plan) observe() {
	st := p.in.State
	for _, name := range slices.Sorted(maps.Keys(p.in.Observations)) {
		o := p.in.Observations[name]
		switch {
		case o.Status == Fresh && !o.usable(): // NaN or Inf that slipped through: never a number
			o = Observation{Status: Missing, Reason: fmt.Sprintf("the value %v is not a finite number", o.Value)}
		case o.usable():
			if why := outOfDomain(name, o.Value); why != "" {
				o = Observation{Status: Invalid, Reason: why}
				p.reasonf("%s is invalid: %s; it counts as missing", name, why)
			}
		default:
			o.Value = 0 // a missing or stale value is not shown, nor used
		}
		p.d.Metrics[name] = o
	}
	conc := float64(p.conc)
	ready := float64(st.ReadyReplicas)
	if _, ok := p.usable(rules.Saturation); !ok {
		if a, ok := p.value(rules.ActiveJobs); ok && ready > 0 {
			p.derive(rules.Saturation, a/(ready*conc))
		}
	}
	if _, ok := p.usable(rules.ActiveJobs); !ok {
		if s, ok := p.value(rules.Saturation); ok && ready > 0 {
			p.derive(rules.ActiveJobs, s*ready*conc)
		}
	}
	if _, ok := p.usable(rules.WaitSeconds); !ok {
		p.estimateWait()
	}
	// The mean job duration: Little's law over the jobs in flight when both are measured,
	// otherwise the configured one.
	p.averageInFlight()
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
		o, ok := p.usable(name)
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

// activeJobsPerWindow bounds the active-jobs samples kept over the rate window: the
// window is cut into this many slots (5 s each of the default 5m), and a slot keeps the
// latest of its cycles' samples. Cycles a second apart otherwise kept 300 samples per
// workload, a list that grew for the whole window (BenchmarkResidentMemory); cycles at
// least a slot apart (the usual 15 s) each keep their own, as before. The gauge behind
// the samples changes once a scrape, rarely more often than a slot.
const activeJobsPerWindow = 60

// averageInFlight keeps this cycle's active jobs with those seen within the rate window
// and sets meanActive to their mean: the jobs in flight over the window that the
// throughput is a rate() over (Prometheus' avg_over_time beside rate()).
func (p *plan) averageInFlight() {
	window := p.r.Queries.RateWindow.D()
	cutoff := p.now.Add(-window)
	slot := window / activeJobsPerWindow
	// Sized to fit, not grown by append: the list is kept until the next cycle, and
	// append's spare capacity would be kept with it.
	kept := make([]Sample, 0, len(p.hist.ActiveJobs)+1)
	for _, s := range p.hist.ActiveJobs {
		if t := s.Time(); t.After(cutoff) && t.Before(p.now) {
			kept = append(kept, s)
		}
	}
	a, ok := p.value(rules.ActiveJobs)
	if ok {
		s := SampleAt(p.now, a)
		if n := len(kept); n > 0 && slot > 0 && kept[n-1].Time().Truncate(slot).Equal(p.now.Truncate(slot)) {
			kept[n-1] = s // the slot's latest
		} else {
			kept = append(kept, s)
		}
	}
	p.hist.ActiveJobs = kept
	p.meanActive = 0
	if ok {
		var sum float64
		for _, s := range kept {
			sum += s.Value
		}
		p.meanActive = sum / float64(len(kept))
	}
}

// meanDuration is the mean job duration by Little's law over one window: the active jobs
// averaged over the rate window over the throughput's rate() across it. The seed's formulas
// keep p.duration (this cycle's active jobs over the throughput); the drain sizing and the
// rate budgets, which turn a duration into workers, need one that a single sample of a few
// short jobs in flight does not swing (4 jobs of 0.2 s read as anything from 0.03 s to 0.5 s).
func (p *plan) meanDuration() (float64, string) {
	t, okT := p.value(rules.Throughput)
	if _, okA := p.value(rules.ActiveJobs); okA && okT && p.meanActive > 0 && t > 0 && !math.IsInf(p.meanActive/t, 0) {
		d := p.meanActive / t
		return d, fmt.Sprintf("a mean job duration of %ss (%s active jobs on average over %s / %s jobs/s, Little's law)", num(d), num(p.meanActive), p.r.Queries.RateWindow, num(t))
	}
	return p.duration, p.durationWhy
}

func (p *plan) derive(metric string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return // from absurd inputs; a derived value is never a non-number
	}
	o := Observation{Value: v, Status: Fresh, Estimated: true}
	if was, ok := p.d.Metrics[metric]; ok && was.Status != Fresh {
		o.Reason = fmt.Sprintf("the measured value is %s (%s)", was.Status, was.Reason)
	}
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

// breakerOpen reports whether adding capacity would feed a failing fleet: a critical
// completion rate, upstream rate limiting (rateLimited) at warning or worse, or a fleet
// with replicas but no ready pod that completes nothing (crash-looping workers).
func (p *plan) breakerOpen() bool { return p.breakerWhy() != "" }

func (p *plan) breakerWhy() string {
	var why []string
	if p.grade(rules.CompletionRate) == Critical {
		why = append(why, fmt.Sprintf("completion rate %s is critical", num(p.d.Metrics[rules.CompletionRate].Value)))
	}
	if g := p.grade(RateLimited); g == Warning || g == Critical {
		why = append(why, fmt.Sprintf("upstream rate limiting (%s = %s) is %s", RateLimited, num(p.d.Metrics[RateLimited].Value), g))
	}
	if st := p.in.State; st.Replicas > 0 && st.ReadyReplicas == 0 && !p.completes() {
		why = append(why, fmt.Sprintf("none of the %d replicas is ready and the fleet completes no jobs", st.Replicas))
	}
	return strings.Join(why, " and ")
}

// RateLimited is the optional metric of upstream 429 responses per second (rules.RateLimited).
const RateLimited = rules.RateLimited

// domains are the values each known metric can take; a value outside is invalid, never
// graded, and counts as missing (a negative queue must not read as an empty one).
var domains = map[string]struct {
	lo, hi float64
	what   string
}{
	rules.QueueDepth:     {0, math.Inf(1), "a count of jobs, at least 0"},
	rules.ActiveJobs:     {0, math.Inf(1), "a count of jobs, at least 0"},
	rules.Throughput:     {0, math.Inf(1), "jobs per second, at least 0"},
	rules.WaitSeconds:    {0, math.Inf(1), "seconds, at least 0"},
	rules.RateLimited:    {0, math.Inf(1), "responses per second, at least 0"},
	rules.CPU:            {0, math.Inf(1), "a fraction of the requests, at least 0"},
	rules.Memory:         {0, math.Inf(1), "a fraction of the requests, at least 0"},
	rules.Saturation:     {0, math.Inf(1), "a fraction of the slots, at least 0"},
	rules.CompletionRate: {0, 1, "a fraction of finished jobs, from 0 to 1"},
}

// outOfDomain says why v cannot be a value of metric; "" when it can (or the metric is
// the user's own, whose domain is not known).
func outOfDomain(metric string, v float64) string {
	d, ok := domains[metric]
	if !ok || (v >= d.lo && v <= d.hi) {
		return ""
	}
	return fmt.Sprintf("%s is outside its domain (%s)", num(v), d.what)
}

// completes reports whether the fleet is seen completing jobs: a fresh throughput above 0.
func (p *plan) completes() bool {
	t, ok := p.value(rules.Throughput)
	return ok && t > 0
}
