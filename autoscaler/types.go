// Package autoscaler decides, for each worker fleet, how many replicas to run, in which
// instance class and at what concurrency. The decision engine (Decide, DecideAll) is pure
// and deterministic: observations, current state, history and rules in, a decision with
// grades, limits and reasons out. The control loop that feeds it lives here too.
package autoscaler

import (
	"encoding/json"
	"math"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// Status says whether an observation can be used.
type Status string

// The observation statuses. Only Fresh values drive decisions; Missing, Stale and Invalid
// ones are never read as 0.
const (
	Fresh   Status = "fresh"
	Missing Status = "missing"
	Stale   Status = "stale"
	// Invalid is a value outside its metric's domain (a negative count, a completion rate
	// above 1): reported, and treated as missing.
	Invalid Status = "invalid"
)

// Observation is one metric's value for one workload in one cycle.
type Observation struct {
	Value  float64 `json:"value"`
	Status Status  `json:"status"`
	// Reason says why a value is missing or stale ("empty result", "NaN", ...).
	Reason string `json:"reason,omitempty"`
	// Estimated marks a value derived from others (the wait from Little's law).
	Estimated bool `json:"estimated,omitempty"`
}

// MarshalJSON writes the value only when the observation is fresh: a missing or stale
// value is never a number to read.
func (o Observation) MarshalJSON() ([]byte, error) {
	type plain struct {
		Value     *float64 `json:"value,omitempty"`
		Status    Status   `json:"status"`
		Reason    string   `json:"reason,omitempty"`
		Estimated bool     `json:"estimated,omitempty"`
	}
	out := plain{Status: o.Status, Reason: o.Reason, Estimated: o.Estimated}
	if o.usable() {
		out.Value = &o.Value
	}
	return json.Marshal(out)
}

// Value returns a fresh observation of v.
func Value(v float64) Observation { return Observation{Value: v, Status: Fresh} }

// Absent returns a missing observation with its reason.
func Absent(reason string) Observation { return Observation{Status: Missing, Reason: reason} }

// usable reports whether the observation is fresh and finite.
func (o Observation) usable() bool {
	return o.Status == Fresh && !math.IsNaN(o.Value) && !math.IsInf(o.Value, 0)
}

// Observations map metric names (rules.QueueDepth, ...) to this cycle's values. A metric
// that is not in the map is missing.
type Observations map[string]Observation

// CustomClass is the class of a workload whose resources match none of the rules' classes.
// Its class is never changed.
const CustomClass = "custom"

// Shape is what a workload runs as.
type Shape struct {
	Replicas          int32  `json:"replicas"`
	Class             string `json:"class"`
	Concurrency       int    `json:"concurrency"`
	TenantConcurrency int    `json:"tenantConcurrency"`
	// RateLimitMax is the jobs the workload may start per limiter window of its rate
	// budget (env.rateLimitMax); 0 when not managed, or not set in that window.
	RateLimitMax int `json:"rateLimitMax,omitempty"`
}

// State is a workload's current state in the cluster.
type State struct {
	Shape
	ReadyReplicas int32 `json:"readyReplicas"`
	// RolloutInProgress is true while a rollout of an earlier change of ours is not done.
	RolloutInProgress bool `json:"rolloutInProgress"`
	// TerminationGracePeriodSeconds is the pod template's, as Kubernetes defaults it; nil
	// when not known.
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// Pods are the workload's pods, Terminating ones included, when they are known (nil
	// when not read: the simulator, explain). ReadyReplicas never counts a Terminating
	// pod.
	Pods []Pod `json:"pods,omitempty"`
}

// Recommendation is one cycle's unstabilized replica recommendation, kept for the
// stabilization windows.
type Recommendation struct {
	Time     time.Time `json:"time"`
	Replicas int32     `json:"replicas"`
}

// ScaleEvent is an applied change of the replica count, kept for the rate policies.
type ScaleEvent struct {
	Time  time.Time `json:"time"`
	Delta int32     `json:"delta"`
}

// History is what the engine remembers about a workload between cycles. Decide returns the
// next History; the control loop records applied changes with Applied.
type History struct {
	Recommendations []Recommendation `json:"recommendations,omitempty"`
	ScaleEvents     []ScaleEvent     `json:"scaleEvents,omitempty"`
	// LastClassChange is when the class or concurrency was last changed (a rollout).
	LastClassChange time.Time `json:"lastClassChange,omitzero"`
	// Since holds when each sustained condition (cpuHigh, memoryHigh, cpuLow,
	// resourceFailures) began to hold without a break.
	Since map[string]time.Time `json:"since,omitempty"`
	// PerJob is what one running job uses, as measured; nil until measured.
	PerJob *JobResources `json:"perJob,omitempty"`
	// ActiveJobs are the active jobs seen within the rules' rate window, for the mean
	// number in flight over the window that the throughput's rate() covers.
	ActiveJobs []Sample `json:"activeJobs,omitempty"`
}

// Sample is one observed value of a gauge. Its time is kept in Unix nanoseconds, not as a
// time.Time: a history keeps up to 61 samples a workload, 16 bytes each instead of 32
// (BenchmarkResidentMemory).
type Sample struct {
	At    int64   `json:"at"` // Unix nanoseconds
	Value float64 `json:"value"`
}

// SampleAt is the sample of v at t.
func SampleAt(t time.Time, v float64) Sample { return Sample{At: t.UnixNano(), Value: v} }

// Time is when the sample was taken.
func (s Sample) Time() time.Time { return time.Unix(0, s.At) }

// The sustained conditions of History.Since.
const (
	condCPUHigh          = "cpuHigh"
	condMemoryHigh       = "memoryHigh"
	condCPULow           = "cpuLow"
	condResourceFailures = "resourceFailures"
)

// RolloutDeadline bounds how long our own rollout holds the engine, as a Deployment's
// progress deadline (default 600 s) bounds a rollout: a stuck rollout, or pods lost to an
// incident long after it, must not freeze scaling.
const RolloutDeadline = 10 * time.Minute

// MaxEventAge is how long scale events are kept: the longest period a rate policy may have.
const MaxEventAge = 30 * time.Minute

// Applied records that a decision was carried out at t.
func (h History) Applied(t time.Time, d Decision) History {
	if delta := d.To.Replicas - d.From.Replicas; delta != 0 && d.From.Class == d.To.Class {
		kept := h.ScaleEvents[:0:0]
		for _, e := range h.ScaleEvents {
			if t.Sub(e.Time) <= MaxEventAge {
				kept = append(kept, e)
			}
		}
		h.ScaleEvents = append(kept, ScaleEvent{Time: t, Delta: delta})
	}
	if d.RollsOut() {
		h.LastClassChange = t
	}
	if d.ChangesSlots() {
		// A class change starts the replica history afresh: old counts were in other units.
		h.Recommendations, h.ScaleEvents = nil, nil
	}
	return h
}

// Grade is a metric's standing against its thresholds.
type Grade string

// The grades.
const (
	OK       Grade = "ok"
	Warning  Grade = "warning"
	Critical Grade = "critical"
	Unknown  Grade = "unknown"
)

// The limits that can bound a decision.
const (
	LimitMinReplicas    = "minReplicas"
	LimitMaxReplicas    = "maxReplicas"
	LimitClassMax       = "classMax"
	LimitRateBudget     = "rateBudget"
	LimitBehavior       = "behavior"
	LimitCooldown       = "cooldown"
	LimitSettling       = "settling" // a class change waits for a job's CPU and memory to be measured
	LimitCircuitBreaker = "circuitBreaker"
)

// Decision is what the engine decided for one workload, and why.
type Decision struct {
	Workload string `json:"workload"`
	From     Shape  `json:"from"`
	To       Shape  `json:"to"`
	// Grades map each graded metric to its grade.
	Grades map[string]Grade `json:"grades"`
	// Metrics are the observations the decision used, estimated ones included.
	Metrics Observations `json:"metrics"`
	// LimitedBy names the limits that changed the outcome, in the order they applied.
	LimitedBy []string `json:"limitedBy"`
	// Reasons are sentences, with the numbers that produced the decision.
	Reasons []string `json:"reasons"`
	// Warnings are conditions of the workload that the engine cannot change and its owner
	// should (a grace period shorter than the jobs); the loop records each as an event.
	Warnings []string `json:"warnings,omitempty"`
	// Missing names the metrics the replica count rests on that were missing or stale,
	// with why; while any is, the fleet is not scaled down.
	Missing []string `json:"missing,omitempty"`
	// Override is the runtime override that held for this decision, and Engine what the
	// engine alone would have run; both nil when none held.
	Override *Override `json:"override,omitempty"`
	Engine   *Shape    `json:"engine,omitempty"`
	// DryRun is set when the workload's rules say to decide but never write.
	DryRun bool `json:"dryRun,omitempty"`
	// Owners names the other autoscalers that own an axis of the workload; the decision
	// keeps that axis as it is (owners.go).
	Owners Owners `json:"owners,omitzero"`
	// Victims are the pods a scale-in removes and the deletion cost that makes them go
	// first, and the stale costs to remove (victims.go); nil when there are none.
	Victims *Victims `json:"victims,omitempty"`
	// History is the workload's history for the next cycle.
	History History `json:"-"`
}

// Changed reports whether the decision changes anything.
func (d Decision) Changed() bool { return d.From != d.To }

// AssumeSustained returns a history in which every vertical condition that holds for obs
// has held for the workload's sustainFor already, and the jobs in flight have been what
// obs says for an hour (so the CPU per job is measured), for `explain --assume-sustained`.
func AssumeSustained(now time.Time, w *rules.Workload, obs Observations) History {
	p := &plan{now: now, w: w, d: Decision{Grades: map[string]Grade{}, Metrics: Observations{}}, hist: History{Since: map[string]time.Time{}}}
	for k, o := range obs {
		if o.usable() {
			p.d.Metrics[k] = o
			if t, ok := w.Thresholds[k]; ok {
				p.d.Grades[k] = GradeValue(o.Value, t)
			}
		}
	}
	p.sustain()
	p.trackRateLimitOK()
	for k := range p.hist.Since {
		p.hist.Since[k] = now.Add(-w.Vertical.SustainFor.D())
	}
	if a, ok := p.value(rules.ActiveJobs); ok {
		p.hist.PerJob = &JobResources{ActiveSince: now.Add(-time.Hour)}
		p.hist.ActiveJobs = []Sample{SampleAt(now.Add(-time.Minute), a)}
	}
	return p.hist
}

// PodLoad is what one pod of a workload is busy with, from the per-pod metrics
// (rules.PodMetrics); a field is nil when its metric gave no value for the pod.
type PodLoad struct {
	// ActiveJobs is the jobs the pod runs now.
	ActiveJobs *float64 `json:"activeJobs,omitempty"`
	// OldestJobAge is how long, in seconds, its oldest running job has run.
	OldestJobAge *float64 `json:"oldestJobAge,omitempty"`
	// JobsRemaining is the seconds its running jobs are expected to need still, summed,
	// each by the mean duration of its job name as the worker knows it; LastJobRemaining
	// the seconds until the last of them is expected to end.
	JobsRemaining    *float64 `json:"jobsRemaining,omitempty"`
	LastJobRemaining *float64 `json:"lastJobRemaining,omitempty"`
	// CPU is the CPU it uses, in cores.
	CPU *float64 `json:"cpu,omitempty"`
}

// PodLoads map a workload's pod names to what they are busy with.
type PodLoads map[string]PodLoad

// Pod is one pod of a workload, as far as choosing the pods a scale-in removes goes.
type Pod struct {
	Name string `json:"name"`
	// Ready is the pod's Ready condition; Terminating is set once it has a
	// deletionTimestamp: it is leaving, and is capacity no more.
	Ready       bool `json:"ready"`
	Terminating bool `json:"terminating,omitempty"`
	// Group is the ReplicaSet a Deployment's pod belongs to (a rollout has two).
	Group string `json:"group,omitempty"`
	// Ordinal is a StatefulSet pod's ordinal; -1 for a Deployment's.
	Ordinal int `json:"ordinal"`
	// DeletionCost is its controller.kubernetes.io/pod-deletion-cost (0 when unset), and
	// CostOurs is set when workerscale set it (its workerscale.io/deletion-cost mark holds
	// the same value).
	DeletionCost int32 `json:"deletionCost,omitempty"`
	CostOurs     bool  `json:"costOurs,omitempty"`
}
