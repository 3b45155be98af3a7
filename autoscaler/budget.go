package autoscaler

import (
	"fmt"
	"math"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// applyRateBudgets keeps every rate budget within what its keys can feed. The workloads
// that draw on a budget are planned at their decided replicas and concurrency; when they
// want more requests per second than keys x safe rps x safety factor, the budget is split
// in proportion to what each wants and each is capped at its share. It returns the rps
// left in each budget that is not used up.
func applyRateBudgets(r *rules.Rules, plans []*plan) map[string]float64 {
	room := map[string]float64{}
	for _, b := range r.RateBudgets {
		capacity := float64(b.Keys) * b.SafeRPS * *b.SafetyFactor
		var members []*plan
		var total float64
		for _, p := range plans {
			if p.w.RateBudget != b.Name {
				continue
			}
			if p.duration <= 0 {
				p.reasonf("rate budget %s is not applied: the mean job duration is unknown (set horizontal.jobDuration)", b.Name)
				continue
			}
			// A workload mid-rollout is a member too: the budget is a cap like maxReplicas.
			members = append(members, p)
			total += p.demand()
		}
		head := fmt.Sprintf("rate budget %s: %d keys x %s rps x %s safety = %s rps", b.Name, b.Keys, num(b.SafeRPS), num(*b.SafetyFactor), num(capacity))
		if len(members) == 0 {
			continue
		}
		if total <= capacity+eps {
			room[b.Name] = capacity - total
			for _, p := range members {
				p.reasonf("%s; the %d workload(s) on it plan %s rps, this one %s rps", head, len(members), num(total), num(p.demand()))
			}
			continue
		}
		var wants []string
		for _, p := range members {
			wants = append(wants, fmt.Sprintf("%s %s", p.w.Name, num(p.demand())))
		}
		for _, p := range members {
			share := capacity * p.demand() / total
			p.capToBudget(head, share, total, strings.Join(wants, ", "))
		}
	}
	return room
}

// demand is the upstream requests per second the planned shape would make:
// slots x requests per job / mean job duration.
func (p *plan) demand() float64 {
	return float64(p.d.To.Replicas) * float64(p.effConc(p.d.To)) * *p.w.RequestsPerJob / p.duration
}

func (p *plan) capToBudget(head string, share, total float64, wants string) {
	rpj := *p.w.RequestsPerJob
	jobsPerSec := share / rpj
	slots := jobsPerSec * p.duration
	conc := p.effConc(p.d.To)
	maxReplicas := int32(math.Floor(slots/float64(conc) + eps))
	p.reasonf("%s, but the workloads on it want %s rps (%s); this one's share is %s rps = %s jobs/s at %s requests per job",
		head, num(total), wants, num(share), num(jobsPerSec), num(rpj))
	if p.d.To.Replicas <= maxReplicas {
		return
	}
	p.limit(LimitRateBudget)
	to := max(maxReplicas, *p.w.MinReplicas)
	if to > maxReplicas {
		p.reasonf("the share feeds %d workers at concurrency %d, fewer than minReplicas %d; minReplicas wins", maxReplicas, conc, *p.w.MinReplicas)
	} else {
		p.reasonf("the share feeds at most %d workers at concurrency %d (%s jobs/s x %ss / %d); %d wanted", maxReplicas, conc, num(jobsPerSec), num(p.duration), conc, p.d.To.Replicas)
	}
	p.d.To.Replicas = to
}
