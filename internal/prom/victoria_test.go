package prom

import (
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// How far an observation through VictoriaMetrics may be from the same observation through
// Prometheus, relative to the value (absolute below 1).
const (
	// sameSamples is for values computed from each series' last sample (gauges and their
	// sums and ratios): both servers store the same scraped samples and pick the same last
	// one, so they agree but for float formatting.
	sameSamples = 1e-9
	// overRateWindow is for values computed over a range (rate, and ratios of rates). The
	// two servers legitimately differ there. Prometheus's rate() takes the first and last
	// samples inside the window and extrapolates their increase towards the window's
	// edges; VictoriaMetrics' takes the increase from the last sample before the window to
	// the last one inside it, over the time between those two, without extrapolating. It
	// also evaluates 30s earlier (-search.latencyOffset), over other samples. And the two
	// scrapers stamp samples differently: Prometheus with the time the scrape started,
	// VictoriaMetrics with its schedule (corrected only when off by more than a tenth of
	// the interval), while the fixture computes a counter when it is collected; so a
	// sample's value is ahead of its timestamp by up to 100ms in VictoriaMetrics, a few
	// milliseconds in Prometheus. Over the fixture's counters, which grow at a steady rate,
	// both servers estimate that rate and part only by that timing, over a 10s window:
	// measured differences stay under 0.3% (up to 4% with a 4s window). 5% leaves room for
	// a loaded machine (half a second of timing error) and still tells the fixture's
	// queues apart (1 to 5 jobs/s).
	overRateWindow = 0.05
	// rateWindow is the rules' rateWindow: long enough to average the scrapers' timing
	// out, short enough for a quick test.
	rateWindow = 10 * time.Second
	// victoriaLatency is VictoriaMetrics' default -search.latencyOffset: a query at now
	// reads its data as of 30s before.
	victoriaLatency = 30 * time.Second
)

// comparedWorkloads are the fixture's workloads: three healthy ones (w0..w2), one reading
// two queues (q3 and q4), one whose exporter writes two-minute-old timestamps, and one
// whose queue and pods nobody exports.
const comparedWorkloads = `workloads:
  - {name: w0, queues: [q0], maxReplicas: 50, target: {namespace: fleet, name: w0}}
  - {name: w1, queues: [q1], maxReplicas: 50, target: {namespace: fleet, name: w1}}
  - {name: w2, queues: [q2], maxReplicas: 50, target: {namespace: fleet, name: w2}}
  - {name: pair, queues: [q3, q4], maxReplicas: 50, target: {namespace: fleet, name: pair}}
  - {name: frozen, queues: [old], maxReplicas: 50, target: {namespace: fleet, name: frozen}}
  - {name: ghost, queues: [not-exported], maxReplicas: 50, target: {namespace: fleet, name: ghost}}
`

// healthy keeps the workloads of r whose every metric but OOM kills (the fixture exports
// no restarts) ends up fresh.
func healthy(r *rules.Rules) *rules.Rules {
	c := *r
	c.Workloads = slices.DeleteFunc(slices.Clone(r.Workloads), func(w rules.Workload) bool {
		return w.Name == "frozen" || w.Name == "ghost"
	})
	return &c
}

// comparedRules are the rules the comparison reads, against url with the given preset;
// prometheus holds more keys of the prometheus section, as YAML flow-mapping entries.
func comparedRules(t *testing.T, url, preset, prometheus string) *rules.Rules {
	t.Helper()
	// Staleness is 60s: VictoriaMetrics' freshest samples are already 30s old when a query
	// at now reads them (-search.latencyOffset), and the frozen queue's are two minutes old.
	text := fmt.Sprintf("prometheus: {url: %q, timeout: 5s, staleness: 60s%s}\n", url, prometheus) +
		fmt.Sprintf("queries: {preset: %s, rateWindow: %s}\n", preset, rateWindow) +
		"classes: [{name: medium, cpu: '2', memory: 4Gi, concurrency: 5, tenantConcurrency: 2}]\n" +
		comparedWorkloads
	r, err := rules.Parse("compare.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// freshMetrics are the metrics of r's first workload but OOM kills: those waitFresh waits
// for.
func freshMetrics(r *rules.Rules) []string {
	return slices.DeleteFunc(slices.Sorted(maps.Keys(r.Workloads[0].Queries)), func(m string) bool { return m == rules.OOMKills })
}

// overRange reports whether a query reads a range of samples (a matrix selector), so that
// the servers' rate() and increase() tell it apart.
func overRange(t *testing.T, r *rules.Rules, query string) bool {
	t.Helper()
	text, err := rules.Query{Query: query}.Render(r.TemplateData())
	if err != nil {
		t.Fatal(err)
	}
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(text)
	if err != nil {
		t.Fatalf("parsing %s: %v", text, err)
	}
	found := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if _, ok := n.(*parser.MatrixSelector); ok {
			found = true
		}
		return nil
	})
	return found
}

// compareCycles reports every difference between two cycles of the same rules: the same
// workloads and metrics, with the same status; the same reason where a metric is missing
// (reasons of stale metrics carry ages, which differ by the time between the queries); and
// values within the tolerances above. It logs the largest relative difference of the
// values read over a range.
func compareCycles(t *testing.T, r *rules.Rules, want, got Cycle, wantName, gotName string) {
	t.Helper()
	var largest float64
	var where string
	defer func() { t.Logf("largest difference over a rate window: %.3f%% (%s)", 100*largest, where) }()
	if a, b := slices.Sorted(maps.Keys(want.Observations)), slices.Sorted(maps.Keys(got.Observations)); !slices.Equal(a, b) {
		t.Errorf("workloads: %s %v, %s %v", wantName, a, gotName, b)
	}
	for _, w := range r.Workloads {
		wantObs, gotObs := want.Observations[w.Name], got.Observations[w.Name]
		if a, b := slices.Sorted(maps.Keys(wantObs)), slices.Sorted(maps.Keys(gotObs)); !slices.Equal(a, b) {
			t.Errorf("%s's metrics: %s %v, %s %v", w.Name, wantName, a, gotName, b)
		}
		for metric, a := range wantObs {
			b := gotObs[metric]
			switch {
			case a.Status != b.Status:
				t.Errorf("%s %s: %s %s (%s), %s %s (%s)", w.Name, metric, wantName, a.Status, a.Reason, gotName, b.Status, b.Reason)
				continue
			case a.Status == autoscaler.Missing:
				if a.Reason != b.Reason {
					t.Errorf("%s %s is missing: %s says %q, %s %q", w.Name, metric, wantName, a.Reason, gotName, b.Reason)
				}
				continue
			}
			tol, diff := sameSamples, math.Abs(a.Value-b.Value)/max(1, math.Abs(a.Value))
			if overRange(t, r, w.Queries[metric].Query) {
				tol = overRateWindow
				if diff >= largest {
					largest, where = diff, fmt.Sprintf("%s %s: %v and %v", w.Name, metric, a.Value, b.Value)
				}
			}
			if diff > tol {
				t.Errorf("%s %s: %s %v, %s %v; want within %v", w.Name, metric, wantName, a.Value, gotName, b.Value, tol)
			}
		}
	}
}

// TestVictoriaMetricsAnswersAsPrometheus: the same fleet scraped by a real Prometheus and
// a real VictoriaMetrics gives, through the source and each preset's queries, the same
// observations: the same workloads and metrics, the same outcomes (fresh, stale, and
// missing with the same reason: no series, an empty result) and the same values within
// the tolerances above.
func TestVictoriaMetricsAnswersAsPrometheus(t *testing.T) {
	fleet := testenv.NewFleet(t)
	for i := range 5 {
		fleet.SetQueue(fmt.Sprintf("q%d", i), testenv.Queue{Waiting: float64(10 * (i + 1)), Prioritized: float64(i), Active: float64(i + 2), CompletedPerSecond: float64(i + 1), FailedPerSecond: 0.1 * float64(i)})
	}
	for i := range 3 {
		fleet.SetWorkload("fleet", fmt.Sprintf("w%d", i), testenv.Workload{Pods: i + 1, CPUCores: 0.25 * float64(i+1), CPURequest: 1, MemoryBytes: float64((i + 1) << 29), MemoryRequest: 2 << 30})
	}
	fleet.SetWorkload("fleet", "pair", testenv.Workload{Pods: 3, CPUCores: 0.5, CPURequest: 2, MemoryBytes: 1 << 30, MemoryRequest: 4 << 30})
	fleet.SetQueue("old", testenv.Queue{Waiting: 7, Active: 1, StaleSince: time.Now().Add(-2 * time.Minute)})
	targets := []string{fleet.Addr()}
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: targets})
	vm := testenv.StartVictoriaMetrics(t, testenv.VictoriaMetricsOptions{Targets: targets})
	// VictoriaMetrics' first scrapes, while it starts, may come late on their schedule; the
	// comparison waits until its rate window (30s back) has moved past them.
	settled := time.Now().Add(victoriaLatency + rateWindow + 5*time.Second)

	for _, preset := range rules.PresetNames() {
		t.Run(preset, func(t *testing.T) {
			fromProm := comparedRules(t, prom.URL, preset, "")
			fromVM := comparedRules(t, vm.URL, preset, "")
			promSource, vmSource := newSource(t, fromProm, nil), newSource(t, fromVM, nil)
			metrics := freshMetrics(fromProm)
			waitFresh(t, promSource, healthy(fromProm), metrics...)
			waitFresh(t, vmSource, healthy(fromVM), metrics...)
			time.Sleep(time.Until(settled))

			at := time.Now()
			p := promSource.Observe(t.Context(), fromProm, at)
			v := vmSource.Observe(t.Context(), fromVM, at)
			if len(p.Errors) > 0 || len(v.Errors) > 0 {
				t.Errorf("query errors: Prometheus %v, VictoriaMetrics %v", p.Errors, v.Errors)
			}
			if p.Queries != v.Queries {
				t.Errorf("queries: Prometheus %d, VictoriaMetrics %d", p.Queries, v.Queries)
			}
			compareCycles(t, fromProm, p, v, "Prometheus", "VictoriaMetrics")

			// The comparison covers every outcome, not only fresh values.
			seen := map[autoscaler.Status]bool{}
			for _, o := range v.Observations {
				for _, ob := range o {
					seen[ob.Status] = true
				}
			}
			for _, s := range []autoscaler.Status{autoscaler.Fresh, autoscaler.Stale, autoscaler.Missing} {
				if !seen[s] {
					t.Errorf("no %s observation compared", s)
				}
			}
			if o := v.Observations["frozen"][rules.QueueDepth]; o.Status != autoscaler.Stale || o.Value != 7 {
				t.Errorf("frozen queueDepth through VictoriaMetrics = %+v, want stale 7", o)
			}
		})
	}

	t.Run("a query that does not parse", func(t *testing.T) {
		for _, tc := range []struct{ name, url string }{{"Prometheus", prom.URL}, {"VictoriaMetrics", vm.URL}} {
			r := comparedRules(t, tc.url, rules.PresetBullMQ, "")
			r.Workloads = r.Workloads[:1]
			r.Workloads[0].Queries = map[string]rules.Query{rules.QueueDepth: {Match: rules.MatchQueue, Query: `sum by (queue) (bullmq_job_count`}}
			reg := prometheus.NewRegistry()
			s := newSource(t, r, reg)
			c := s.Observe(t.Context(), r, time.Now())
			if o := c.Observations["w0"][rules.QueueDepth]; o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "the query failed") {
				t.Errorf("%s: %+v, want missing: the query failed", tc.name, o)
			}
			if n := testutil.ToFloat64(s.opts.Metrics.errors.WithLabelValues("bad_query")); n != 1 {
				t.Errorf("%s: %v bad_query errors, want 1", tc.name, n)
			}
		}
	})

	t.Run("tenant header", func(t *testing.T) {
		gateway := newTenantGateway(t, vm.URL)
		withTenant := comparedRules(t, gateway.server.URL, rules.PresetBullMQ, ", http_headers: {X-Scope-OrgID: {values: [tenant-a]}}")
		direct := comparedRules(t, vm.URL, rules.PresetBullMQ, "")
		tenantSource, directSource := newSource(t, withTenant, nil), newSource(t, direct, nil)
		waitFresh(t, directSource, healthy(direct), freshMetrics(direct)...)

		at := time.Now()
		through := tenantSource.Observe(t.Context(), withTenant, at)
		straight := directSource.Observe(t.Context(), direct, at)
		if len(through.Errors) > 0 {
			t.Errorf("through the gateway: %v", through.Errors)
		}
		compareCycles(t, direct, straight, through, "VictoriaMetrics", "VictoriaMetrics through the tenant gateway")
		tenants := gateway.seen()
		if len(tenants) != through.Queries {
			t.Errorf("the gateway saw %d queries, the source sent %d", len(tenants), through.Queries)
		}
		for _, tenant := range tenants {
			if !slices.Equal(tenant, []string{"tenant-a"}) {
				t.Errorf("a query came with X-Scope-OrgID %q, want [tenant-a]", tenant)
			}
		}

		// Without the setting the gateway refuses every query, which is missing, never 0.
		without := comparedRules(t, gateway.server.URL, rules.PresetBullMQ, "")
		c := newSource(t, without, nil).Observe(t.Context(), without, time.Now())
		if o := c.Observations["w0"][rules.QueueDepth]; o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "401") {
			t.Errorf("without the tenant header: %+v, want missing (401)", o)
		}
	})

	// Last, as it changes the fleet: a queue that goes away. Prometheus marks its series
	// stale at the next scrape, and so does VictoriaMetrics' scraper; both must then give
	// no series for it, not its last value until it ages out.
	t.Run("a queue that goes away", func(t *testing.T) {
		fromProm := comparedRules(t, prom.URL, rules.PresetBullMQ, "")
		fromVM := comparedRules(t, vm.URL, rules.PresetBullMQ, "")
		promSource, vmSource := newSource(t, fromProm, nil), newSource(t, fromVM, nil)
		waitFresh(t, vmSource, healthy(fromVM), freshMetrics(fromVM)...)
		fleet.RemoveQueue("q2")
		gone := func(s *Source, r *rules.Rules) bool {
			o := s.Observe(t.Context(), r, time.Now()).Observations["w2"]
			return o[rules.QueueDepth].Status != autoscaler.Fresh && o[rules.Throughput].Status != autoscaler.Fresh
		}
		deadline := time.Now().Add(freshWait)
		for !gone(promSource, fromProm) || !gone(vmSource, fromVM) {
			if time.Now().After(deadline) {
				t.Fatalf("q2's metrics still fresh %s after it went away", freshWait)
			}
			time.Sleep(500 * time.Millisecond)
		}
		at := time.Now()
		p := promSource.Observe(t.Context(), fromProm, at)
		v := vmSource.Observe(t.Context(), fromVM, at)
		compareCycles(t, fromProm, p, v, "Prometheus", "VictoriaMetrics")
		if o := v.Observations["w2"][rules.QueueDepth]; o.Status != autoscaler.Missing || o.Reason != "no series for queue q2" {
			t.Errorf("w2 queueDepth through VictoriaMetrics after q2 went away: %+v, want missing: no series", o)
		}
	})
}

// TestErrorKindOfVictoriaMetricsErrors: VictoriaMetrics types its errors with the HTTP
// status ("400"); they are counted under the same kinds as Prometheus's own.
func TestErrorKindOfVictoriaMetricsErrors(t *testing.T) {
	for _, tc := range []struct {
		errorType promv1.ErrorType
		want      string
	}{
		{promv1.ErrBadData, "bad_query"},
		{"400", "bad_query"},
		{promv1.ErrExec, "server"},
		{"422", "server"},
		{"500", "server"},
		{"429", "unavailable"},
		{"503", "unavailable"},
		{promv1.ErrTimeout, "timeout"},
		{"504", "timeout"},
		{"unavailable", "unavailable"},
	} {
		err := fmt.Errorf("query: %w", &promv1.Error{Type: tc.errorType, Msg: "boom"})
		if got := errorKind(err); got != tc.want {
			t.Errorf("errorKind(%s) = %s, want %s", tc.errorType, got, tc.want)
		}
	}
}

// tenantGateway stands where a multi-tenant gateway would, in front of VictoriaMetrics:
// it refuses a query without an X-Scope-OrgID header and records the tenants it saw.
type tenantGateway struct {
	server  *httptest.Server
	mu      sync.Mutex
	tenants [][]string
}

func newTenantGateway(t *testing.T, target string) *tenantGateway {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	upstream := httputil.NewSingleHostReverseProxy(u)
	upstream.ErrorLog = log.New(io.Discard, "", 0)
	g := &tenantGateway{}
	g.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Values("X-Scope-OrgID")
		if len(tenant) == 0 {
			http.Error(w, "no tenant: X-Scope-OrgID is required", http.StatusUnauthorized)
			return
		}
		g.mu.Lock()
		g.tenants = append(g.tenants, tenant)
		g.mu.Unlock()
		upstream.ServeHTTP(w, r)
	}))
	t.Cleanup(g.server.Close)
	return g
}

// seen returns the X-Scope-OrgID values of each request let through so far.
func (g *tenantGateway) seen() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.tenants)
}
