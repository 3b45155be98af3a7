package autoscaler

import (
	"fmt"
	"slices"
	"strings"
)

// Another autoscaler on the same workload owns the axis it acts on, and workerscale stands
// back on that axis (docs/policy.md, "Who owns which axis"):
//
//   - the horizontal axis is the replica count: an HPA (a KEDA ScaledObject's among them)
//     owns it;
//   - the vertical axis is the pod template workerscale writes: the class's resources and
//     node selector, and the concurrency and rate limiter env vars. A VPA that updates
//     the resources of workerscale's container owns it.
//
// The engine decides the other axis as usual, with the owned one as it is: the decision
// keeps the owned axis's current values and names its owner, so that dry-run, explain and
// the API show what workerscale would do on its own axis. With both axes owned the loop
// writes nothing.

// Owners names the other autoscalers that own an axis of a workload; "" where workerscale
// owns it.
type Owners struct {
	// Horizontal names the HPA that scales the workload's replicas, e.g.
	// "HorizontalPodAutoscaler ns/x (KEDA ScaledObject y)".
	Horizontal string `json:"horizontal,omitempty"`
	// Vertical names the VPA that sets the resources of workerscale's container, e.g.
	// "VerticalPodAutoscaler ns/v (updateMode Auto)".
	Vertical string `json:"vertical,omitempty"`
}

// Both reports whether every axis is another autoscaler's: workerscale writes nothing.
func (o Owners) Both() bool { return o.Horizontal != "" && o.Vertical != "" }

// Any reports whether another autoscaler owns an axis.
func (o Owners) Any() bool { return o.Horizontal != "" || o.Vertical != "" }

// String names the owners and their axes; "" when there is none.
func (o Owners) String() string {
	var parts []string
	if o.Horizontal != "" {
		parts = append(parts, o.Horizontal+" (replicas)")
	}
	if o.Vertical != "" {
		parts = append(parts, o.Vertical+" (class and concurrency)")
	}
	return strings.Join(parts, " and ")
}

// Conflict is the message of the AutoscalerConflict event: which axis is whose, and what
// workerscale still does; "" when no other autoscaler owns an axis.
func (o Owners) Conflict() string {
	switch {
	case o.Both():
		return fmt.Sprintf("%s scales this workload's replicas and %s sets its container's resources: workerscale decides but writes nothing while they do",
			o.Horizontal, o.Vertical)
	case o.Horizontal != "":
		return fmt.Sprintf("%s scales this workload's replicas: workerscale leaves them to it, and still sets the class, concurrency and rate limiter (the pod template)", o.Horizontal)
	case o.Vertical != "":
		return fmt.Sprintf("%s sets this workload's container resources: workerscale leaves the pod template (class, concurrency, rate limiter) to it, and still scales the replicas", o.Vertical)
	}
	return ""
}

// ChangesOwnedAxis names the owner of an axis the decision changes, "" when it changes
// none: the engine never does, and the loop refuses to write one that would.
func (d Decision) ChangesOwnedAxis() string {
	switch {
	case d.Owners.Horizontal != "" && d.To.Replicas != d.From.Replicas:
		return d.Owners.Horizontal
	case d.Owners.Vertical != "" && d.RollsOut():
		return d.Owners.Vertical
	}
	return ""
}

// replicasOurs reports whether workerscale owns the workload's replica count.
func (p *plan) replicasOurs() bool { return p.in.Owners.Horizontal == "" }

// templateOurs reports whether workerscale owns the workload's pod template (class,
// concurrency, rate limiter).
func (p *plan) templateOurs() bool { return p.in.Owners.Vertical == "" }

// pinOwned keeps the owned axes of the proposal at their current values.
func (p *plan) pinOwned() {
	from := p.d.From
	if !p.replicasOurs() {
		p.d.To.Replicas = from.Replicas
	}
	if !p.templateOurs() {
		p.d.To.Class, p.d.To.Concurrency, p.d.To.TenantConcurrency, p.d.To.RateLimitMax =
			from.Class, from.Concurrency, from.TenantConcurrency, from.RateLimitMax
	}
}

// templateChanged reports whether the proposal changes the pod template.
func (p *plan) templateChanged() bool {
	to, from := p.d.To, p.d.From
	return to.Class != from.Class || to.Concurrency != from.Concurrency || to.TenantConcurrency != from.TenantConcurrency || to.RateLimitMax != from.RateLimitMax
}

// guardTemplate is the guard of a workload whose replicas are another autoscaler's: a
// change of the pod template must keep the invariants with the replicas as they are (the
// class's maximum, the capacity floors with their one exception, the breaker), or the
// template stays. No replica count makes up for a class or concurrency that holds fewer
// slots, and none is capped: the bounds on replicas are the other autoscaler's.
func (p *plan) guardTemplate() {
	from := p.d.From
	if p.in.State.RolloutInProgress {
		p.d.To = from
		return
	}
	p.guardConcurrency() // the breaker: per-pod concurrency does not grow
	p.concurrencyBounds()
	p.pinOwned()
	why := p.pinnedShort()
	if why == "" {
		return
	}
	p.hold("%s; the class and concurrency stay", why)
	p.pinOwned()
	if why := p.pinnedShort(); why != "" {
		// What hold kept (concurrency brought back within its bounds) still holds fewer
		// slots than the floor: nothing of the template changes.
		p.reasonf("%s; the pod template stays as it is", why)
		p.d.To = from
	}
}

// pinnedShort says why the proposed template cannot run on the replicas another
// autoscaler holds: a class whose maximum is below them, fewer slots than the floor, or
// more slots than the fleet has while the breaker is open; "" when it can.
func (p *plan) pinnedShort() string {
	from, to := p.d.From, p.d.To
	if !p.templateChanged() {
		return ""
	}
	if c := p.r.Class(to.Class); to.Class != from.Class && from.Replicas > p.maxFor(c) {
		return fmt.Sprintf("class %s runs at most %d workers, fewer than the %d that %s holds", to.Class, p.maxFor(c), from.Replicas, p.in.Owners.Horizontal)
	}
	floor, why, _ := p.floorSlots()
	if slots := int(from.Replicas) * p.effConc(to); slots < floor {
		return fmt.Sprintf("%s: at least %d slots, which the %d replicas %s holds at concurrency %d do not give (%d)",
			why, floor, from.Replicas, p.in.Owners.Horizontal, p.effConc(to), slots)
	}
	if slots := int(from.Replicas) * p.effConc(to); p.breaker != "" && slots > p.fromCapacity() {
		return fmt.Sprintf("circuit breaker: %s; concurrency %d on the %d replicas %s holds would add capacity to a failing fleet (%d slots, %d now)",
			p.breaker, p.effConc(to), from.Replicas, p.in.Owners.Horizontal, slots, p.fromCapacity())
	}
	return ""
}

// standBack is the last stage: on an axis another autoscaler owns, the decision keeps the
// current values, whatever proposed others, and says whose they are.
func (p *plan) standBack() {
	o := p.in.Owners
	from := p.d.From
	p.pinOwned()
	if o.Horizontal != "" {
		// The limits of workerscale's own replica count did not shape the outcome.
		p.d.LimitedBy = slices.DeleteFunc(p.d.LimitedBy, func(l string) bool {
			return l == LimitBehavior || l == LimitMinReplicas || l == LimitMaxReplicas
		})
		p.reasonf("replicas are left to %s: they stay at %d", o.Horizontal, from.Replicas)
	}
	if o.Vertical != "" {
		p.reasonf("the class, concurrency and rate limiter are left to %s, which sets the container's resources: they stay at %s, concurrency %d/%d",
			o.Vertical, from.Class, from.Concurrency, from.TenantConcurrency)
	}
}
