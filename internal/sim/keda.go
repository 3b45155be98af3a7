package sim

import (
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// This file re-implements KEDA (v2) for a ScaledObject with one Prometheus trigger whose
// query is the queue depth:
//
//	spec:
//	  pollingInterval: 30      # KEDAConfig.PollingInterval
//	  cooldownPeriod: 300      # KEDAConfig.CooldownPeriod
//	  minReplicaCount: 0       # KEDAConfig.MinReplicaCount
//	  maxReplicaCount: 100     # KEDAConfig.MaxReplicaCount
//	  triggers:
//	  - type: prometheus
//	    metricType: AverageValue
//	    metadata: {query: <queue depth>, threshold: "<Threshold>", activationThreshold: "<ActivationThreshold>"}
//
// KEDA runs two loops on it, and both are reproduced:
//
//   - Its scale loop (pkg/scaling/scale_handler.go, startScaleLoop and checkScalers) queries
//     the trigger at once and then every pollingInterval. The trigger is active when the
//     value is above activationThreshold (prometheus_scaler.go, GetMetricsAndActivity). The
//     executor (pkg/scaling/executor/scale_scaledobjects.go, RequestScale) then: from 0
//     replicas, if active, scales to max(minReplicaCount, 1) and stamps lastActiveTime; at
//     more than 0, if active, only stamps lastActiveTime; if not active with
//     minReplicaCount 0, scales to 0 once cooldownPeriod has passed since lastActiveTime
//     (or initialCooldownPeriod since the ScaledObject's creation, if it was never active);
//     if not active below minReplicaCount, scales to minReplicaCount. Between polls a
//     change of the metric is not seen by this loop.
//   - The HPA KEDA creates (controllers/keda/hpa.go) on the External metric its metrics
//     adapter serves: minReplicas max(minReplicaCount, 1), maxReplicas maxReplicaCount,
//     target averageValue threshold, and spec.behavior only if
//     advanced.horizontalPodAutoscalerConfig.behavior is set (KEDAConfig.Behavior); without
//     it the controller takes its older path (see HPAConfig.NoBehavior). It drives 1..N on
//     its own sync period; at 0 replicas it is disabled, so the 0 <-> 1 steps are KEDA's.
//     When it asks, the adapter queries Prometheus then and there
//     (scale_handler.go, GetScaledObjectMetrics), unless the trigger sets useCachedMetrics,
//     in which case it gets the last poll's value.
//
// A metric Prometheus has no sample for is an empty query result, which the Prometheus
// scaler turns into 0 by default (ignoreNullValues: true): KEDA then reads an idle queue,
// deactivates and, after the cooldown, scales to zero. With KEDAConfig.NullIsError the
// empty result is an error instead: the scale loop changes nothing (no fallback is
// configured, KEDA's default) and the HPA, getting no metric, keeps the count.
//
// Not modeled: fallback (off by default), idleReplicaCount, pausing, scalingModifiers, and
// more than one trigger.
//
// Times: KEDA keeps lastActiveTime (and the creation time) in the ScaledObject, whose
// timestamps are stored at whole seconds, and checks "lastActiveTime + cooldown before now"
// at a poll that runs a little after its tick. So at the poll exactly one cooldown after the
// last active poll the real check passes, and so it does here.

// KEDAConfig is one ScaledObject with a Prometheus trigger on the queue depth, and the HPA
// controller flags its HPA runs under. Zero values take the defaults given per field.
type KEDAConfig struct {
	// Threshold is the trigger's threshold: the queue depth wanted per pod (metricType
	// AverageValue). It must be positive.
	Threshold float64
	// ActivationThreshold is the trigger's activationThreshold: the workload is active
	// when the queue depth is above it. Default 0.
	ActivationThreshold float64
	// PollingInterval is pollingInterval; 0 means 30s.
	PollingInterval time.Duration
	// CooldownPeriod is cooldownPeriod; 0 means 300s.
	CooldownPeriod time.Duration
	// InitialCooldownPeriod is initialCooldownPeriod: how long after the ScaledObject's
	// creation (the first Decide) a never-active workload may be scaled to zero. Default 0.
	InitialCooldownPeriod time.Duration
	// MinReplicaCount is minReplicaCount. Default 0.
	MinReplicaCount int32
	// MaxReplicaCount is maxReplicaCount; 0 means 100. It is raised to MinReplicaCount (and
	// to 1) if below.
	MaxReplicaCount int32
	// NullIsError is the trigger's ignoreNullValues: false. By default an empty query
	// result (a metric with no sample) reads as 0.
	NullIsError bool
	// UseCachedMetrics is the trigger's useCachedMetrics: the HPA gets the last poll's
	// value rather than a fresh query.
	UseCachedMetrics bool
	// Behavior is advanced.horizontalPodAutoscalerConfig.behavior; nil means the HPA KEDA
	// creates has no spec.behavior (HPAConfig.NoBehavior).
	Behavior *HPABehavior
	// HPASyncPeriod, HPATolerance and HPADownscaleStabilization are the HPA controller's
	// flags (see HPAConfig): 15s, 0.1 and 5m when 0.
	HPASyncPeriod             time.Duration
	HPATolerance              float64
	HPADownscaleStabilization time.Duration
}

// KEDA is KEDA's operator and metrics adapter for one ScaledObject, with the HPA it creates.
// It is stateful across Decide calls. The scale loop polls every PollingInterval and the
// HPA syncs every HPASyncPeriod, both counted from the first Decide; Period is the step at
// which both fall due exactly (the HPA's sync period with the defaults), and a Decide runs
// whichever is due. Where both are, the HPA goes first and the poll sees the count the HPA
// left: an activation from 0 reaches the HPA at its next sync, a full sync period later
// (in a cluster, where the two loops are not in phase, anywhere from 0 to one period).
type KEDA struct {
	cfg    KEDAConfig
	hpa    *HPA
	period time.Duration

	started    bool
	created    time.Time
	nextSync   time.Time
	nextPoll   time.Time
	lastActive time.Time
	everActive bool

	polled      bool // a poll has run, so the metrics cache holds a record
	cachedValue float64
	cachedOK    bool
}

// NewKEDA returns KEDA for cfg with its defaults filled in and no history.
func NewKEDA(cfg KEDAConfig) *KEDA {
	if cfg.PollingInterval <= 0 {
		cfg.PollingInterval = 30 * time.Second
	}
	if cfg.CooldownPeriod <= 0 {
		cfg.CooldownPeriod = 300 * time.Second
	}
	cfg.InitialCooldownPeriod = max(cfg.InitialCooldownPeriod, 0)
	cfg.MinReplicaCount = max(cfg.MinReplicaCount, 0)
	if cfg.MaxReplicaCount <= 0 {
		cfg.MaxReplicaCount = 100
	}
	cfg.MaxReplicaCount = max(cfg.MaxReplicaCount, cfg.MinReplicaCount, 1)
	if cfg.HPASyncPeriod <= 0 {
		cfg.HPASyncPeriod = 15 * time.Second
	}
	k := &KEDA{
		cfg: cfg,
		hpa: NewHPA(HPAConfig{
			MinReplicas:            max(cfg.MinReplicaCount, 1),
			MaxReplicas:            cfg.MaxReplicaCount,
			TargetAverageValue:     cfg.Threshold,
			Tolerance:              cfg.HPATolerance,
			SyncPeriod:             cfg.HPASyncPeriod,
			DownscaleStabilization: cfg.HPADownscaleStabilization,
			Behavior:               cfg.Behavior,
			NoBehavior:             cfg.Behavior == nil,
		}),
	}
	k.period = kedaStep(cfg.HPASyncPeriod, cfg.PollingInterval)
	return k
}

// kedaStep is the period at which both loops fall due exactly: the greatest common divisor
// of the two, in whole seconds (15s with the defaults, the HPA's sync period).
func kedaStep(a, b time.Duration) time.Duration {
	x, y := max(int64(a.Round(time.Second)/time.Second), 1), max(int64(b.Round(time.Second)/time.Second), 1)
	for y != 0 {
		x, y = y, x%y
	}
	return time.Duration(x) * time.Second
}

// Name is "keda".
func (k *KEDA) Name() string { return "keda" }

// Period is the step at which both KEDA's poll and its HPA's sync fall due: the HPA's sync
// period when the polling interval is a multiple of it, as with the defaults.
func (k *KEDA) Period() time.Duration { return k.period }

// Decide runs whatever is due now, the HPA's sync and KEDA's poll, and returns the
// snapshot's shape with the replica count they leave the target at.
func (k *KEDA) Decide(s Snapshot) autoscaler.Shape {
	if !k.started {
		k.started = true
		k.created, k.nextSync, k.nextPoll = s.Now, s.Now, s.Now
	}
	value, ok := k.query(s.Obs)
	out := s.State.Shape
	if kedaDue(&k.nextSync, s.Now, k.cfg.HPASyncPeriod) {
		hv, hok := value, ok
		if k.cfg.UseCachedMetrics && k.polled {
			hv, hok = k.cachedValue, k.cachedOK
		}
		out.Replicas = k.hpa.sync(s.Now, out.Replicas, hv, hok)
	}
	if kedaDue(&k.nextPoll, s.Now, k.cfg.PollingInterval) {
		out.Replicas = k.poll(s.Now, out.Replicas, value, ok)
		k.polled, k.cachedValue, k.cachedOK = true, value, ok
	}
	return out
}

// query is the Prometheus scaler's reading of the queue depth: ok false is a scaler error.
func (k *KEDA) query(obs autoscaler.Observations) (float64, bool) {
	v, ok := hpaObserved(obs, rules.QueueDepth)
	if !ok {
		// An empty result: 0 with ignoreNullValues (the default), an error without.
		return 0, !k.cfg.NullIsError
	}
	return v, true
}

// poll is one pass of the scale loop (checkScalers, then the executor's RequestScale) on
// the count the target is at; it returns the count it leaves it at.
func (k *KEDA) poll(now time.Time, current int32, value float64, ok bool) int32 {
	minCount := k.cfg.MinReplicaCount
	if ok && value > k.cfg.ActivationThreshold {
		k.lastActive, k.everActive = now, true
		if current == 0 {
			return max(minCount, 1)
		}
		return current
	}
	switch {
	case !ok:
		// A scaler error and no fallback: the ScaledObject turns not ready, nothing scales.
		return current
	case current > 0 && minCount == 0:
		since, wait := k.created, k.cfg.InitialCooldownPeriod
		if k.everActive {
			since, wait = k.lastActive, k.cfg.CooldownPeriod
		}
		if !now.Before(since.Add(wait)) {
			return 0
		}
		return current
	case current < minCount:
		return minCount
	}
	return current
}

// kedaDue reports whether a loop whose next run is *next runs now, and if so moves *next
// to its first tick after now.
func kedaDue(next *time.Time, now time.Time, every time.Duration) bool {
	if now.Before(*next) {
		return false
	}
	for !next.After(now) {
		*next = next.Add(every)
	}
	return true
}
