package prom

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the source's own metrics, shared by every Source (one per rules reload).
type Metrics struct {
	queries  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
}

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
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workerscale_prometheus_observations_total",
			Help: "Per-workload observations, by workload and outcome: fresh, stale, failed, empty, no_series, duplicate, unlabeled, nan, inf; unmatched (a series for no workload) has an empty workload.",
		}, []string{"workload", "outcome"}),
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
	m.outcomes.WithLabelValues("", "unmatched").Add(0)
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

func (m *Metrics) outcome(workload, o string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.outcomes.WithLabelValues(workload, o).Add(float64(n))
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
