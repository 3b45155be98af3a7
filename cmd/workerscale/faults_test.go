package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// faultRules are the controller's rules for the fault matrix. The 1s query timeout keeps a
// cycle under a fault short (17 queries, 4 at a time: at most 4 timeouts a cycle) while
// staying above the retries' own backoff (100+200+400ms at most), so that a refused
// connection and a 500 fail as themselves, not as timeouts. No scale-down stabilization:
// with the data sane, the empty queue scales the fleet down in the very first cycle, so
// a late or a wrong decision shows.
const faultRules = `prometheus: {url: %q, timeout: 1s, staleness: 1m}
interval: 1s
queries: {preset: bullmq, rateWindow: 4s}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
workloads:
  - name: render
    target: {namespace: default, name: render, container: worker}
    classes: [medium]
    maxReplicas: 20
    behavior: {scaleDown: {stabilizationWindow: 0s}}
`

// The fault proxy's modes.
const (
	modePass    = "pass-through"
	modeRefused = "connection refused"
	modeSlow    = "slower than the timeout"
	mode500     = "500"
	mode429     = "429 with Retry-After"
	modeGarbage = "a garbage body"
)

// faultProxy stands between workerscale and Prometheus and injects the faults of one mode
// at a time.
type faultProxy struct {
	addr string
	next http.Handler
	// slowFor is how long the slow mode holds a request: longer than the query timeout.
	slowFor time.Duration

	mu     sync.Mutex
	mode   string
	srv    *http.Server // nil while refusing connections
	served map[string]int
}

func startFaultProxy(t *testing.T, target string, slowFor time.Duration) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{addr: ln.Addr().String(), next: httputil.NewSingleHostReverseProxy(u), slowFor: slowFor,
		mode: modePass, served: map[string]int{}}
	p.mu.Lock()
	p.serve(ln)
	p.mu.Unlock()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.srv != nil {
			p.srv.Close()
		}
	})
	return p
}

func (p *faultProxy) url() string { return "http://" + p.addr }

// serve serves on ln; p.mu is held.
func (p *faultProxy) serve(ln net.Listener) {
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // http.ErrServerClosed once set closes it
}

// set switches the mode. Refusing connections closes the listener and every open
// connection (Close, not Shutdown), so that a pooled keep-alive connection cannot reach the
// handler either: each new request is refused as by a Prometheus that is not running.
// Leaving that mode listens again on the same address.
func (p *faultProxy) set(t *testing.T, mode string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case mode == modeRefused && p.srv != nil:
		p.srv.Close()
		p.srv = nil
	case mode != modeRefused && p.srv == nil:
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			t.Fatalf("listening again on %s: %v", p.addr, err)
		}
		p.serve(ln)
	}
	p.mode = mode
}

// count is how many requests were answered in mode.
func (p *faultProxy) count(mode string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served[mode]
}

func (p *faultProxy) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	mode := p.mode
	p.served[mode]++
	p.mu.Unlock()
	switch mode {
	case modeSlow:
		// The body is read first: the server notices a client that hangs up (and cancels
		// the request's context) only once it has.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-r.Context().Done(): // the client gave up, as it must
			return
		case <-time.After(p.slowFor):
		}
		p.next.ServeHTTP(rw, r)
	case mode500:
		http.Error(rw, "injected: internal server error", http.StatusInternalServerError)
	case mode429:
		rw.Header().Set("Retry-After", "1")
		http.Error(rw, "injected: too many requests", http.StatusTooManyRequests)
	case modeGarbage:
		// What a misrouted request gets from a captive portal or a load balancer's error
		// page: a 200 that is not Prometheus's JSON.
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, "<html><body>Service Temporarily Unavailable</body></html>")
	default:
		p.next.ServeHTTP(rw, r)
	}
}

// scrapeFilter stands between Prometheus and the fixture exporter, and when drop is set
// leaves the queue's series out of the scrape: the exporter no longer exposes them (a queue
// gone, an exporter restarted without it), so Prometheus marks them stale and a query
// returns no series. The fixture can set a queue's values but not remove the queue.
type scrapeFilter struct {
	addr string
	drop atomic.Bool
}

func startScrapeFilter(t *testing.T, exporter, queue string) *scrapeFilter {
	t.Helper()
	f := &scrapeFilter{}
	label := fmt.Sprintf("queue=%q", queue)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		// No Accept header: the exporter answers in the text format, which is filtered by line.
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+exporter+"/metrics", nil)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		rw.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		drop := f.drop.Load()
		for line := range strings.Lines(string(body)) {
			if drop && !strings.HasPrefix(line, "#") && strings.Contains(line, label) {
				continue
			}
			_, _ = io.WriteString(rw, line)
		}
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = u.Host
	return f
}

// runningController is `workerscale run` running in-process, its decisions printed as JSON.
type runningController struct {
	out, logs  syncBuffer
	metricsURL string
	exited     chan struct{}
	code       int
}

func startRun(ctx context.Context, t *testing.T, rulesFile, kubeconfig string) *runningController {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c := &runningController{metricsURL: "http://" + addr + "/metrics", exited: make(chan struct{})}
	go func() {
		defer close(c.exited)
		c.code = run(ctx, []string{"run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "-o", "json",
			"--metrics-bind-address", addr, "--health-probe-bind-address", addr, "--log-level", "warn"}, &c.out, &c.logs)
	}()
	return c
}

// reports are the decisions so far, one a cycle (the rules have one workload).
func (c *runningController) reports(t *testing.T) []autoscaler.Report {
	t.Helper()
	return decodeReports(t, strings.NewReader(c.out.String()))
}

// alive fails the test if the controller has returned. A panic in its loop would not
// return: it would end the test binary, and so fail the test too.
func (c *runningController) alive(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
		t.Fatalf("workerscale run returned (exit %d) while it should be cycling", c.code)
	default:
	}
}

// report waits for decision number i (from 0) and returns it.
func (c *runningController) report(t *testing.T, i int) autoscaler.Report {
	t.Helper()
	rep, _ := c.await(t, i)
	return rep
}

// await waits for decision number i (from 0) and returns it, with a time before which it
// had not been written: the last look that did not find it (zero when the first did).
func (c *runningController) await(t *testing.T, i int) (autoscaler.Report, time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var before time.Time
	for {
		looked := time.Now()
		if reps := c.reports(t); len(reps) > i {
			return reps[i], before
		}
		before = looked
		c.alive(t)
		if time.Now().After(deadline) {
			t.Fatalf("no decision #%d within 30s; the controller made %d", i+1, len(c.reports(t)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric reads one series from the controller's /metrics; a counter not created yet is 0.
func (c *runningController) metric(t *testing.T, series string) float64 {
	t.Helper()
	for line := range strings.Lines(get(t, c.metricsURL)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

func (c *runningController) cycles(t *testing.T) float64 {
	t.Helper()
	return c.metric(t, `workerscale_cycles_total{result="ok"}`) + c.metric(t, `workerscale_cycles_total{result="error"}`)
}

// promFault is one row of the fault matrix: injected by the proxy (mode), or at the
// source, in what the exporter serves (queue, drop).
type promFault struct {
	name  string
	mode  string
	queue *testenv.Queue
	drop  bool
	// reason is in the missing inputs of every cycle that sees the fault, and in its event.
	reason string
	// counter is the series of the controller's metrics that counts the fault.
	counter string
}

func (f promFault) atSource() bool { return f.mode == modePass }

// TestPrometheusFaultsThenRecovery is issue 13's fault matrix row for Prometheus, end to
// end: `workerscale run` against a real kube-apiserver and a real Prometheus scraping the
// fixture exporter, through a proxy that injects faults. For each fault in turn, while the
// fleet is larger than the empty queue needs: no scale-down, the loop keeps cycling, a
// MetricsUnavailable event on the Deployment and metrics that tell; then with the fault
// cleared the scale-down is the first decision made on sane data.
func TestPrometheusFaultsThenRecovery(t *testing.T) {
	const (
		queue = "render"
		// high is what the fleet is set to during each fault: more than the sane load
		// wants, so that a decision that ignored the fault would scale it down.
		high = int32(4)
	)
	// The sane load wants the minimum: nothing waiting, one job in flight, one a second.
	sane := testenv.Queue{Active: 1, CompletedPerSecond: 1}
	withNaN := sane
	withNaN.Waiting = math.NaN()

	w := &world{t: t, fleet: testenv.NewFleet(t)}
	// The load is set before Prometheus starts, so that its rates are there by the time
	// the kube-apiserver is.
	w.fleet.SetQueue(queue, sane)
	w.fleet.SetWorkload("default", "render", testenv.Workload{Pods: 2, CPUCores: 1, CPURequest: 2, MemoryBytes: 1 << 30, MemoryRequest: 4 << 30})
	filter := startScrapeFilter(t, w.fleet.Addr(), queue)
	w.prom = testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{filter.addr}})
	w.cluster = testenv.StartCluster(t)
	w.kubeconfig = w.cluster.Kubeconfig(t, w.cluster.Config)
	// faultRules' interval and prometheus.timeout.
	const interval, timeout = time.Second, time.Second
	proxy := startFaultProxy(t, w.prom.URL, 3*timeout)
	w.rulesFile = filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(w.rulesFile, []byte(fmt.Sprintf(faultRules, proxy.url())), 0o600); err != nil {
		t.Fatal(err)
	}
	w.createDeployment(1, "2", "4Gi", "5", "2", nil)
	w.load(sane, 0.5) // the same load, checked through the proxy, passing through

	// direct reads Prometheus itself, not through the proxy: what the controller would see
	// once the proxy passes through.
	r, err := rules.Load(w.rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.Prometheus
	cfg.URL = w.prom.URL
	src, err := prom.New(cfg, prom.Options{})
	if err != nil {
		t.Fatal(err)
	}
	direct := func(ctx context.Context) autoscaler.Observations {
		return src.Observe(ctx, r, time.Now()).Observations[r.Workloads[0].Name]
	}
	inputs := []string{rules.QueueDepth, rules.ActiveJobs, rules.Throughput} // the replica inputs
	isSane := func(o autoscaler.Observations) bool {
		for _, m := range inputs {
			if o[m].Status != autoscaler.Fresh {
				return false
			}
		}
		return o[rules.QueueDepth].Value == 0
	}

	ctx, cancel := context.WithCancel(t.Context())
	c := startRun(ctx, t, w.rulesFile, w.kubeconfig)
	defer func() {
		cancel()
		<-c.exited
		if t.Failed() {
			t.Logf("controller log:\n%s", c.logs.String())
		}
	}()
	// The first decision, on sane data, keeps the one replica the load needs.
	rep, after := c.await(t, 0)
	if len(rep.Missing) > 0 || rep.To.Replicas >= high {
		t.Fatalf("first decision on sane data: %+v", rep)
	}
	// last is the last decision the test waited for, and a time before it was written.
	last := struct {
		count int
		after time.Time
	}{1, after}

	errorsOf := func(kind string) string {
		return fmt.Sprintf("workerscale_prometheus_query_errors_total{kind=%q}", kind)
	}
	outcomes := func(outcome string) string {
		return fmt.Sprintf("workerscale_prometheus_observations_total{outcome=%q,workload=%q}", outcome, queue)
	}
	faults := []promFault{
		{name: "Prometheus down", mode: modeRefused, reason: "connection refused", counter: errorsOf("unavailable")},
		{name: "slower than the timeout", mode: modeSlow, reason: "context deadline exceeded", counter: errorsOf("timeout")},
		{name: "500", mode: mode500, reason: "server error: 500", counter: errorsOf("server")},
		// Retry-After (1s) is longer than what is left of the 1s query timeout, so the
		// wait for the retry is cut by the timeout and the query fails as one: the timeout
		// bounds the cycle. (Under the default 10s timeout the same 429s would be retried
		// three times, a second apart, and the query would fail as a client error, 429.)
		{name: "429 with Retry-After", mode: mode429, reason: "context deadline exceeded", counter: errorsOf("timeout")},
		{name: "a garbage body", mode: modeGarbage, reason: "invalid character", counter: errorsOf("bad_result")},
		{name: "NaN", mode: modePass, queue: &withNaN, reason: "is NaN", counter: outcomes("nan")},
		{name: "empty result", mode: modePass, drop: true, reason: "empty result", counter: outcomes("empty")},
	}
	seenEvents := map[string]bool{}
	for _, f := range faults {
		ok := t.Run(f.name, func(t *testing.T) {
			began := time.Now()
			counted, cycled := c.metric(t, f.counter), c.cycles(t)
			served := proxy.count(f.mode)

			// The fault starts.
			if f.atSource() {
				if f.queue != nil {
					w.fleet.SetQueue(queue, *f.queue)
				}
				filter.drop.Store(f.drop)
				// At most a scrape interval before Prometheus serves it.
				waitFor(t, func() bool { return strings.Contains(direct(t.Context())[rules.QueueDepth].Reason, f.reason) })
			} else {
				proxy.set(t, f.mode)
			}
			// The loop waits an interval after a cycle before it begins the next. So when
			// the last decision was written less than an interval ago and none since, the
			// next cycle has not begun, and every cycle from it on queries the proxy's
			// fault: the fleet is raised at once. Otherwise (a fault at the source, which
			// reaches the controller with a scrape; or a slow test) it is raised after the
			// first decision that reports the fault, from which on every one sees it.
			first := len(c.reports(t)) // the first decision that reports the fault
			next := first              // the first made after the fleet is raised
			if f.atSource() || first != last.count || last.after.IsZero() || time.Since(last.after) >= interval*3/4 {
				for start := first; !anyContains(c.report(t, first).Missing, f.reason); first++ {
					if first > start+5 {
						t.Fatalf("%d decisions since the fault began, none reports it: %v", first-start, c.report(t, first).Missing)
					}
				}
				next = first + 1
			}
			// The fleet is now larger than the load needs; only the fault keeps it so.
			rv := scaleByHand(t, w.cluster, high)
			watch := watchReplicas(t, w.cluster, rv)
			// Two decisions under the fault from the raised fleet (a cycle that read the
			// Deployment just before it was raised does not count).
			i := next
			for atHigh := 0; atHigh < 2; i++ {
				if i > next+5 {
					t.Fatalf("decisions #%d to #%d: the controller does not see the %d replicas it was given", next+1, i, high)
				}
				rep := c.report(t, i)
				if !anyContains(rep.Missing, f.reason) {
					t.Errorf("decision #%d under the fault does not report it missing: %v", i+1, rep.Missing)
				}
				if rep.To.Replicas < rep.From.Replicas {
					t.Fatalf("decision #%d under the fault scales down: %d -> %d (%v)", i+1, rep.From.Replicas, rep.To.Replicas, rep.Reasons)
				}
				if rep.From.Replicas == high {
					atHigh++
				}
			}
			faulty := i - first
			// The apiserver's account: the replicas never went down during the fault.
			if got := specReplicas(t, w.cluster); got != high {
				t.Errorf("deployment has %d replicas under the fault, want %d", got, high)
			}
			for _, n := range watch() {
				if n < high {
					t.Errorf("the deployment went to %d replicas during the fault", n)
				}
			}
			if evs := newEvents(t, w.cluster, autoscaler.EventMetricsUnavailable, seenEvents); !anyContains(evs, f.reason) {
				t.Errorf("no new %s event naming %q; new ones: %q", autoscaler.EventMetricsUnavailable, f.reason, evs)
			}
			if n := c.metric(t, fmt.Sprintf("workerscale_metrics_missing{workload=%q}", queue)); n == 0 {
				t.Error("workerscale_metrics_missing is 0 under the fault")
			}
			if n := c.metric(t, f.counter); n <= counted {
				t.Errorf("%s stayed at %v", f.counter, n)
			}
			// The last cycle is counted once it ends, which may be just after its decision.
			if n := c.cycles(t); n < cycled+float64(faulty-1) {
				t.Errorf("workerscale_cycles_total went from %v to %v over %d decisions", cycled, n, faulty)
			}
			// (A refused connection never reaches the proxy's handler.)
			if !f.atSource() && f.mode != modeRefused && proxy.count(f.mode) == served {
				t.Errorf("the proxy injected no %s", f.mode)
			}

			// The fault clears.
			cleared := len(c.reports(t))
			if f.atSource() {
				w.fleet.SetQueue(queue, sane)
				filter.drop.Store(false)
				// Scrape and rate latency: the gauges are back at the next scrape (1s); the
				// completion counter's rate over the 4s window needs two samples, so up to a
				// second scrape. Until then the controller sees the fault still, rightly.
				waitFor(t, func() bool { return isSane(direct(t.Context())) })
			} else {
				proxy.set(t, modePass) // Prometheus's data was sane all along
			}
			saneAt := time.Now()
			// Decisions resume within one interval: when the data became sane, at most one
			// cycle was under way, and it may have queried the fault (its decision is
			// number inFlight, from 0); the next began after, an interval after that one
			// ended, and must be the scale-down. Counted in cycles, not in seconds. (After
			// a fault at the source the controller may see the data sane before the probe
			// above does, and scale down earlier still.)
			inFlight := len(c.reports(t))
			for i = cleared; ; i++ {
				rep, before := c.await(t, i)
				if rep.Applied && rep.To.Replicas < rep.From.Replicas {
					last.count, last.after = i+1, before
					break
				}
				if len(rep.Missing) == 0 {
					t.Fatalf("decision #%d, on sane data, did not scale down: %d -> %d (%v)", i+1, rep.From.Replicas, rep.To.Replicas, rep.Reasons)
				}
				if i > inFlight {
					t.Fatalf("decision #%d still reports %v, more than one cycle after the data was sane (#%d)", i+1, rep.Missing, inFlight+1)
				}
			}
			down := c.report(t, i).To.Replicas
			if got := specReplicas(t, w.cluster); got != down {
				t.Errorf("after the scale-down to %d the deployment has %d replicas", down, got)
			}
			if n := c.metric(t, fmt.Sprintf("workerscale_metrics_missing{workload=%q}", queue)); n != 0 {
				t.Errorf("workerscale_metrics_missing is %v after recovery", n)
			}
			if evs := newEvents(t, w.cluster, autoscaler.EventScaledIn, seenEvents); len(evs) == 0 {
				t.Errorf("no %s event after recovery", autoscaler.EventScaledIn)
			}
			c.alive(t)
			t.Logf("%d decisions under the fault; %d made when the data was sane again; the scale-down %d -> %d was decision #%d (%s after); the phase took %s",
				faulty, inFlight, high, down, i+1, time.Since(saneAt).Round(10*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
		})
		if !ok {
			break // the next fault would start from an unknown state
		}
	}
}

// anyContains reports whether any of texts (missing inputs with their reasons, event
// messages) contains s.
func anyContains(texts []string, s string) bool {
	for _, m := range texts {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// specReplicas is the Deployment's spec.replicas as the apiserver has it.
func specReplicas(t *testing.T, c *testenv.Cluster) int32 {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments("default").Get(t.Context(), "render", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// scaleByHand sets the Deployment's replicas by hand and returns its resourceVersion.
func scaleByHand(t *testing.T, c *testenv.Cluster, n int32) string {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments("default").Patch(t.Context(), "render", types.MergePatchType,
		fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.ResourceVersion
}

// watchReplicas watches the Deployment from resourceVersion rv; the function it returns
// stops the watch and returns the replicas of every change seen.
func watchReplicas(t *testing.T, c *testenv.Cluster, rv string) func() []int32 {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	wi, err := c.Client.AppsV1().Deployments("default").Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=render", ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	var seen []int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range wi.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && d.Spec.Replicas != nil {
				seen = append(seen, *d.Spec.Replicas)
			}
		}
	}()
	return func() []int32 {
		wi.Stop()
		cancel()
		<-done
		return seen
	}
}

// newEvents waits for events of reason on the Deployment that are not in seen, marks them
// seen and returns their messages (none when none came).
func newEvents(t *testing.T, c *testenv.Cluster, reason string, seen map[string]bool) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := c.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var messages []string
		for _, e := range list.Items {
			if e.Reason == reason && e.InvolvedObject.Name == "render" && !seen[e.Name] {
				seen[e.Name] = true
				messages = append(messages, e.Message)
			}
		}
		if len(messages) > 0 || time.Now().After(deadline) {
			return messages
		}
		time.Sleep(100 * time.Millisecond)
	}
}
