package autoscaler

import (
	"fmt"
	"strings"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// term is one way of counting the slots the work needs, with its sentence.
type term struct {
	slots float64
	why   string
}

// sizeWork computes the concurrency slots the work needs from fresh metrics only (sizeTerms),
// then applies scale to zero to them (activate).
func (p *plan) sizeWork() {
	p.sizeTerms()
	p.activate()
}

// sizeTerms computes the concurrency slots the work needs from fresh metrics only: with
// the drain sizing, the jobs in flight and the slots that drain the backlog within the
// target wait; with the seed's, the largest of the queue term, the throughput floor and
// the wait term (the drain sizing falls back to those while the job duration is unknown).
func (p *plan) sizeTerms() {
	var terms []term
	if t, ok := p.drainTerm(); ok {
		terms = []term{t}
	} else {
		terms = p.seedTerms()
	}
	p.stuckJobs()
	p.noteMissing()
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

// activate applies scale to zero (minReplicas 0) to the requirement, as KEDA's activation
// decides 0 <-> 1: a fleet at 0 replicas starts, to at least one replica, only once the
// queue depth is above horizontal.activationQueueDepth, whatever else the metrics say; a
// running fleet keeps one replica while any job is queued or active. So its recommendation
// is 0 only with an empty queue and no active job, and the scale-down window takes it to 0
// once that has lasted the whole window (docs/policy.md, "Scale to zero").
func (p *plan) activate() {
	if *p.w.MinReplicas != 0 {
		return
	}
	threshold := 0.0
	if a := p.w.Horizontal.ActivationQueueDepth; a != nil {
		threshold = *a
	}
	q, okQ := p.value(rules.QueueDepth)
	if p.in.State.Replicas == 0 {
		switch {
		case !okQ:
			p.need, p.hasNeed, p.asleep = 0, true, true
			p.reasonf("scale to zero: the queue depth is not known, so the fleet is not started from 0 replicas")
		case q <= threshold:
			p.need, p.hasNeed, p.asleep = 0, true, true
			p.reasonf("scale to zero: %s queued is not above the activation threshold of %s (horizontal.activationQueueDepth); the fleet stays at 0 replicas", num(q), num(threshold))
		default:
			p.need, p.hasNeed = max(p.need, 1), true
			p.reasonf("activation: %s queued is above the activation threshold of %s (horizontal.activationQueueDepth); the fleet starts from 0 replicas", num(q), num(threshold))
		}
		return
	}
	if !p.hasNeed || ceilInt(p.need/float64(p.conc)) > 0 || !okQ {
		return // a missing queue depth holds the fleet (the guard)
	}
	a, okA := p.value(rules.ActiveJobs)
	if !okA {
		// Jobs in flight cannot be seen: an empty queue alone never stops the fleet.
		p.need = max(p.need, 1)
		p.reasonf("scale to zero: the active jobs are not known, so the fleet keeps 1 replica (an empty queue alone does not show that no job runs)")
		return
	}
	if q > 0 || a > 0 {
		p.need = max(p.need, 1)
		p.reasonf("scale to zero: %s queued and %s active, so the fleet keeps 1 replica until the queue is empty and no job is active", num(q), num(a))
		return
	}
	p.reasonf("scale to zero: the queue is empty and no job is active; 0 replicas once that has lasted the scale-down window (%s)", p.w.Behavior.ScaleDown.StabilizationWindow)
}

// drainTerm is the drain sizing: slots = (arrivals x duration + backlog x min(1, duration
// / target wait)) / utilization x (1 + buffer). The jobs in flight are never counted
// below the active jobs, and a backlog of jobs shorter than the target wait needs only
// the share of a slot that drains it in time, not a slot each.
func (p *plan) drainTerm() (term, bool) {
	h := p.w.Horizontal
	q, okQ := p.value(rules.QueueDepth)
	if h.Sizing != rules.SizingDrain || p.duration <= 0 || !okQ {
		if h.Sizing == rules.SizingDrain && okQ && p.duration <= 0 {
			p.reasonf("the mean job duration is unknown (set horizontal.jobDuration, or query activeJobs and throughput): sized with the seed's queue formula instead")
		}
		return term{}, false
	}
	util, buffer := *h.Utilization, *h.Buffer
	conc := float64(p.conc)
	d, why := p.meanDuration()
	t, _ := p.value(rules.Throughput)
	a := p.meanActive
	inFlight := max(t*d, a)
	target := 10.0
	if th, ok := p.w.Thresholds[rules.WaitSeconds]; ok && th.Target != nil && *th.Target > 0 {
		target = *th.Target
	}
	if jd := h.JobDuration; jd != nil && p.stuck() {
		d = jd.D().Seconds() // stuck jobs do not say how long the queued ones will take
	}
	share := min(1, d/target)
	s := (inFlight + q*share) / util * (1 + buffer)
	return term{s, fmt.Sprintf("drain: (%s jobs in flight (%s jobs/s x %ss, at least the %s active on average over the rate window) + %s queued x min(1, %ss / %ss target wait)) / %s utilization x (1 + %s buffer) = %s slots = %s workers at concurrency %s, from %s",
		num(inFlight), num(t), num(d), num(a), num(q), num(d), num(target), num(util), num(buffer), num(s), num(s/max(conc, 1)), num(conc), why)}, true
}

// stuckJobs reports jobs that are active while nothing completes: a condition to look
// into (a hung upstream, a deadlock), not a reason to multiply the fleet.
func (p *plan) stuckJobs() {
	if p.stuck() {
		t, _ := p.value(rules.Throughput)
		a, _ := p.value(rules.ActiveJobs)
		p.reasonf("jobs look stuck: %s active, %s completed per second; the fleet is sized on the jobs in flight, not on their apparent duration", num(a), num(t))
	}
}

// stuck reports jobs in flight that would take ten times the configured duration to
// finish (ten minutes without one).
func (p *plan) stuck() bool {
	t, okT := p.value(rules.Throughput)
	a, okA := p.value(rules.ActiveJobs)
	limit := 10 * time.Minute
	if jd := p.w.Horizontal.JobDuration; jd != nil {
		limit = 10 * jd.D()
	}
	return okT && okA && a >= 1 && t*limit.Seconds() < a
}

// noteMissing names the replica inputs that are missing, stale or invalid.
func (p *plan) noteMissing() {
	for _, m := range p.replicaInputs() {
		if _, ok := p.usable(m); !ok {
			why := "missing"
			if o, seen := p.d.Metrics[m]; seen && o.Reason != "" {
				why = string(o.Status) + ": " + o.Reason
			} else if seen {
				why = string(o.Status)
			}
			p.missing = append(p.missing, fmt.Sprintf("%s (%s)", m, why))
		}
	}
}

// seedTerms are the first seed's sizing: the queue term (every queued job a slot now), the
// throughput floor (Little's law) and, once the wait is past warning, the wait term.
func (p *plan) seedTerms() []term {
	h := p.w.Horizontal
	util, buffer := *h.Utilization, *h.Buffer
	conc := float64(p.conc)
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
			// Never more slots than there are jobs: a queued job longer than the target
			// wait needs one slot, not duration / target of them.
			share := min(1, p.duration/target)
			s := (t*p.duration + q*share) / util
			terms = append(terms, term{s, fmt.Sprintf("wait: (%s jobs/s x %ss in flight + %s queued x min(1, %ss / %ss target)) / (%s concurrency x %s utilization) = %s workers",
				num(t), num(p.duration), num(q), num(p.duration), num(target), num(conc), num(util), num(s/max(conc, 1)))})
		}
	}
	return terms
}
