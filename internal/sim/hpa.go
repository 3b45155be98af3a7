package sim

import (
	"math"
	"slices"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// This file re-implements the Kubernetes HorizontalPodAutoscaler controller (autoscaling/v2,
// kube-controller-manager's pkg/controller/podautoscaler, as of v1.37) for one External
// metric with an AverageValue target, the way an HPA on a queue depth is written:
//
//	metrics:
//	- type: External
//	  external:
//	    metric: {name: queue_depth}
//	    target: {type: AverageValue, averageValue: "<TargetAverageValue>"}
//
// Where each piece comes from in the real controller:
//
//   - The replica count (replica_calculator.go, GetExternalPerPodMetricReplicas): the metric's
//     total is divided by the target per pod and by the target's status.replicas; inside the
//     tolerance band the count is kept, outside it the proposal is ceil(total / target). The
//     controller works in milli-units; so does this (hpaMilli).
//   - Readiness: for an External metric with an AverageValue target there is none. The
//     divisor is status.replicas, every pod of the scale target, ready or not; the
//     unready-pod handling (cpu-initialization-period, initial-readiness-delay, missing pods
//     taken as 0% or 100%) belongs to Resource and Pods metrics, and the ready-pod count to
//     External metrics with a Value target. So ReadyReplicas is never read: pods still
//     starting count as capacity already. status.replicas is taken as the spec count
//     (State.Replicas), which it equals once the ReplicaSet has created the pods.
//   - A missing metric (horizontal.go, computeReplicasForMetrics returns -1): the sync ends
//     with an error, nothing is recorded and the count is kept. The queue is re-added after
//     the fixed sync period (FixedItemIntervalRateLimiter), not backed off.
//   - The reconcile (horizontal.go, reconcileAutoscaler): at 0 replicas scaling is disabled
//     unless the HPA itself scaled to zero (HPAScaleToZero, see HPAConfig.ScaleToZero); above
//     maxReplicas or below minReplicas the count is set to the bound without reading the
//     metric; otherwise the metric's proposal is normalized.
//   - Normalization with spec.behavior (normalizeDesiredReplicasWithBehaviors): the
//     stabilization windows over the recorded unstabilized recommendations
//     (stabilizeRecommendationWithBehaviors), then the rate policies counting this HPA's
//     scale events within each policy's period (convertDesiredReplicasWithBehaviorRate,
//     calculateScaleUpLimitWithScalingRules, calculateScaleDownLimitWithBehaviors), with
//     min/max clamping there. Scale events are stored as storeScaleEvent does, slot reuse
//     included (see hpaStoreEvent): changes made by anyone else are not events.
//   - Normalization without spec.behavior (normalizeDesiredReplicas, HPAConfig.NoBehavior):
//     the highest recommendation within --horizontal-pod-autoscaler-downscale-stabilization,
//     then min/max and the fixed scale-up cap max(2 x current, 4) per sync
//     (convertDesiredReplicasWithRules, calculateScaleUpLimit); no scale events are kept.
//   - The first sync records the current count as a recommendation
//     (recordInitialRecommendation), so a new HPA does not scale down within its first
//     stabilization window.
//
// Times: the controller keeps its recommendations and events in memory with time.Now(), and
// each sync starts one sync period after the previous one ended, so a recommendation or
// event one window (or period) of the simulator's exact grid old is, in a real cluster,
// a little older: out of the window. So it is here, in every comparison (the code's
// legacy path keeps a sample exactly at the cutoff, but no real sample is ever there).

// HPAPolicyType is the unit of an HPAScalingPolicy's Value, as in autoscaling/v2.
type HPAPolicyType string

// The two policy types.
const (
	// HPAPods allows Value pods to be added (or removed) within the period.
	HPAPods HPAPolicyType = "Pods"
	// HPAPercent allows Value percent of the count at the period's start.
	HPAPercent HPAPolicyType = "Percent"
)

// HPASelectPolicy says which of a direction's policies applies, as in autoscaling/v2.
type HPASelectPolicy string

// The selectPolicy values.
const (
	// HPASelectMax takes the policy that allows the most change (the default).
	HPASelectMax HPASelectPolicy = "Max"
	// HPASelectMin takes the policy that allows the least change.
	HPASelectMin HPASelectPolicy = "Min"
	// HPASelectDisabled turns scaling in that direction off.
	HPASelectDisabled HPASelectPolicy = "Disabled"
)

// HPAScalingPolicy is one rate policy: at most Value pods, or Value percent, within Period
// (the API's periodSeconds).
type HPAScalingPolicy struct {
	Type   HPAPolicyType
	Value  int32
	Period time.Duration
}

// HPAScalingRules are one direction's rules (spec.behavior.scaleUp or scaleDown). Fields
// left at their zero value take the API server's defaults, as the v2 defaulting does
// field by field.
type HPAScalingRules struct {
	// StabilizationWindow: nil means 0 for scale-up and the controller's
	// --horizontal-pod-autoscaler-downscale-stabilization (HPAConfig.DownscaleStabilization)
	// for scale-down.
	StabilizationWindow *time.Duration
	// SelectPolicy: "" means HPASelectMax.
	SelectPolicy HPASelectPolicy
	// Policies: empty means the defaults (see DefaultHPABehavior).
	Policies []HPAScalingPolicy
	// Tolerance overrides the controller-wide tolerance for this direction (the
	// HPAConfigurableTolerance field, GA in v1.37); nil keeps HPAConfig.Tolerance.
	Tolerance *float64
}

// HPABehavior is spec.behavior. A nil direction takes that direction's defaults.
type HPABehavior struct {
	ScaleUp   *HPAScalingRules
	ScaleDown *HPAScalingRules
}

// DefaultHPABehavior returns the behavior the API server fills in (pkg/apis/autoscaling/v2
// defaults.go) and the HPA documentation describes: scale-up without stabilization, at most
// max(4 pods, 100%) per 15s; scale-down stabilized over the controller's window (nil here,
// 300s by default), at most 100% per 15s.
func DefaultHPABehavior() HPABehavior {
	up := time.Duration(0)
	return HPABehavior{
		ScaleUp: &HPAScalingRules{
			StabilizationWindow: &up,
			SelectPolicy:        HPASelectMax,
			Policies: []HPAScalingPolicy{
				{Type: HPAPods, Value: 4, Period: 15 * time.Second},
				{Type: HPAPercent, Value: 100, Period: 15 * time.Second},
			},
		},
		ScaleDown: &HPAScalingRules{
			SelectPolicy: HPASelectMax,
			Policies:     []HPAScalingPolicy{{Type: HPAPercent, Value: 100, Period: 15 * time.Second}},
		},
	}
}

// HPAConfig is one HPA object and the controller flags that shape it. Zero values take the
// defaults given per field.
type HPAConfig struct {
	// MinReplicas: 0 means 1 (the API's default), unless ScaleToZero is set.
	MinReplicas int32
	// MaxReplicas is raised to MinReplicas (and to 1) if below: the API rejects such an HPA.
	MaxReplicas int32
	// ScaleToZero makes MinReplicas 0 mean minReplicas: 0, which the API accepts only with
	// the HPAScaleToZero feature gate (alpha since v1.16, beta and on by default in v1.37)
	// and an Object or External metric. Such an HPA scales to 0 when the metric's proposal
	// is 0, and scales back from 0 only if it scaled to 0 itself (the ScaledToZero
	// condition): a target found at 0 (scaled there by hand, or by KEDA) disables it. The
	// normal case, and the one the HPA documentation describes, is MinReplicas >= 1.
	ScaleToZero bool
	// TargetAverageValue is the queue depth wanted per pod. It must be positive (the API
	// rejects others); with any other value the metric never yields a count and the HPA
	// keeps the current one.
	TargetAverageValue float64
	// Tolerance is --horizontal-pod-autoscaler-tolerance; 0 means 0.1.
	Tolerance float64
	// SyncPeriod is --horizontal-pod-autoscaler-sync-period; 0 means 15s.
	SyncPeriod time.Duration
	// DownscaleStabilization is --horizontal-pod-autoscaler-downscale-stabilization; 0
	// means 5m.
	DownscaleStabilization time.Duration
	// Behavior is spec.behavior; nil means DefaultHPABehavior, the behaviour the HPA
	// documentation gives as the default. Beware that a real HPA object written without
	// spec.behavior does not get it: it takes the older path of NoBehavior.
	Behavior *HPABehavior
	// NoBehavior models an HPA object without spec.behavior at all, as KEDA creates unless
	// advanced.horizontalPodAutoscalerConfig.behavior is set. The controller then takes its
	// older path, which differs from the documented defaults: scale-down is stabilized over
	// DownscaleStabilization as usual, but scale-up is capped at max(2 x current, 4) per
	// sync (from 2 replicas: 4, not 6), no scale events are counted, and only the
	// controller-wide Tolerance applies. Behavior is ignored.
	NoBehavior bool
}

// hpaRecommendation is one sync's unstabilized recommendation.
type hpaRecommendation struct {
	at       time.Time
	replicas int32
}

// hpaScaleEvent is a change of the count this HPA made; change is positive in both lists.
// An outdated event is older than its direction's longest policy period and its slot may
// be reused, but until it is, it still counts for any policy whose period reaches it.
type hpaScaleEvent struct {
	at       time.Time
	change   int32
	outdated bool
}

// hpaRules are one direction's rules with every default resolved.
type hpaRules struct {
	window    time.Duration
	selection HPASelectPolicy
	policies  []HPAScalingPolicy
	tolerance float64
	longest   time.Duration // the longest policy period: older events are outdated
}

// HPA is the HorizontalPodAutoscaler controller for one HPA object. It is stateful: it keeps
// its recommendations, its scale events and its ScaledToZero condition between syncs, as
// the controller does in memory. Decide is one sync; call it every Period().
type HPA struct {
	min, max    int32
	scaleToZero bool
	target      float64 // milli-units per pod
	period      time.Duration
	legacy      bool
	downWindow  time.Duration // the controller's flag, for the legacy path
	up, down    hpaRules

	seen         bool
	scaledToZero bool
	recs         []hpaRecommendation
	upEvents     []hpaScaleEvent
	downEvents   []hpaScaleEvent
}

// NewHPA returns an HPA with cfg's defaults filled in and no history.
func NewHPA(cfg HPAConfig) *HPA {
	h := &HPA{
		min:         cfg.MinReplicas,
		max:         cfg.MaxReplicas,
		scaleToZero: cfg.ScaleToZero,
		target:      hpaMilli(cfg.TargetAverageValue),
		period:      cfg.SyncPeriod,
		legacy:      cfg.NoBehavior,
		downWindow:  cfg.DownscaleStabilization,
	}
	if h.min <= 0 && !h.scaleToZero {
		h.min = 1
	}
	h.min = max(h.min, 0)
	h.max = max(h.max, h.min, 1)
	if h.period <= 0 {
		h.period = 15 * time.Second
	}
	if h.downWindow <= 0 {
		h.downWindow = 5 * time.Minute
	}
	tol := cfg.Tolerance
	if tol <= 0 {
		tol = 0.1
	}
	def := DefaultHPABehavior()
	b := def
	if cfg.Behavior != nil && !h.legacy {
		b = *cfg.Behavior
	}
	h.up = resolveHPARules(b.ScaleUp, def.ScaleUp, 0, tol)
	h.down = resolveHPARules(b.ScaleDown, def.ScaleDown, h.downWindow, tol)
	if h.legacy {
		// Without spec.behavior the controller-wide tolerance and window apply.
		h.up.tolerance, h.down.tolerance = tol, tol
		h.down.window = h.downWindow
	}
	return h
}

// resolveHPARules fills in a direction's rules field by field, as the API server's
// defaulting (copyHPAScalingRules) and the controller (maybeInitScaleDownStabilizationWindow)
// do.
func resolveHPARules(r, def *HPAScalingRules, window time.Duration, tol float64) hpaRules {
	out := hpaRules{window: window, selection: def.SelectPolicy, policies: def.Policies, tolerance: tol}
	if r != nil {
		if r.StabilizationWindow != nil {
			out.window = max(*r.StabilizationWindow, 0)
		}
		if r.SelectPolicy != "" {
			out.selection = r.SelectPolicy
		}
		if len(r.Policies) > 0 {
			out.policies = slices.Clone(r.Policies)
		}
		if r.Tolerance != nil {
			out.tolerance = max(*r.Tolerance, 0)
		}
	}
	for _, p := range out.policies {
		out.longest = max(out.longest, p.Period)
	}
	return out
}

// Name is "hpa".
func (h *HPA) Name() string { return "hpa" }

// Period is the controller's sync period.
func (h *HPA) Period() time.Duration { return h.period }

// Decide runs one sync on the queue depth and returns the snapshot's shape with the
// replica count the HPA leaves the target at.
func (h *HPA) Decide(s Snapshot) autoscaler.Shape {
	depth, ok := hpaObserved(s.Obs, rules.QueueDepth)
	out := s.State.Shape
	out.Replicas = h.sync(s.Now, s.State.Replicas, depth, ok)
	return out
}

// sync is one reconcile of the HPA with the metric's total (ok false when the metrics API
// returns no value); it returns the replica count it leaves the target at.
func (h *HPA) sync(now time.Time, current int32, total float64, ok bool) int32 {
	if !h.seen {
		h.seen = true
		h.recs = append(h.recs, hpaRecommendation{at: now, replicas: current})
	}
	var desired int32
	switch {
	case current == 0 && !h.scaledToZero:
		// "scaling is disabled since the replica count of the target is zero"
		return 0
	case current > h.max:
		desired = h.max
	case current < h.min:
		desired = h.min
	default:
		if !ok || !(h.target > 0) {
			// The metric failed: no recommendation is recorded and the count stays.
			return current
		}
		desired = max(h.replicasFor(current, total), 0)
		if h.legacy {
			desired = h.normalizeLegacy(now, current, desired)
		} else {
			desired = h.normalize(now, current, desired)
		}
	}
	if desired != current {
		h.rescaled(now, current, desired)
	}
	return desired
}

// replicasFor is the metric's proposal for the External AverageValue target: the count
// stays within the tolerance band around a usage ratio of 1, and is ceil(total / target)
// outside it.
func (h *HPA) replicasFor(status int32, total float64) int32 {
	usage := hpaMilli(total)
	ratio := usage / (h.target * float64(status)) // +Inf, or NaN at 0/0: never within
	if 1-h.down.tolerance <= ratio && ratio <= 1+h.up.tolerance {
		return status
	}
	return hpaInt32(math.Ceil(usage / h.target))
}

// normalize applies spec.behavior: the stabilization windows, then the rate policies and
// the min/max bounds.
func (h *HPA) normalize(now time.Time, current, desired int32) int32 {
	upCutoff := now.Add(-h.up.window)
	downCutoff := now.Add(-h.down.window)
	up, down := desired, desired
	kept := h.recs[:0]
	for _, r := range h.recs {
		if r.at.After(upCutoff) {
			up = min(up, r.replicas)
		}
		if r.at.After(downCutoff) {
			down = max(down, r.replicas)
		}
		if r.at.After(upCutoff) || r.at.After(downCutoff) {
			kept = append(kept, r)
		}
	}
	// The unstabilized recommendation is what is recorded.
	h.recs = append(kept, hpaRecommendation{at: now, replicas: desired})

	stabilized := min(max(current, up), down)
	switch {
	case stabilized > current:
		limit := max(h.policyLimit(now, current, true), current)
		return min(stabilized, h.max, limit)
	case stabilized < current:
		limit := min(h.policyLimit(now, current, false), current)
		return max(stabilized, h.min, limit)
	}
	return stabilized
}

// normalizeLegacy is the path of an HPA without spec.behavior: the highest recommendation
// within the controller's downscale window, then min, then max and the fixed scale-up cap.
func (h *HPA) normalizeLegacy(now time.Time, current, desired int32) int32 {
	cutoff := now.Add(-h.downWindow)
	stabilized := desired
	kept := h.recs[:0]
	for _, r := range h.recs {
		if r.at.After(cutoff) {
			stabilized = max(stabilized, r.replicas)
			kept = append(kept, r)
		}
	}
	h.recs = append(kept, hpaRecommendation{at: now, replicas: desired})

	limit := min(h.max, hpaInt32(math.Max(2*float64(current), 4)))
	switch {
	case stabilized < h.min:
		return h.min
	case stabilized > limit:
		return limit
	}
	return stabilized
}

// policyLimit is the furthest the count may go now in one direction under that
// direction's policies: the highest count up, the lowest down. Each policy counts from the
// count at its period's start: the current one less this HPA's additions within the
// period, plus its removals. selectPolicy Max takes the policy allowing the most change,
// Min the least, Disabled none.
func (h *HPA) policyLimit(now time.Time, current int32, up bool) int32 {
	r := h.down
	if up {
		r = h.up
	}
	if r.selection == HPASelectDisabled {
		return current
	}
	highest := (r.selection != HPASelectMin) == up
	result := int32(math.MaxInt32)
	if highest {
		result = math.MinInt32
	}
	for _, p := range r.policies {
		start := current - hpaChangeWithin(h.upEvents, now, p.Period) + hpaChangeWithin(h.downEvents, now, p.Period)
		var proposed int32
		switch {
		case p.Type == HPAPods && up:
			proposed = start + p.Value
		case p.Type == HPAPods:
			proposed = start - p.Value
		case p.Type == HPAPercent && up:
			// Rounded up, so that a small count can grow at all.
			proposed = hpaInt32(math.Ceil(float64(start) * (1 + float64(p.Value)/100)))
		case p.Type == HPAPercent:
			// Truncated, as the controller's int32 conversion does.
			proposed = hpaInt32(float64(start) * (1 - float64(p.Value)/100))
		default:
			continue
		}
		if highest {
			result = max(result, proposed)
		} else {
			result = min(result, proposed)
		}
	}
	return result
}

// rescaled records a change this HPA made: its scale event (only with spec.behavior, as
// storeScaleEvent does) and its ScaledToZero condition, set on every rescale.
func (h *HPA) rescaled(now time.Time, from, to int32) {
	h.scaledToZero = h.scaleToZero && from > 0 && to == 0 && h.min == 0
	if h.legacy {
		return
	}
	if to > from {
		h.upEvents = hpaStoreEvent(h.upEvents, now, h.up.longest, to-from)
	} else {
		h.downEvents = hpaStoreEvent(h.downEvents, now, h.down.longest, from-to)
	}
}

// hpaChangeWithin sums the changes of the events within the period before now.
func hpaChangeWithin(events []hpaScaleEvent, now time.Time, period time.Duration) int32 {
	cutoff := now.Add(-period)
	var sum int32
	for _, e := range events {
		if e.at.After(cutoff) {
			sum += e.change
		}
	}
	return sum
}

// hpaStoreEvent stores an event as storeScaleEvent does: the events older than the
// longest policy period of their own direction are marked outdated, and the last outdated
// one is overwritten (else the event is appended). Only that one slot is reused per store,
// and counting ignores the mark, so a longer policy of the other direction may still count
// an outdated event: the controller's quirk, reproduced.
func hpaStoreEvent(events []hpaScaleEvent, now time.Time, longest time.Duration, change int32) []hpaScaleEvent {
	cutoff := now.Add(-longest)
	reuse := -1
	for i := range events {
		if !events[i].at.After(cutoff) {
			events[i].outdated = true
		}
		if events[i].outdated {
			reuse = i
		}
	}
	e := hpaScaleEvent{at: now, change: change}
	if reuse < 0 {
		return append(events, e)
	}
	events[reuse] = e
	return events
}

// hpaObserved is a metric's value as a Prometheus query returns it: Fresh and Stale
// observations carry the value Prometheus returned; a missing one, or one that is not a
// finite number, is no value.
func hpaObserved(obs autoscaler.Observations, name string) (float64, bool) {
	o, ok := obs[name]
	if !ok || o.Status == autoscaler.Missing || math.IsNaN(o.Value) || math.IsInf(o.Value, 0) {
		return 0, false
	}
	return o.Value, true
}

// hpaMilli is v in milli-units, rounded up as resource.Quantity's MilliValue does (less a
// hair, so that 0.3 is 300 and not 301).
func hpaMilli(v float64) float64 { return math.Ceil(v*1000 - 1e-6) }

// hpaInt32 converts a whole float to int32, saturating as the controller does at MaxInt32.
func hpaInt32(v float64) int32 {
	switch {
	case math.IsNaN(v):
		return 0
	case v >= math.MaxInt32:
		return math.MaxInt32
	case v <= math.MinInt32:
		return math.MinInt32
	}
	return int32(v)
}
