// Package sim simulates a fleet of queue workers under a recorded or synthetic arrival
// trace, and compares scaling policies on the same arrivals: workerscale's engine, faithful
// re-implementations of the HPA and of KEDA's Prometheus scaler, a static fleet and a cost
// oracle. Every policy sees only what Prometheus would show it. The simulation is
// deterministic for a given seed.
package sim

import (
	"time"

	"github.com/workerscale/workerscale/autoscaler"
)

// Snapshot is what a policy sees when it decides: the workload's metrics as Prometheus
// would return them (scraped at an interval, counters through rate() over a window, so
// with their lag), and the workload's state as the API server reports it.
type Snapshot struct {
	Now time.Time
	// Obs holds the rules' metric names (rules.QueueDepth, rules.ActiveJobs,
	// rules.Throughput, rules.CompletionRate, rules.CPU, rules.Memory, rules.RateLimited);
	// a metric Prometheus has no sample for yet is absent.
	Obs autoscaler.Observations
	// State is the spec replica count, the ready replicas, the class and concurrency.
	State autoscaler.State
}

// Policy decides a workload's shape from what it observes.
type Policy interface {
	// Name is the policy's name in reports ("workerscale", "hpa", "keda", "static").
	Name() string
	// Period is how often the policy decides: the HPA's sync period, KEDA's polling
	// interval, workerscale's rules interval.
	Period() time.Duration
	// Decide returns the shape to run from now on. Baselines change only Replicas.
	Decide(s Snapshot) autoscaler.Shape
}

// DeletionCoster is a policy that chooses which pods its scale-ins remove, as workerscale
// does by setting controller.kubernetes.io/pod-deletion-cost right before one. The HPA and
// KEDA cannot: their scale-ins remove pods in the ReplicaSet's order. A scale-in of a
// DeletionCoster removes the pods that are not ready first, as the ReplicaSet does, then
// the ready ones in the order of autoscaler.RankPods (the engine's own ranking), fed with
// what the controller reads: each pod's running jobs, the age of the oldest of them and
// the worker's estimate of their remaining seconds by their types' mean durations, as
// last scraped, the grace period, and MeanJobDuration.
type DeletionCoster interface {
	// MeanJobDuration is the mean job duration, in seconds, that the policy's last
	// decision measured; 0 when it measured none.
	MeanJobDuration() float64
}
