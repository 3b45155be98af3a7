package autoscaler

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LoopMetrics are the control loop's own metrics. Known label values start at 0, so a
// rate or an alert sees a series before the first event.
type LoopMetrics struct {
	mu sync.Mutex
	// workloads are the series of each workload seen, kept as numbers (workloadSeries).
	workloads map[string]*workloadSeries

	cycleSeconds prometheus.Histogram
	cycles       *prometheus.CounterVec
	errors       *prometheus.CounterVec
}

// workloadSeries are one workload's values of workerscale_decisions_total,
// workerscale_limits_total, workerscale_workload_class, workerscale_metrics_missing and
// the replica and concurrency gauges, which workloadCollector exposes. A workload has 26
// such series, and a series of client_golang's vectors costs
// some 600 bytes (its labels as protobuf pairs, a created timestamp, its map entry): at
// 1,000 workloads they were the largest part of the heap (BenchmarkResidentMemory). Here
// they are a few hundred bytes a workload; the series are built when scraped.
type workloadSeries struct {
	created   time.Time                      // when the counters were created, their created timestamp
	decisions [len(decisionKinds)][2]float64 // by kind, then applied false and true
	limits    []float64                      // by limitNames
	// extraLimits counts a limit not in limitNames, should a decision name one.
	extraLimits map[string]float64
	current     float64
	desired     float64
	concurrency float64
	curConc     float64
	ready       float64
	missing     float64
	class       [2]string // the current and desired class
}

// NewLoopMetrics creates the loop's metrics and registers them with reg.
func NewLoopMetrics(reg prometheus.Registerer) *LoopMetrics {
	m := &LoopMetrics{
		workloads: map[string]*workloadSeries{},
		cycleSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "workerscale_cycle_duration_seconds", Help: "Time one control-loop cycle took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_cycles_total", Help: "Control-loop cycles, by result (ok or error).",
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_errors_total", Help: "Errors by stage: read, apply, cycle.",
		}, []string{"stage"}),
	}
	if reg != nil {
		reg.MustRegister(m.cycleSeconds, m.cycles, m.errors, newWorkloadCollector(m))
	}
	for _, r := range []string{"ok", "error"} {
		m.cycles.WithLabelValues(r).Add(0)
	}
	for _, s := range []string{"read", "apply", "cycle"} {
		m.errors.WithLabelValues(s).Add(0)
	}
	return m
}

// workloadCollector exposes the workloads' series of workloadSeries, as the vectors that
// held them did: the same names, help, labels, values and created timestamps.
type workloadCollector struct {
	m                                                                *LoopMetrics
	decisions, limits, current, desired, concurrency, curConc, ready *prometheus.Desc
	class, missing                                                   *prometheus.Desc
}

// newWorkloadCollector describes m's per-workload series with the names, help and labels
// they had as vectors.
func newWorkloadCollector(m *LoopMetrics) *workloadCollector {
	workload := []string{"workload"}
	return &workloadCollector{
		m:           m,
		decisions:   prometheus.NewDesc("workerscale_decisions_total", "Decisions by workload and kind: scale_out, scale_in, class_change, hold; and whether applied.", []string{"workload", "kind", "applied"}, nil),
		limits:      prometheus.NewDesc("workerscale_limits_total", "Decisions bounded by each limit.", []string{"workload", "limit"}, nil),
		current:     prometheus.NewDesc("workerscale_current_replicas", "Replicas a workload runs.", workload, nil),
		desired:     prometheus.NewDesc("workerscale_desired_replicas", "Replicas the last decision wants.", workload, nil),
		concurrency: prometheus.NewDesc("workerscale_desired_concurrency", "Concurrency the last decision wants.", workload, nil),
		curConc:     prometheus.NewDesc("workerscale_current_concurrency", "Concurrency (WORKER_CONCURRENCY) a workload runs with.", workload, nil),
		ready:       prometheus.NewDesc("workerscale_ready_replicas", "Ready replicas of a workload.", workload, nil),
		class:       prometheus.NewDesc("workerscale_workload_class", "1 for the class a workload runs (state=current) and the one the last decision wants (state=desired).", []string{"workload", "class", "state"}, nil),
		missing:     prometheus.NewDesc("workerscale_metrics_missing", "Replica inputs (metrics the replica count rests on) missing, stale or invalid in a workload's last decision: no scale-down while above 0.", workload, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *workloadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.decisions, c.limits, c.current, c.desired, c.concurrency, c.curConc, c.ready, c.class, c.missing} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the series of a copy of the values, so that
// the loop does not wait for a scrape.
func (c *workloadCollector) Collect(ch chan<- prometheus.Metric) {
	type named struct {
		name string
		s    workloadSeries
	}
	c.m.mu.Lock()
	all := make([]named, 0, len(c.m.workloads))
	for name, s := range c.m.workloads {
		cp := *s
		cp.limits = slices.Clone(s.limits)
		cp.extraLimits = maps.Clone(s.extraLimits)
		all = append(all, named{name, cp})
	}
	c.m.mu.Unlock()
	applied := [2]string{"false", "true"}
	for _, w := range all {
		for k, kind := range decisionKinds {
			for a := range applied {
				ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(c.decisions, prometheus.CounterValue, w.s.decisions[k][a], w.s.created, w.name, kind, applied[a])
			}
		}
		for i, l := range limitNames {
			ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(c.limits, prometheus.CounterValue, w.s.limits[i], w.s.created, w.name, l)
		}
		for l, v := range w.s.extraLimits {
			ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(c.limits, prometheus.CounterValue, v, w.s.created, w.name, l)
		}
		for _, g := range []struct {
			d *prometheus.Desc
			v float64
		}{{c.current, w.s.current}, {c.desired, w.s.desired}, {c.concurrency, w.s.concurrency}, {c.curConc, w.s.curConc}, {c.ready, w.s.ready}, {c.missing, w.s.missing}} {
			ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, g.v, w.name)
		}
		ch <- prometheus.MustNewConstMetric(c.class, prometheus.GaugeValue, 1, w.name, w.s.class[0], "current")
		ch <- prometheus.MustNewConstMetric(c.class, prometheus.GaugeValue, 1, w.name, w.s.class[1], "desired")
	}
}

// The kinds of workerscale_decisions_total, as indexes of decisionKinds.
const (
	kindScaleOut = iota
	kindScaleIn
	kindClassChange
	kindHold
)

// decisionKinds are the kinds of workerscale_decisions_total.
var decisionKinds = [...]string{kindScaleOut: "scale_out", kindScaleIn: "scale_in", kindClassChange: "class_change", kindHold: "hold"}

// limitNames are the limits a decision can name.
var limitNames = []string{LimitMinReplicas, LimitMaxReplicas, LimitClassMax, LimitRateBudget, LimitBehavior, LimitCooldown, LimitSettling, LimitCircuitBreaker, LimitMissingMetrics, LimitCriticalBacklog, LimitJobsInFlight, LimitBusyOrdinals}

// series returns a workload's series, created with its counters at 0 the first time it is
// seen. m.mu must be held.
func (m *LoopMetrics) series(workload string) *workloadSeries {
	s, ok := m.workloads[workload]
	if !ok {
		s = &workloadSeries{created: time.Now(), limits: make([]float64, len(limitNames))}
		m.workloads[workload] = s
	}
	return s
}

// retain drops the series of workloads not in names.
func (m *LoopMetrics) retain(names map[string]bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.DeleteFunc(m.workloads, func(name string, _ *workloadSeries) bool { return !names[name] })
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
	d := r.Decision
	kind := kindHold
	switch {
	case d.From.Class != d.To.Class:
		kind = kindClassChange
	case d.To.Replicas > d.From.Replicas:
		kind = kindScaleOut
	case d.To.Replicas < d.From.Replicas:
		kind = kindScaleIn
	case d.From.Concurrency != d.To.Concurrency:
		kind = kindClassChange
	}
	applied := 0
	if r.Applied {
		applied = 1
	}
	m.mu.Lock()
	s := m.series(workload)
	s.decisions[kind][applied]++
	s.current, s.desired = float64(d.From.Replicas), float64(d.To.Replicas)
	s.concurrency, s.curConc = float64(d.To.Concurrency), float64(d.From.Concurrency)
	s.ready = float64(ready)
	s.missing = float64(len(d.Missing))
	s.class = [2]string{d.From.Class, d.To.Class}
	for _, l := range d.LimitedBy {
		if i := slices.Index(limitNames, l); i >= 0 {
			s.limits[i]++
			continue
		}
		if s.extraLimits == nil {
			s.extraLimits = map[string]float64{}
		}
		s.extraLimits[l]++
	}
	m.mu.Unlock()
}
