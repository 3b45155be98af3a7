package autoscaler

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/workerscale/workerscale/internal/families"
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
// held them did: the same names, help, labels, values and created timestamps. It is a
// families.Source: /metrics writes its families one at a time.
type workloadCollector struct {
	m     *LoopMetrics
	descs map[string]*prometheus.Desc
}

// workloadFamilies are the names, help and labels of the per-workload families, in the
// order they are written.
var workloadFamilies = []struct {
	name, help string
	typ        dto.MetricType
	labels     []string
}{
	{"workerscale_decisions_total", "Decisions by workload and kind: scale_out, scale_in, class_change, hold; and whether applied.", dto.MetricType_COUNTER, []string{"workload", "kind", "applied"}},
	{"workerscale_limits_total", "Decisions bounded by each limit.", dto.MetricType_COUNTER, []string{"workload", "limit"}},
	{"workerscale_current_replicas", "Replicas a workload runs.", dto.MetricType_GAUGE, []string{"workload"}},
	{"workerscale_desired_replicas", "Replicas the last decision wants.", dto.MetricType_GAUGE, []string{"workload"}},
	{"workerscale_desired_concurrency", "Concurrency the last decision wants.", dto.MetricType_GAUGE, []string{"workload"}},
	{"workerscale_current_concurrency", "Concurrency (WORKER_CONCURRENCY) a workload runs with.", dto.MetricType_GAUGE, []string{"workload"}},
	{"workerscale_ready_replicas", "Ready replicas of a workload.", dto.MetricType_GAUGE, []string{"workload"}},
	{"workerscale_workload_class", "1 for the class a workload runs (state=current) and the one the last decision wants (state=desired).", dto.MetricType_GAUGE, []string{"workload", "class", "state"}},
	{"workerscale_metrics_missing", "Replica inputs (metrics the replica count rests on) missing, stale or invalid in a workload's last decision: no scale-down while above 0.", dto.MetricType_GAUGE, []string{"workload"}},
}

// newWorkloadCollector describes m's per-workload series with the names, help and labels
// they had as vectors.
func newWorkloadCollector(m *LoopMetrics) *workloadCollector {
	c := &workloadCollector{m: m, descs: map[string]*prometheus.Desc{}}
	for _, f := range workloadFamilies {
		c.descs[f.name] = prometheus.NewDesc(f.name, f.help, f.labels, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *workloadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range workloadFamilies {
		ch <- c.descs[f.name]
	}
}

// Collect implements prometheus.Collector.
func (c *workloadCollector) Collect(ch chan<- prometheus.Metric) { families.Collect(c, c.descs, ch) }

// Families implements families.Source, from a copy of the values, so that the loop does
// not wait for a scrape. Each family is built as it is yielded; the label pairs and
// created timestamps its series share are built once.
func (c *workloadCollector) Families(want func(string) bool, yield func(*dto.MetricFamily) error) error {
	type named struct {
		name    *dto.LabelPair
		created *timestamppb.Timestamp
		s       workloadSeries
	}
	c.m.mu.Lock()
	all := make([]named, 0, len(c.m.workloads))
	for name, s := range c.m.workloads {
		cp := *s
		cp.limits = slices.Clone(s.limits)
		cp.extraLimits = maps.Clone(s.extraLimits)
		all = append(all, named{families.Label("workload", name), timestamppb.New(s.created), cp})
	}
	c.m.mu.Unlock()
	slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name.GetValue(), b.name.GetValue()) })

	pairs := func(label string, values ...string) []*dto.LabelPair {
		ps := make([]*dto.LabelPair, len(values))
		for i, v := range values {
			ps[i] = families.Label(label, v)
		}
		return ps
	}
	applied := pairs("applied", "false", "true")
	kinds := pairs("kind", decisionKinds[:]...)
	limits := pairs("limit", limitNames...)
	states := pairs("state", "current", "desired")
	gauges := map[string]func(*workloadSeries) float64{
		"workerscale_current_replicas":    func(s *workloadSeries) float64 { return s.current },
		"workerscale_desired_replicas":    func(s *workloadSeries) float64 { return s.desired },
		"workerscale_desired_concurrency": func(s *workloadSeries) float64 { return s.concurrency },
		"workerscale_current_concurrency": func(s *workloadSeries) float64 { return s.curConc },
		"workerscale_ready_replicas":      func(s *workloadSeries) float64 { return s.ready },
		"workerscale_metrics_missing":     func(s *workloadSeries) float64 { return s.missing },
	}
	for _, spec := range workloadFamilies {
		if !want(spec.name) {
			continue
		}
		f := families.New(spec.name, spec.help, spec.typ)
		for i := range all {
			w := &all[i]
			switch spec.name {
			case "workerscale_decisions_total":
				for k := range decisionKinds {
					for a := range applied {
						families.Add(f, w.s.decisions[k][a], w.created, applied[a], kinds[k], w.name)
					}
				}
			case "workerscale_limits_total":
				for l := range limitNames {
					families.Add(f, w.s.limits[l], w.created, limits[l], w.name)
				}
				for _, l := range slices.Sorted(maps.Keys(w.s.extraLimits)) {
					families.Add(f, w.s.extraLimits[l], w.created, families.Label("limit", l), w.name)
				}
			case "workerscale_workload_class":
				for st := range states {
					families.Add(f, 1, nil, families.Label("class", w.s.class[st]), states[st], w.name)
				}
			default:
				families.Add(f, gauges[spec.name](&w.s), nil, w.name)
			}
		}
		if err := yield(f); err != nil {
			return err
		}
	}
	return nil
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
