package prom

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/config"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// proxy sits between the source and Prometheus: it counts the queries and can answer
// some of them with an error first.
type proxy struct {
	server *httptest.Server
	// token, when set, is the bearer token every request must carry.
	token string
	mu    sync.Mutex
	// queries counts requests to the query endpoints; times records when they came.
	queries int
	times   []time.Time
	// faults are statuses to answer with, one per request, before passing requests on.
	faults     []int
	retryAfter string
}

func newProxy(t *testing.T, target string) *proxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.token != "" && r.Header.Get("Authorization") != "Bearer "+p.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/v1/query") {
			p.mu.Lock()
			p.queries++
			p.times = append(p.times, time.Now())
			var fault int
			if len(p.faults) > 0 {
				fault, p.faults = p.faults[0], p.faults[1:]
			}
			p.mu.Unlock()
			if fault != 0 {
				if p.retryAfter != "" {
					w.Header().Set("Retry-After", p.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(fault)
				fmt.Fprintf(w, `{"status":"error","errorType":"unavailable","error":"injected %d"}`, fault)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.server.Close)
	return p
}

func (p *proxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queries
}

func (p *proxy) reset(faults ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries, p.times, p.faults = 0, nil, faults
}

// env is a fleet exporter scraped by a real Prometheus, behind a counting proxy.
type env struct {
	fleet *testenv.Fleet
	prom  *testenv.Prometheus
	proxy *proxy
}

func startEnv(t *testing.T) *env {
	t.Helper()
	fleet := testenv.NewFleet(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}})
	return &env{fleet: fleet, prom: p, proxy: newProxy(t, p.URL)}
}

// rulesFor writes a rules file for n workloads w0..w(n-1) on queues q0.., in namespace
// fleet, with the given preset and extra top-level YAML, against the proxy.
func (e *env) rulesFor(t *testing.T, n int, preset, extra string) *rules.Rules {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "prometheus: {url: %q, timeout: 5s, staleness: 30s}\nqueries: {preset: %s, rateWindow: 4s}\n", e.proxy.server.URL, preset)
	b.WriteString("classes: [{name: medium, cpu: '2', memory: 4Gi, concurrency: 5, tenantConcurrency: 2}]\n")
	b.WriteString(extra)
	b.WriteString("workloads:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: w%d, queues: [q%d], maxReplicas: 50, target: {namespace: fleet, name: w%d}}\n", i, i, i)
	}
	r, err := rules.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newSource(t *testing.T, r *rules.Rules, reg prometheus.Registerer) *Source {
	t.Helper()
	s, err := New(r.Prometheus, Options{Metrics: NewMetrics(reg), RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freshWait bounds waitFresh. VictoriaMetrics answers a query at now from the data of 30s
// before (-search.latencyOffset), so it takes that much longer than Prometheus.
const freshWait = 90 * time.Second

// waitFresh observes until every listed metric of every workload is fresh, and the rate
// window has filled (throughput of the first workload within 5% of settled).
func waitFresh(t *testing.T, s *Source, r *rules.Rules, metrics ...string) Cycle {
	t.Helper()
	deadline := time.Now().Add(freshWait)
	var last float64
	for {
		c := s.Observe(t.Context(), r, time.Now())
		missing := ""
		if tp, ok := c.Observations[r.Workloads[0].Name][rules.Throughput]; ok && tp.Status == autoscaler.Fresh {
			if !near(tp.Value, last, 0.05) || tp.Value == 0 {
				missing = fmt.Sprintf("throughput still moving: %v after %v", tp.Value, last)
			}
			last = tp.Value
		}
		for _, w := range r.Workloads {
			for _, m := range metrics {
				if o := c.Observations[w.Name][m]; o.Status != autoscaler.Fresh {
					missing = fmt.Sprintf("%s/%s: %s %s", w.Name, m, o.Status, o.Reason)
				}
			}
		}
		if missing == "" {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not fresh after %s: %s", freshWait, missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (e *env) fillFleet(n int) {
	for i := range n {
		e.fleet.SetQueue(fmt.Sprintf("q%d", i), testenv.Queue{Waiting: float64(10 * (i + 1)), Prioritized: 1, Active: float64(i + 2), CompletedPerSecond: float64(i + 1), FailedPerSecond: 0.1})
		e.fleet.SetWorkload("fleet", fmt.Sprintf("w%d", i), testenv.Workload{Pods: 2, CPUCores: 0.5, CPURequest: 1, MemoryBytes: 1 << 30, MemoryRequest: 2 << 30})
	}
}

// TestObserveBatchesAllWorkloads: N workloads cost as many queries as one, and each
// workload gets its own values.
func TestObserveBatchesAllWorkloads(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(5)
	all := []string{rules.QueueDepth, rules.ActiveJobs, rules.Throughput, rules.CompletionRate, rules.CPU, rules.Memory}

	one := e.rulesFor(t, 1, rules.PresetBullMQ, "")
	five := e.rulesFor(t, 5, rules.PresetBullMQ, "")
	s := newSource(t, five, nil)
	waitFresh(t, s, five, all...)

	e.proxy.reset()
	c1 := s.Observe(t.Context(), one, time.Now())
	q1 := e.proxy.count()
	e.proxy.reset()
	c5 := s.Observe(t.Context(), five, time.Now())
	q5 := e.proxy.count()
	// 7 value templates, 5 per-pod templates and 5 distinct freshness templates (job
	// counts, completions, CPU, memory, restarts), whatever the number of workloads.
	if q1 != 17 || q5 != 17 || c1.Queries != 17 || c5.Queries != 17 {
		t.Errorf("queries: 1 workload %d (said %d), 5 workloads %d (said %d); want 17 each", q1, c1.Queries, q5, c5.Queries)
	}
	for i := range 5 {
		o := c5.Observations[fmt.Sprintf("w%d", i)]
		want := map[string]float64{rules.QueueDepth: float64(10*(i+1) + 1), rules.ActiveJobs: float64(i + 2), rules.CPU: 0.5, rules.Memory: 0.5}
		for m, v := range want {
			if o[m].Status != autoscaler.Fresh || !near(o[m].Value, v, 0.02) {
				t.Errorf("w%d %s = %+v, want %v", i, m, o[m], v)
			}
		}
		if tp := o[rules.Throughput].Value; !near(tp, float64(i+1), 0.15) {
			t.Errorf("w%d throughput = %v, want about %d", i, tp, i+1)
		}
		if cr := o[rules.CompletionRate].Value; !near(cr, float64(i+1)/(float64(i+1)+0.1), 0.02) {
			t.Errorf("w%d completionRate = %v", i, cr)
		}
	}
}

// TestObserveSeedPreset reads the second seed's metric names.
func TestObserveSeedPreset(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(2)
	r := e.rulesFor(t, 2, rules.PresetBullMQQueue, "")
	c := waitFresh(t, newSource(t, r, nil), r, rules.QueueDepth, rules.ActiveJobs, rules.Throughput)
	if o := c.Observations["w1"]; o[rules.QueueDepth].Value != 21 || o[rules.ActiveJobs].Value != 3 || !near(o[rules.Throughput].Value, 2, 0.01) {
		t.Errorf("w1 = %+v", o)
	}
	if _, ok := c.Observations["w1"][rules.CompletionRate]; ok {
		t.Error("bullmq-queue has no completionRate query, yet one was observed")
	}
}

// TestStrictOutcomes: every result that is not one finite number per workload is missing
// or stale, with its reason, and never 0.
func TestStrictOutcomes(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(2)
	e.fleet.SetQueue("old", testenv.Queue{Waiting: 7, StaleSince: time.Now().Add(-2 * time.Minute)})
	extra := `thresholds:
  duplicated: {warning: 1, critical: 2}
  unlabeled: {warning: 1, critical: 2}
  nothing: {warning: 1, critical: 2}
  zeroByZero: {warning: 1, critical: 2}
  infinite: {warning: 1, critical: 2}
  scalar: {warning: 1, critical: 2}
  badQuery: {warning: 1, critical: 2}
queries:
  preset: bullmq
  rateWindow: 4s
  templates:
    duplicated: {query: 'bullmq_job_count{queue=~"{{.Queues}}"}'}
    unlabeled: {query: 'sum(bullmq_job_count{queue=~"{{.Queues}}"})'}
    nothing: {query: 'sum by (queue) (no_such_metric)'}
    zeroByZero: {query: 'sum by (queue) (bullmq_job_count{state="waiting"}) * 0 / 0'}
    infinite: {query: 'sum by (queue) (bullmq_job_count{state="waiting"}) / 0'}
    scalar: {query: 'scalar(vector(1))'}
    badQuery: {query: 'sum by (queue) (rate(bullmq_job_count[5m]))'}
`
	text := fmt.Sprintf("prometheus: {url: %q, timeout: 5s, staleness: 30s}\n", e.proxy.server.URL) + extra +
		"classes: [{name: medium, cpu: '2', memory: 4Gi}]\nworkloads:\n" +
		"  - {name: w0, queues: [q0], maxReplicas: 5, target: {namespace: fleet, name: w0}}\n" +
		"  - {name: ghost, queues: [not-exported], maxReplicas: 5, target: {namespace: fleet, name: ghost}}\n" +
		"  - {name: stale, queues: [old], maxReplicas: 5, target: {namespace: fleet, name: stale}}\n"
	r, err := rules.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	// Validation refuses a template that does not parse; Prometheus must refuse this one.
	for i := range r.Workloads {
		q := r.Workloads[i].Queries["badQuery"]
		q.Query = `sum by (queue) (rate(bullmq_job_count[5m])` // one ) short
		r.Workloads[i].Queries["badQuery"] = q
	}
	reg := prometheus.NewRegistry()
	s := newSource(t, r, reg)
	waitFresh(t, s, &rules.Rules{Workloads: r.Workloads[:1], Prometheus: r.Prometheus, Queries: r.Queries}, rules.QueueDepth, rules.CPU)
	badBefore := testutil.ToFloat64(s.opts.Metrics.errors.WithLabelValues("bad_query"))
	c := s.Observe(t.Context(), r, time.Now())
	t.Logf("w0: %+v", c.Observations["w0"])

	for _, tc := range []struct {
		workload, metric string
		status           autoscaler.Status
		reason           string
	}{
		{"w0", rules.QueueDepth, autoscaler.Fresh, ""},
		{"w0", "duplicated", autoscaler.Missing, "3 series for queue q0; the query must return one"},
		{"w0", "unlabeled", autoscaler.Missing, "have no queue label"},
		{"w0", "nothing", autoscaler.Missing, "empty result: the query returned no series"},
		{"w0", "zeroByZero", autoscaler.Missing, "is NaN"},
		{"w0", "infinite", autoscaler.Missing, "is +Inf"},
		{"w0", "scalar", autoscaler.Missing, "returns a scalar, not one series per workload"},
		{"w0", "badQuery", autoscaler.Missing, "the query failed"},
		{"ghost", rules.QueueDepth, autoscaler.Missing, "no series for queue not-exported"},
		{"ghost", rules.CPU, autoscaler.Missing, "no series for workload fleet/ghost"},
		{"stale", rules.QueueDepth, autoscaler.Stale, "past the 30s staleness bound"},
	} {
		o := c.Observations[tc.workload][tc.metric]
		if o.Status != tc.status || !strings.Contains(o.Reason, tc.reason) {
			t.Errorf("%s %s = %+v, want %s with %q", tc.workload, tc.metric, o, tc.status, tc.reason)
		}
	}
	// The bad query was not retried: a 4xx is the query's fault.
	if n := testutil.ToFloat64(s.opts.Metrics.errors.WithLabelValues("bad_query")) - badBefore; n != 1 {
		t.Errorf("bad_query errors = %v, want 1", n)
	}
	// q1 is exported but belongs to no workload of these rules.
	// Each outcome is counted, on the workload it was for (unmatched on none).
	counted := map[string]float64{}
	var ghost float64
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "workerscale_prometheus_observations_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var workload, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "workload":
					workload = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if (workload == "") != (outcome == "unmatched") {
				t.Errorf("outcome %s counted on workload %q", outcome, workload)
			}
			counted[outcome] += m.GetCounter().GetValue()
			if workload == "ghost" && outcome == "no_series" {
				ghost = m.GetCounter().GetValue()
			}
		}
	}
	for _, outcome := range []string{"duplicate", "unlabeled", "empty", "nan", "inf", "failed", "no_series", "stale", "fresh", "unmatched"} {
		if counted[outcome] == 0 {
			t.Errorf("no %s outcome counted", outcome)
		}
	}
	if ghost == 0 {
		t.Error("the ghost workload's missing series are not counted on it")
	}
	// The stale workload must not scale down on it.
	w := &r.Workloads[2]
	d := autoscaler.Decide(time.Now(), r, autoscaler.Input{Workload: w, Observations: c.Observations["stale"],
		State: autoscaler.State{Shape: autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 2, TenantConcurrency: 1}, ReadyReplicas: 4}})
	if d.To.Replicas < 4 {
		t.Errorf("a stale queue scaled the fleet down to %d", d.To.Replicas)
	}
}

func near(got, want, tol float64) bool {
	return got >= want-tol*max(1, want) && got <= want+tol*max(1, want)
}

// TestHTTPClientSettingsReachPrometheus: prometheus/common's settings in the rules file
// (here a bearer token from a file) are used for every query.
func TestHTTPClientSettingsReachPrometheus(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(1)
	e.proxy.token = "s3cret"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withAuth := e.rulesFor(t, 1, rules.PresetBullMQ, "")
	withAuth.Prometheus.HTTP.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: tokenFile}
	waitFresh(t, newSource(t, withAuth, nil), withAuth, rules.QueueDepth)

	without := e.rulesFor(t, 1, rules.PresetBullMQ, "")
	c := newSource(t, without, nil).Observe(t.Context(), without, time.Now())
	if o := c.Observations["w0"][rules.QueueDepth]; o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "401") && !strings.Contains(o.Reason, "unauthorized") {
		t.Errorf("without the token: %+v, want missing (401)", o)
	}
}
