package prom

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// onlyQueueDepth keeps one metric so that each cycle is exactly one query.
func onlyQueueDepth(r *rules.Rules) *rules.Rules {
	for i := range r.Workloads {
		q := r.Workloads[i].Queries[rules.QueueDepth]
		q.Freshness = ""
		r.Workloads[i].Queries = map[string]rules.Query{rules.QueueDepth: q}
		r.Workloads[i].PodQueries = nil
	}
	return r
}

func TestRetries(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(1)
	r := onlyQueueDepth(e.rulesFor(t, 1, rules.PresetBullMQ, ""))
	s := newSource(t, r, prometheus.NewRegistry())
	waitFresh(t, s, r, rules.QueueDepth)

	t.Run("5xx is retried", func(t *testing.T) {
		e.proxy.reset(503, 502)
		c := s.Observe(t.Context(), r, time.Now())
		if o := c.Observations["w0"][rules.QueueDepth]; o.Status != autoscaler.Fresh || o.Value != 11 {
			t.Errorf("after two 5xx: %+v", o)
		}
		if n := e.proxy.count(); n != 3 {
			t.Errorf("%d requests, want 3 (two failures and a success)", n)
		}
	})

	t.Run("429 honours Retry-After", func(t *testing.T) {
		e.proxy.retryAfter = "1"
		defer func() { e.proxy.retryAfter = "" }()
		e.proxy.reset(429)
		c := s.Observe(t.Context(), r, time.Now())
		if o := c.Observations["w0"][rules.QueueDepth]; o.Status != autoscaler.Fresh {
			t.Errorf("after a 429: %+v", o)
		}
		e.proxy.mu.Lock()
		times := e.proxy.times
		e.proxy.mu.Unlock()
		// The backoff alone would wait at most 50ms here; Retry-After asked for a second.
		if len(times) != 2 || times[1].Sub(times[0]) < 900*time.Millisecond {
			t.Errorf("requests at %v; want a retry about a second after the 429", times)
		}
	})

	t.Run("retries are bounded, and the failure is a missing metric", func(t *testing.T) {
		e.proxy.reset(503, 503, 503, 503, 503, 503)
		c := s.Observe(t.Context(), r, time.Now())
		o := c.Observations["w0"][rules.QueueDepth]
		if o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "the query failed") || len(c.Errors) != 1 {
			t.Errorf("after 4 x 503: %+v, errors %v", o, c.Errors)
		}
		if n := e.proxy.count(); n != 4 {
			t.Errorf("%d requests, want 4 (1 + RetryMax 3)", n)
		}
	})

	t.Run("a bad query is not retried", func(t *testing.T) {
		bad := onlyQueueDepth(e.rulesFor(t, 1, rules.PresetBullMQ, ""))
		q := bad.Workloads[0].Queries[rules.QueueDepth]
		q.Query = "sum by (queue) ("
		bad.Workloads[0].Queries[rules.QueueDepth] = q
		e.proxy.reset()
		c := s.Observe(t.Context(), bad, time.Now())
		if n := e.proxy.count(); n != 1 || c.Observations["w0"][rules.QueueDepth].Status != autoscaler.Missing {
			t.Errorf("%d requests for a bad query, want 1; %+v", n, c.Observations["w0"])
		}
	})
}

// TestPrometheusStoppedMidTest: the cycle reports missing data, nothing panics, and the
// engine downstream holds rather than scaling down.
func TestPrometheusStoppedMidTest(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(2)
	r := e.rulesFor(t, 2, rules.PresetBullMQ, "")
	r.Prometheus.URL = e.prom.URL // no proxy: a stopped server refuses connections
	reg := prometheus.NewRegistry()
	s := newSource(t, r, reg)
	waitFresh(t, s, r, rules.QueueDepth, rules.Throughput, rules.ActiveJobs)

	e.prom.Stop()
	c := s.Observe(t.Context(), r, time.Now())
	if len(c.Errors) != c.Queries || c.Queries == 0 {
		t.Errorf("%d errors for %d queries, want every query failed", len(c.Errors), c.Queries)
	}
	for _, w := range r.Workloads {
		for m, o := range c.Observations[w.Name] {
			if o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "the query failed") {
				t.Errorf("%s %s = %+v, want missing", w.Name, m, o)
			}
		}
		st := autoscaler.State{Shape: autoscaler.Shape{Replicas: 7, Class: "medium", Concurrency: 5, TenantConcurrency: 2}, ReadyReplicas: 7}
		d := autoscaler.Decide(time.Now(), r, autoscaler.Input{Workload: &r.Workloads[0], Observations: c.Observations[w.Name], State: st})
		if d.To.Replicas != 7 {
			t.Errorf("%s: with Prometheus down the engine went from 7 to %d\n%v", w.Name, d.To.Replicas, d.Reasons)
		}
	}
	if n := testutil.ToFloat64(s.opts.Metrics.errors.WithLabelValues("unavailable")); n == 0 {
		t.Error("no unavailable errors counted")
	}
}

func TestRange(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(2)
	r := e.rulesFor(t, 2, rules.PresetBullMQ, "")
	s := newSource(t, r, nil)
	waitFresh(t, s, r, rules.QueueDepth, rules.Throughput)
	end := time.Now()
	got, errs := s.Range(t.Context(), r, end.Add(-5*time.Second), end, time.Second)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	pts := got["w1"][rules.QueueDepth]
	if len(pts) < 4 {
		t.Fatalf("w1 queueDepth has %d points over 5s at 1s steps: %v", len(pts), pts)
	}
	for _, p := range pts {
		if p.V != 21 {
			t.Errorf("w1 queueDepth at %s = %v, want 21", p.T, p.V)
		}
	}
	if len(got["w0"][rules.CPU]) == 0 {
		t.Error("no CPU points for w0")
	}
}

func TestMetricsAreRegisteredWithThePrefix(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.query("instant", 0.01, nil)
	m.outcome("render", "fresh", 1)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "workerscale_") {
			t.Errorf("metric %s lacks the workerscale_ prefix", f.GetName())
		}
	}
	if len(families) < 3 {
		t.Errorf("%d families gathered", len(families))
	}
}
