package autoscaler

import (
	"fmt"
	"strings"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// Override is a runtime override of a workload's replicas and concurrency, set through
// the API (the second seed's POST /workers/concurrency) or by an alert, and stored on the
// workload so that it survives restarts and failovers. While it holds, the decision runs
// the override's values in the workload's current class, and the guards still apply: an
// override never takes a workload past its bounds, its rate budget or its windows.
type Override struct {
	Replicas    *int32 `json:"replicas,omitempty"`
	Concurrency *int   `json:"concurrency,omitempty"`
	// Expires is when the override lapses by itself; zero is never.
	Expires time.Time `json:"expires,omitzero"`
	// By is who set it: "api", or the alert ("alert <name> <fingerprint>").
	By  string    `json:"by"`
	Set time.Time `json:"set"`
	// Alerts are the alert firings (fingerprint@startsAt) already acted on, so that a
	// repeated notification does not ratchet the workload further.
	Alerts []string `json:"alerts,omitempty"`
}

// Active reports whether the override sets anything and has not expired at now.
func (o *Override) Active(now time.Time) bool {
	return o != nil && (o.Replicas != nil || o.Concurrency != nil) && (o.Expires.IsZero() || now.Before(o.Expires))
}

func (o *Override) String() string {
	var parts []string
	if o.Replicas != nil {
		parts = append(parts, fmt.Sprintf("%d replicas", *o.Replicas))
	}
	if o.Concurrency != nil {
		parts = append(parts, fmt.Sprintf("concurrency %d", *o.Concurrency))
	}
	s := strings.Join(parts, ", ")
	if !o.Expires.IsZero() {
		s += " until " + o.Expires.UTC().Format(time.RFC3339)
	}
	return s + " (set by " + o.By + ")"
}

// override replaces the engine's proposal with the override's values, in the current
// class; the guard stage runs after it. The engine's own proposal is kept in the decision.
// A value on an axis another autoscaler owns is not applied (CheckOverride refuses it; an
// override stored before the other autoscaler came is left, and acts again once it goes).
func (p *plan) override() {
	o := p.in.Override
	if o == nil || (o.Replicas == nil && o.Concurrency == nil) {
		return
	}
	if o.Active(p.now) {
		o = p.ownedOverride(o)
		if o == nil {
			return
		}
	}
	if !o.Active(p.now) {
		p.reasonf("the override of %s expired at %s; the engine decides", o, o.Expires.UTC().Format(time.RFC3339))
		// The concurrency it set goes back to the configured value (replicas are the
		// engine's anyway).
		if o.Concurrency != nil && p.class != nil && *p.w.Env.Concurrency != "" && p.templateOurs() && p.d.To.Class == p.d.From.Class && p.d.To.Concurrency == *o.Concurrency {
			if g, tenant := p.concurrencyOf(p.class); g != p.d.To.Concurrency {
				p.reasonf("the override's concurrency %d goes back to the configured %d", p.d.To.Concurrency, g)
				p.d.To.Concurrency, p.d.To.TenantConcurrency = g, max(1, min(tenant, g))
				if p.hasNeed {
					p.d.To.Replicas = max(ceilInt(p.need/float64(g)), *p.w.MinReplicas)
				}
			}
		}
		return
	}
	engine := p.d.To
	p.d.Engine = &engine
	p.d.Override = o
	from := p.d.From
	to := Shape{Replicas: from.Replicas, Class: from.Class, Concurrency: from.Concurrency, TenantConcurrency: from.TenantConcurrency, RateLimitMax: engine.RateLimitMax}
	if engine.Class == from.Class {
		// In the same class, the concurrency the override does not set is the engine's.
		to.Concurrency, to.TenantConcurrency = engine.Concurrency, engine.TenantConcurrency
	}
	if o.Concurrency != nil && p.class != nil && *p.w.Env.Concurrency != "" {
		to.Concurrency = *o.Concurrency
		_, tenant := p.concurrencyOf(p.class)
		if to.TenantConcurrency <= 0 {
			to.TenantConcurrency = tenant
		}
		to.TenantConcurrency = max(1, min(to.TenantConcurrency, to.Concurrency))
	}
	switch {
	case o.Replicas != nil:
		to.Replicas = *o.Replicas
	case p.hasNeed:
		// The engine's requirement in slots, at the override's concurrency.
		to.Replicas = max(ceilInt(p.need/float64(p.effConc(to))), *p.w.MinReplicas)
	}
	p.d.To = to
	p.reasonf("override: %s; the engine alone would run %s", o, shapeString(engine))
}

// ownedOverride is the part of an active override on the axes workerscale owns: nil
// when nothing of it is, each value left out said why.
func (p *plan) ownedOverride(o *Override) *Override {
	kept := *o
	if o.Replicas != nil && !p.replicasOurs() {
		p.reasonf("the override's %d replicas are not applied: replicas are left to %s", *o.Replicas, p.in.Owners.Horizontal)
		kept.Replicas = nil
	}
	if o.Concurrency != nil && !p.templateOurs() {
		p.reasonf("the override's concurrency %d is not applied: the pod template is left to %s", *o.Concurrency, p.in.Owners.Vertical)
		kept.Concurrency = nil
	}
	if kept.Replicas == nil && kept.Concurrency == nil {
		return nil
	}
	if kept.Replicas == o.Replicas && kept.Concurrency == o.Concurrency {
		return o
	}
	return &kept
}

// overridesConcurrency reports whether an override holds the concurrency now: no raise,
// recovery or fit changes it then.
func (p *plan) overridesConcurrency() bool {
	o := p.in.Override
	return o.Active(p.now) && o.Concurrency != nil && p.templateOurs()
}

// OverrideError is why an override is refused, naming the field it is about.
type OverrideError struct {
	Field, Msg string
}

func (e *OverrideError) Error() string { return e.Field + ": " + e.Msg }

// CheckOverride reports whether override o can hold for the workload of in at now: its
// concurrency within the workload's bounds and managed, no value on an axis another
// autoscaler owns (in.Owners), and its values kept as they are by every guard and limit
// (bounds, class maximum, rate budget, windows, breaker). It decides
// with o in place, as the next cycle will, and refuses with the limits that would change
// it.
func CheckOverride(now time.Time, r *rules.Rules, in Input, o *Override) error {
	w := in.Workload
	if o.Replicas == nil && o.Concurrency == nil {
		return &OverrideError{Field: "replicas", Msg: "an override sets replicas, concurrency or both"}
	}
	if !o.Expires.IsZero() && !now.Before(o.Expires) {
		return &OverrideError{Field: "expires", Msg: "is not in the future"}
	}
	if o.Replicas != nil && *o.Replicas < 0 {
		return &OverrideError{Field: "replicas", Msg: fmt.Sprintf("must not be negative, got %d", *o.Replicas)}
	}
	if owner := in.Owners.Horizontal; o.Replicas != nil && owner != "" {
		return &OverrideError{Field: "replicas", Msg: fmt.Sprintf("the replicas of workload %s are left to %s, which scales it; workerscale does not write them while it does", w.Name, owner)}
	}
	if owner := in.Owners.Vertical; o.Concurrency != nil && owner != "" {
		return &OverrideError{Field: "concurrency", Msg: fmt.Sprintf("the pod template of workload %s (class, concurrency) is left to %s, which sets its container's resources; workerscale does not write it while it does", w.Name, owner)}
	}
	if c := o.Concurrency; c != nil {
		class := r.Class(in.State.Class)
		switch {
		case *w.Env.Concurrency == "":
			return &OverrideError{Field: "concurrency", Msg: fmt.Sprintf("workload %s has no concurrency env var (env.concurrency) for workerscale to write", w.Name)}
		case class == nil:
			return &OverrideError{Field: "concurrency", Msg: fmt.Sprintf("workload %s runs no class of the rules (%s), so its concurrency is not changed", w.Name, in.State.Class)}
		}
		lo, hi := 1, 0
		if m := w.Concurrency.Min; m != nil {
			lo = *m
		}
		g, _ := ClassConcurrency(w, class)
		hi = g
		if m := w.Concurrency.Max; m != nil {
			hi = max(hi, *m)
		}
		if *c < lo || *c > hi {
			return &OverrideError{Field: "concurrency", Msg: fmt.Sprintf("%d is outside [%d, %d], the bounds of workload %s in class %s (concurrency.min, and the larger of concurrency.max and the class's)", *c, lo, hi, w.Name, class.Name)}
		}
	}
	in.Override = o
	d := Decide(now, r, in)
	var why []string
	if o.Replicas != nil && d.To.Replicas != *o.Replicas {
		why = append(why, fmt.Sprintf("replicas %d would be %d", *o.Replicas, d.To.Replicas))
	}
	if o.Concurrency != nil && d.To.Concurrency != *o.Concurrency {
		why = append(why, fmt.Sprintf("concurrency %d would be %d", *o.Concurrency, d.To.Concurrency))
	}
	if len(why) == 0 {
		return nil
	}
	field := "replicas"
	if o.Replicas == nil || d.To.Replicas == *o.Replicas {
		field = "concurrency"
	}
	limits := "its limits"
	if len(d.LimitedBy) > 0 {
		limits = strings.Join(d.LimitedBy, ", ")
	}
	return &OverrideError{Field: field, Msg: fmt.Sprintf("%s (limited by %s): %s", strings.Join(why, ", "), limits, strings.Join(d.Reasons, "; "))}
}
