package autoscaler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// Which pods a scale-in removes (docs/policy.md, "Which pods a scale-in removes"). A
// Deployment's ReplicaSet removes, among its ready pods, those of the lowest
// controller.kubernetes.io/pod-deletion-cost first (after the unscheduled, pending and
// not-ready ones, whatever their cost). Right before a scale-in the engine ranks the ready
// pods by what a SIGTERM would cost (the job-seconds their running jobs are expected to
// need beyond the grace period) and names as many of the idlest as the scale-in removes,
// with a cost below every other pod's; internal/kube writes it on those pods alone and
// removes it once the scale-in is done. A StatefulSet removes its highest ordinals, which
// no cost changes: the reasons say so, and with horizontal.busyOrdinals: hold the
// scale-in stops above the highest busy one.

// LimitBusyOrdinals names, in LimitedBy, a StatefulSet's scale-in held because its
// highest ordinals run jobs that would not finish within the grace period.
const LimitBusyOrdinals = "busyOrdinals"

// DeletionCostAnnotation is the annotation by which the ReplicaSet controller ranks the
// pods a scale-in removes, lowest first.
const DeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// Victims are the pod writes a decision needs: the pods a scale-in is to remove, and the
// deletion cost that makes them go first; and the pods whose cost workerscale set earlier
// and no scale-in needs any more.
type Victims struct {
	// Pods are the pods to remove, the idlest first, and Cost the pod-deletion-cost to
	// set on each.
	Pods []string `json:"pods,omitempty"`
	Cost int32    `json:"cost,omitempty"`
	// Unmark are the pods whose cost workerscale set and that no scale-in needs now.
	Unmark []string `json:"unmark,omitempty"`
}

// Empty reports whether there is nothing to write.
func (v *Victims) Empty() bool { return v == nil || len(v.Pods) == 0 && len(v.Unmark) == 0 }

// PodRank is one pod's place in the choice of the pods a scale-in removes.
type PodRank struct {
	Pod string `json:"pod"`
	// Measured is set when a per-pod metric gave the pod a value; an unmeasured pod ranks
	// last (it may be busy).
	Measured bool `json:"measured"`
	// Beyond is the job-seconds its running jobs are expected to need beyond the grace
	// period (what a removal would kill), Remaining all the job-seconds they are expected
	// to need; Active its running jobs (-1 when not measured) and CPU its cores (-1).
	Beyond    float64 `json:"beyond"`
	Remaining float64 `json:"remaining"`
	Active    float64 `json:"active"`
	CPU       float64 `json:"cpu"`
	// Why says how busy it is, in words.
	Why string `json:"why"`
}

// RankPods ranks pods, idlest first, by what removing each would cost: first the
// job-seconds their running jobs are expected to need beyond the grace period (0 for a
// pod whose jobs would all finish within it), then all the job-seconds they need, then
// their running jobs, then their CPU, then their names. grace and duration (the mean job
// duration; 0 when unknown) are in seconds.
//
// A job's expected remaining time is the mean duration for a job of unknown age. For a
// pod's oldest job, whose age is known when the worker exports it, it is the larger of
// what the mean leaves (duration - age) and its age: a job that has outlived the mean is
// likely a long one (a 3D render among short jobs), and jobs of a spread-out size that
// have run t seconds tend to run about as long again. Without the mean, the oldest job's
// age alone stands for its remaining time. Without a count of running jobs, CPU alone
// ranks the pods.
//
// Where the worker exports its own estimate, by the mean duration of each job's name
// (PodLoad.JobsRemaining, and LastJobRemaining), that estimate replaces the fleet's mean
// and the oldest job's age: a young 3D render among short jobs is known to be long.
func RankPods(pods []string, loads PodLoads, grace, duration float64) []PodRank {
	out := make([]PodRank, 0, len(pods))
	for _, name := range pods {
		out = append(out, rankPod(name, loads[name], grace, duration))
	}
	slices.SortStableFunc(out, func(a, b PodRank) int {
		if a.Measured != b.Measured {
			if a.Measured {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Beyond, b.Beyond), cmp.Compare(a.Remaining, b.Remaining),
			cmp.Compare(a.Active, b.Active), cmp.Compare(a.CPU, b.CPU), strings.Compare(a.Pod, b.Pod))
	})
	return out
}

func rankPod(name string, l PodLoad, grace, duration float64) PodRank {
	r := PodRank{Pod: name, Active: -1, CPU: -1}
	if l.CPU != nil {
		r.Measured, r.CPU = true, *l.CPU
	}
	if l.ActiveJobs == nil {
		switch {
		case r.Measured:
			r.Why = fmt.Sprintf("%s cores of CPU", num(r.CPU))
		default:
			r.Why = "no per-pod value"
		}
		return r
	}
	n := math.Max(0, math.Round(*l.ActiveJobs))
	r.Measured, r.Active = true, n
	if n == 0 {
		r.Why = "idle"
		return r
	}
	jobs := "1 job"
	if n != 1 {
		jobs = fmt.Sprintf("%s jobs", num(n))
	}
	beyond := func(rem float64) float64 { return math.Max(0, rem-grace) }
	switch age := l.OldestJobAge; {
	case l.JobsRemaining != nil:
		r.Remaining, r.Beyond = byName(n, *l.JobsRemaining, l.LastJobRemaining, grace)
		r.Why = jobs
		if l.LastJobRemaining != nil {
			r.Why += fmt.Sprintf(", the last expected to end in %ss", num(math.Max(0, *l.LastJobRemaining)))
		}
		r.Why += " (by the mean duration of each job's name)"
	case age != nil && duration > 0:
		oldest := math.Max(duration-*age, *age)
		r.Remaining = oldest + (n-1)*duration
		r.Beyond = beyond(oldest) + (n-1)*beyond(duration)
		r.Why = fmt.Sprintf("%s, the oldest running for %ss", jobs, num(*age))
	case age != nil:
		r.Remaining, r.Beyond = *age, beyond(*age)
		r.Why = fmt.Sprintf("%s, the oldest running for %ss", jobs, num(*age))
	case duration > 0:
		r.Remaining, r.Beyond = n*duration, n*beyond(duration)
		r.Why = jobs
	default:
		r.Why = jobs
	}
	if r.Remaining > 0 {
		if r.Beyond > 0 {
			r.Why += fmt.Sprintf(", ~%ss of work left, %ss past the %ss grace period", num(r.Remaining), num(r.Beyond), num(grace))
		} else {
			r.Why += fmt.Sprintf(", ~%ss of work left, within the %ss grace period", num(r.Remaining), num(grace))
		}
	}
	return r
}

// byName is what n running jobs are expected to need, in all and beyond the grace
// period, from the worker's own estimates by job name: total, the seconds they need
// summed, and last (nil when not exported), the seconds until the last of them ends. The
// last job needs last; the others share the rest evenly (with no last, all n do), which
// is the least they can need beyond the grace period for that total.
func byName(n, total float64, last *float64, grace float64) (remaining, beyond float64) {
	total = math.Max(0, total)
	past := func(rem float64) float64 { return math.Max(0, rem-grace) }
	if last == nil || n <= 1 {
		if last != nil {
			total = math.Max(total, *last)
		}
		return total, n * past(total/n)
	}
	l := math.Max(0, *last)
	total = math.Max(total, l) // the two gauges are not read at the same instant
	return total, past(l) + (n-1)*past((total-l)/(n-1))
}

// victims chooses the pods the final decision's scale-in removes, and the stale costs
// to remove, into p.d.Victims, with its reasons. Without the workload's pods (the
// simulator, explain) it does nothing.
func (p *plan) victims() {
	pods := p.in.State.Pods
	if pods == nil || !p.replicasOurs() {
		return
	}
	var live, marked []Pod
	for _, pod := range pods {
		if pod.Terminating {
			continue
		}
		live = append(live, pod)
		if pod.CostOurs {
			marked = append(marked, pod)
		}
	}
	from, to := p.d.From.Replicas, p.d.To.Replicas
	v := &Victims{}
	defer func() {
		if !v.Empty() {
			p.d.Victims = v
		}
	}()
	if to >= from || p.d.RollsOut() {
		// Our costs stay while a scale-in we marked for is not done (more pods than the
		// replicas); then they go, so that they rank no later scale-in. A rollout replaces
		// every pod, whatever its cost.
		if int32(len(live)) <= from {
			for _, m := range marked {
				v.Unmark = append(v.Unmark, m.Name)
			}
		}
		return
	}
	k := int(from - to)
	if p.w.Target.Kind == "StatefulSet" {
		p.statefulSetVictims(live, k)
		for _, m := range marked {
			v.Unmark = append(v.Unmark, m.Name)
		}
		return
	}
	for _, m := range marked {
		v.Unmark = append(v.Unmark, m.Name) // put back below for the pods chosen again
	}
	groups := map[string]bool{}
	var ready, notReady []string
	for _, pod := range live {
		groups[pod.Group] = true
		if pod.Ready {
			ready = append(ready, pod.Name)
		} else {
			notReady = append(notReady, pod.Name)
		}
	}
	slices.Sort(notReady)
	switch {
	case len(groups) > 1:
		p.reasonf("which pods the scale-in removes is the Deployment controller's: the pods belong to %d ReplicaSets (a rollout), and it chooses which one shrinks", len(groups))
		return
	case k <= len(notReady):
		p.reasonf("the scale-in removes %d of the pods that are not ready (%s), which the ReplicaSet removes first; no deletion cost is needed", k, strings.Join(notReady, ", "))
		return
	case len(p.in.PodLoads) == 0:
		p.reasonf("no per-pod busy-ness (queries.podTemplates: the workers' %s, or their CPU): the ReplicaSet chooses the pods the scale-in removes (not ready first, then the most recently ready), whether or not they run jobs", rules.WorkerActiveJobsMetric)
		return
	}
	need := k - len(notReady)
	grace, duration := p.graceSeconds(), p.victimDuration()
	ranks := RankPods(ready, p.in.PodLoads, grace, duration)
	need = min(need, len(ranks)) // fewer pods than replicas: the missing ones go first
	chosen := ranks[:need]
	lowest := int32(0)
	for _, pod := range live {
		if pod.Ready && !pod.CostOurs && !slices.ContainsFunc(chosen, func(r PodRank) bool { return r.Pod == pod.Name }) {
			lowest = min(lowest, pod.DeletionCost)
		}
	}
	v.Cost = lowest - 1
	if lowest == math.MinInt32 {
		v.Cost = lowest
	}
	var names, said []string
	for _, r := range chosen {
		names = append(names, r.Pod)
		said = append(said, r.Pod+" ("+r.Why+")")
		v.Unmark = slices.DeleteFunc(v.Unmark, func(n string) bool { return n == r.Pod })
	}
	v.Pods = names
	kept := make([]string, 0, len(ranks)-need)
	for _, r := range ranks[need:] {
		kept = append(kept, r.Pod+" ("+r.Why+")")
	}
	how := "expected job-seconds past the grace period, then job-seconds left, running jobs and CPU"
	if notReady != nil {
		p.reasonf("the scale-in removes the pods that are not ready first (%s), as the ReplicaSet does", strings.Join(notReady, ", "))
	}
	p.reasonf("removing pods %s: the idlest by %s; they get pod-deletion-cost %d so that the ReplicaSet removes them first; kept: %s",
		strings.Join(said, ", "), how, v.Cost, strings.Join(kept, ", "))
}

// statefulSetVictims states that a StatefulSet's scale-in removes its k highest
// ordinals, which no deletion cost changes.
func (p *plan) statefulSetVictims(live []Pod, k int) {
	top := highestOrdinals(live, k)
	var names []string
	for _, pod := range top {
		names = append(names, pod.Name)
	}
	p.reasonf("a StatefulSet's scale-in removes its highest ordinals (%s); no deletion cost chooses others", strings.Join(names, ", "))
}

// highestOrdinals are the k pods of the highest ordinals.
func highestOrdinals(live []Pod, k int) []Pod {
	live = slices.Clone(live)
	slices.SortFunc(live, func(a, b Pod) int { return cmp.Compare(b.Ordinal, a.Ordinal) })
	return live[:max(0, min(k, len(live)))]
}

// holdBusyOrdinals is, for a StatefulSet with horizontal.busyOrdinals: hold, the guard's
// last step: a scale-in stops above the highest of the ordinals it would remove whose
// jobs would not finish within the grace period (or that is not measured), never above
// the current count, maxReplicas or the class maximum. The rate budgets, after it, still
// cap the result.
func (p *plan) holdBusyOrdinals() {
	if p.w.Target.Kind != "StatefulSet" || p.w.Horizontal.BusyOrdinals != rules.BusyOrdinalsHold ||
		!p.replicasOurs() || p.in.State.Pods == nil || p.d.To.Replicas >= p.d.From.Replicas || p.d.RollsOut() {
		return
	}
	if len(p.in.PodLoads) == 0 {
		p.reasonf("horizontal.busyOrdinals is hold, but no per-pod busy-ness is measured: the scale-in goes ahead")
		return
	}
	var live []Pod
	for _, pod := range p.in.State.Pods {
		if !pod.Terminating {
			live = append(live, pod)
		}
	}
	grace, duration := p.graceSeconds(), p.victimDuration()
	keep := p.d.To.Replicas
	var busy []string
	for _, pod := range highestOrdinals(live, int(p.d.From.Replicas-p.d.To.Replicas)) {
		r := rankPod(pod.Name, p.in.PodLoads[pod.Name], grace, duration)
		l := p.in.PodLoads[pod.Name]
		if !r.Measured || r.Beyond > 0 || (r.Active > 0 && duration <= 0 && l.JobsRemaining == nil) {
			keep = max(keep, int32(pod.Ordinal)+1)
			busy = append(busy, pod.Name+" ("+r.Why+")")
		}
	}
	if keep <= p.d.To.Replicas {
		return
	}
	keep = min(keep, p.d.From.Replicas, max(p.d.To.Replicas, p.maxFor(p.r.Class(p.d.To.Class))))
	if keep <= p.d.To.Replicas {
		p.reasonf("horizontal.busyOrdinals is hold, but maxReplicas forces the scale-in")
		return
	}
	p.limit(LimitBusyOrdinals)
	p.reasonf("horizontal.busyOrdinals is hold: %s would not finish within the grace period, so the scale-in stops at %d replicas rather than %d",
		strings.Join(busy, ", "), keep, p.d.To.Replicas)
	p.d.To.Replicas = keep
}

// graceSeconds is the pods' grace period in seconds (Kubernetes' default when unknown).
func (p *plan) graceSeconds() float64 {
	if g := p.in.State.TerminationGracePeriodSeconds; g != nil {
		return float64(*g)
	}
	return float64(TerminationGracePeriodSecondsDefault)
}

// victimDuration is the mean job duration the ranking uses, 0 when unknown.
func (p *plan) victimDuration() float64 {
	d, _ := p.meanDuration()
	if d <= 0 || math.IsInf(d, 0) || math.IsNaN(d) {
		return 0
	}
	return d
}

// leavingJobs is the jobs running on Terminating pods, as the per-pod metric counts them:
// they are finishing on capacity already leaving, and keep no slot of the fleet.
func (p *plan) leavingJobs() (jobs float64, pods []string) {
	for _, pod := range p.in.State.Pods {
		if !pod.Terminating {
			continue
		}
		if l, ok := p.in.PodLoads[pod.Name]; ok && l.ActiveJobs != nil && *l.ActiveJobs > 0 {
			jobs += *l.ActiveJobs
			pods = append(pods, pod.Name)
		}
	}
	return jobs, pods
}
