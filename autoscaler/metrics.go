package autoscaler

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LoopMetrics are the control loop's own metrics. Known label values start at 0, so a
// rate or an alert sees a series before the first event.
type LoopMetrics struct {
	mu      sync.Mutex
	seen    map[string]bool      // workloads whose series exist
	classes map[string][2]string // the current and desired class each workload was shown in

	cycleSeconds prometheus.Histogram
	cycles       *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	current      *prometheus.GaugeVec
	desired      *prometheus.GaugeVec
	class        *prometheus.GaugeVec
	concurrency  *prometheus.GaugeVec
	curConc      *prometheus.GaugeVec
	ready        *prometheus.GaugeVec
	limits       *prometheus.CounterVec
	errors       *prometheus.CounterVec
	missing      *prometheus.GaugeVec
}

// NewLoopMetrics creates the loop's metrics and registers them with reg.
func NewLoopMetrics(reg prometheus.Registerer) *LoopMetrics {
	m := &LoopMetrics{
		cycleSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "workerscale_cycle_duration_seconds", Help: "Time one control-loop cycle took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_cycles_total", Help: "Control-loop cycles, by result (ok or error).",
		}, []string{"result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_decisions_total", Help: "Decisions by workload and kind: scale_out, scale_in, class_change, hold; and whether applied.",
		}, []string{"workload", "kind", "applied"}),
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_current_replicas", Help: "Replicas a workload runs.",
		}, []string{"workload"}),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_desired_replicas", Help: "Replicas the last decision wants.",
		}, []string{"workload"}),
		class: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_workload_class", Help: "1 for the class a workload runs (state=current) and the one the last decision wants (state=desired).",
		}, []string{"workload", "class", "state"}),
		concurrency: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_desired_concurrency", Help: "Concurrency the last decision wants.",
		}, []string{"workload"}),
		curConc: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_current_concurrency", Help: "Concurrency (WORKER_CONCURRENCY) a workload runs with.",
		}, []string{"workload"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_ready_replicas", Help: "Ready replicas of a workload.",
		}, []string{"workload"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_limits_total", Help: "Decisions bounded by each limit.",
		}, []string{"workload", "limit"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_errors_total", Help: "Errors by stage: read, apply, cycle.",
		}, []string{"stage"}),
		missing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workerscale_metrics_missing", Help: "Replica inputs (metrics the replica count rests on) missing, stale or invalid in a workload's last decision: no scale-down while above 0.",
		}, []string{"workload"}),
	}
	if reg != nil {
		reg.MustRegister(m.cycleSeconds, m.cycles, m.decisions, m.current, m.desired, m.class, m.concurrency, m.curConc, m.ready, m.limits, m.errors, m.missing)
	}
	for _, r := range []string{"ok", "error"} {
		m.cycles.WithLabelValues(r).Add(0)
	}
	for _, s := range []string{"read", "apply", "cycle"} {
		m.errors.WithLabelValues(s).Add(0)
	}
	m.seen = map[string]bool{}
	m.classes = map[string][2]string{}
	return m
}

// decisionKinds are the kinds of workerscale_decisions_total.
var decisionKinds = []string{"scale_out", "scale_in", "class_change", "hold"}

// limitNames are the limits a decision can name.
var limitNames = []string{LimitMinReplicas, LimitMaxReplicas, LimitClassMax, LimitRateBudget, LimitBehavior, LimitCooldown, LimitSettling, LimitCircuitBreaker, LimitMissingMetrics, LimitCriticalBacklog}

// start creates a workload's counters at 0 the first time it is seen.
func (m *LoopMetrics) start(workload string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[workload] {
		return
	}
	m.seen[workload] = true
	for _, k := range decisionKinds {
		for _, a := range []string{"true", "false"} {
			m.decisions.WithLabelValues(workload, k, a).Add(0)
		}
	}
	for _, l := range limitNames {
		m.limits.WithLabelValues(workload, l).Add(0)
	}
}

func (m *LoopMetrics) cycle(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.cycleSeconds.Observe(d.Seconds())
	result := "ok"
	if err != nil {
		result = "error"
		m.errors.WithLabelValues("cycle").Inc()
	}
	m.cycles.WithLabelValues(result).Inc()
}

func (m *LoopMetrics) error(stage string) {
	if m != nil {
		m.errors.WithLabelValues(stage).Inc()
	}
}

func (m *LoopMetrics) decision(workload string, r Report, ready int32) {
	if m == nil {
		return
	}
	m.start(workload)
	d := r.Decision
	kind := "hold"
	switch {
	case d.From.Class != d.To.Class:
		kind = "class_change"
	case d.To.Replicas > d.From.Replicas:
		kind = "scale_out"
	case d.To.Replicas < d.From.Replicas:
		kind = "scale_in"
	case d.From.Concurrency != d.To.Concurrency:
		kind = "class_change"
	}
	applied := "false"
	if r.Applied {
		applied = "true"
	}
	m.decisions.WithLabelValues(workload, kind, applied).Inc()
	m.current.WithLabelValues(workload).Set(float64(d.From.Replicas))
	m.desired.WithLabelValues(workload).Set(float64(d.To.Replicas))
	m.concurrency.WithLabelValues(workload).Set(float64(d.To.Concurrency))
	m.curConc.WithLabelValues(workload).Set(float64(d.From.Concurrency))
	m.ready.WithLabelValues(workload).Set(float64(ready))
	m.missing.WithLabelValues(workload).Set(float64(len(d.Missing)))
	// The classes it was shown in last go; a partial-match delete would scan every series.
	m.mu.Lock()
	last := m.classes[workload]
	m.classes[workload] = [2]string{d.From.Class, d.To.Class}
	m.mu.Unlock()
	if last != [2]string{d.From.Class, d.To.Class} {
		m.class.DeleteLabelValues(workload, last[0], "current")
		m.class.DeleteLabelValues(workload, last[1], "desired")
	}
	m.class.WithLabelValues(workload, d.From.Class, "current").Set(1)
	m.class.WithLabelValues(workload, d.To.Class, "desired").Set(1)
	for _, l := range d.LimitedBy {
		m.limits.WithLabelValues(workload, l).Inc()
	}
}
