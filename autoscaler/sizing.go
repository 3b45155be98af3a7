package autoscaler

import (
	"fmt"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

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
