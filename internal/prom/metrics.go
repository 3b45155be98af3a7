package prom

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/workerscale/workerscale/internal/families"
	"github.com/workerscale/workerscale/rules"
)

// Metrics are the source's own metrics, shared by every Source (one per rules reload).
type Metrics struct {
	queries  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	outcomes *outcomeCounters
}

// outcomeNames are the outcomes of workerscale_prometheus_observations_total.
var outcomeNames = [...]string{"fresh", "stale", "failed", "empty", "no_series", "duplicate", "unlabeled", "nan", "inf", "unavailable", "unmatched"}

// outcomeCounters is workerscale_prometheus_observations_total: a count per workload and
// outcome, kept as numbers and turned into series when scraped (a series of a
// CounterVec costs some 600 bytes: at 1,000 workloads, megabytes; see
// autoscaler.LoopMetrics). A series appears with the first observation of its outcome.
type outcomeCounters struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	by   map[string]*workloadOutcomes
	// retained are the rules the counts were last pruned to.
	retained *rules.Rules
}

type workloadOutcomes struct {
	created time.Time
	counts  [len(outcomeNames)]float64
	seen    [len(outcomeNames)]bool
	// other counts an outcome not in outcomeNames, should one be added without a slot.
	other map[string]float64
}

func (o *outcomeCounters) add(workload, outcome string, n float64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.by[workload]
	if !ok {
		w = &workloadOutcomes{created: time.Now()}
		o.by[workload] = w
	}
	if i := slices.Index(outcomeNames[:], outcome); i >= 0 {
		w.counts[i] += n
		w.seen[i] = true
		return
	}
	if w.other == nil {
		w.other = map[string]float64{}
	}
	w.other[outcome] += n
}

// retain drops, when the rules have changed, the counts of workloads r does not name
// (a reload removed them); unmatched series (workload "") stay.
func (o *outcomeCounters) retain(r *rules.Rules) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r == o.retained {
		return
	}
	o.retained = r
	names := make(map[string]bool, len(r.Workloads)+1)
	names[""] = true
	for _, w := range r.Workloads {
		names[w.Name] = true
	}
	maps.DeleteFunc(o.by, func(name string, _ *workloadOutcomes) bool { return !names[name] })
}

// Describe implements prometheus.Collector.
func (o *outcomeCounters) Describe(ch chan<- *prometheus.Desc) { ch <- o.desc }

// Collect implements prometheus.Collector.
func (o *outcomeCounters) Collect(ch chan<- prometheus.Metric) {
	families.Collect(o, map[string]*prometheus.Desc{observationsName: o.desc}, ch)
}

// Families implements families.Source: /metrics writes the family built from a copy of
// the counts, its label pairs and created timestamps shared by its series.
func (o *outcomeCounters) Families(want func(string) bool, yield func(*dto.MetricFamily) error) error {
	if !want(observationsName) {
		return nil
	}
	type named struct {
		name    string
		created *timestamppb.Timestamp
		w       workloadOutcomes
	}
	o.mu.Lock()
	all := make([]named, 0, len(o.by))
	for name, w := range o.by {
		cp := *w
		cp.other = maps.Clone(w.other)
		all = append(all, named{name, timestamppb.New(w.created), cp})
	}
	o.mu.Unlock()
	slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name, b.name) })
	outcomes := make([]*dto.LabelPair, len(outcomeNames))
	for i, name := range outcomeNames {
		outcomes[i] = families.Label("outcome", name)
	}
	f := families.New(observationsName, observationsHelp, dto.MetricType_COUNTER)
	for _, n := range all {
		workload := families.Label("workload", n.name)
		for i := range outcomeNames {
			if n.w.seen[i] {
				families.Add(f, n.w.counts[i], n.created, outcomes[i], workload)
			}
		}
		for _, outcome := range slices.Sorted(maps.Keys(n.w.other)) {
			families.Add(f, n.w.other[outcome], n.created, families.Label("outcome", outcome), workload)
		}
	}
	return yield(f)
}

const (
	observationsName = "workerscale_prometheus_observations_total"
	observationsHelp = "Per-workload observations, by workload and outcome: fresh, stale, failed, empty, no_series, duplicate, unlabeled, nan, inf; unmatched (a series for no workload) has an empty workload."
)

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_prometheus_queries_total",
			Help: "Queries sent to Prometheus, by type (instant or range).",
		}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_prometheus_query_errors_total",
			Help: "Queries that failed, by kind: timeout, canceled, unavailable, bad_query, server, bad_result.",
		}, []string{"kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "workerscale_prometheus_query_duration_seconds",
			Help:    "Time a query took, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"type"}),
		outcomes: &outcomeCounters{
			desc: prometheus.NewDesc(observationsName, observationsHelp, []string{"workload", "outcome"}, nil),
			by:   map[string]*workloadOutcomes{},
		},
	}
	if reg != nil {
		reg.MustRegister(m.queries, m.errors, m.duration, m.outcomes)
	}
	// Known label values start at 0, so a rate sees a series before the first event.
	for _, t := range []string{"instant", "range"} {
		m.queries.WithLabelValues(t).Add(0)
	}
	for _, k := range []string{"timeout", "canceled", "unavailable", "bad_query", "server", "bad_result"} {
		m.errors.WithLabelValues(k).Add(0)
	}
	m.outcomes.add("", "unmatched", 0)
	return m
}

func (m *Metrics) query(kind string, seconds float64, err error) {
	if m == nil {
		return
	}
	m.queries.WithLabelValues(kind).Inc()
	m.duration.WithLabelValues(kind).Observe(seconds)
	if err != nil {
		m.errors.WithLabelValues(errorKind(err)).Inc()
	}
}

// retain drops the series of workloads r no longer names.
func (m *Metrics) retain(r *rules.Rules) {
	if m != nil {
		m.outcomes.retain(r)
	}
}

func (m *Metrics) outcome(workload, o string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.outcomes.add(workload, o, float64(n))
}

// errorKind sorts a query error for the errors metric.
func errorKind(err error) string {
	var apiErr *promv1.Error
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &apiErr):
		switch apiErr.Type {
		case promv1.ErrBadData:
			return "bad_query"
		case promv1.ErrTimeout:
			return "timeout"
		case promv1.ErrCanceled:
			return "canceled"
		case promv1.ErrServer, promv1.ErrExec:
			return "server"
		case promv1.ErrBadResponse:
			return "bad_result"
		}
		// VictoriaMetrics answers Prometheus's API with the HTTP status as the error type.
		if code, err := strconv.Atoi(string(apiErr.Type)); err == nil {
			return statusKind(code)
		}
		return "unavailable"
	case errors.Is(err, errBadResult):
		return "bad_result"
	case errors.As(err, &netErr):
		return "unavailable"
	}
	return "unavailable"
}

// statusKind sorts an error VictoriaMetrics typed by its HTTP status as Prometheus's own
// error types would be: 400 is a query that does not parse (Prometheus's bad_data), 422 a
// query that failed to run (Prometheus's execution error, counted as the server's).
func statusKind(code int) string {
	switch {
	case code == http.StatusBadRequest:
		return "bad_query"
	case code == http.StatusGatewayTimeout:
		return "timeout"
	case code == http.StatusTooManyRequests, code == http.StatusServiceUnavailable:
		return "unavailable"
	case code == http.StatusUnprocessableEntity, code >= 500:
		return "server"
	}
	return "unavailable"
}
