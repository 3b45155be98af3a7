package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// countRequests counts the requests a client makes, reads and writes apart.
type countRequests struct {
	next          http.RoundTripper
	reads, writes atomic.Int64
}

func (c *countRequests) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		if r.URL.Query().Get("watch") != "true" {
			c.reads.Add(1)
		}
	} else {
		c.writes.Add(1)
	}
	return c.next.RoundTrip(r)
}

// BenchmarkCycle runs the control loop's cycle against a real kube-apiserver and a real
// Prometheus with 1,000 and 5,000 workloads in 10 namespaces, each a Deployment and its
// queue's series (issue 13's targets: under 1 s at 1,000 and 5 s at 5,000; no read and one
// write per changed workload; one query per metric; resident memory under 64 MB at 1,000).
// It reports the API reads and writes and the Prometheus queries of a cycle, and the heap
// after the cycles. `make bench` runs it; run one size with -bench 'Cycle/1000'.
func BenchmarkCycle(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchmarkCycle(b, n) })
	}
}

// benchWorld is the world of the cycle benchmarks: a fixture exporter with n queues and
// their workloads' pod metrics, a real Prometheus scraping it, and a real kube-apiserver
// holding n worker Deployments in 10 namespaces (team-0 to team-9).
type benchWorld struct {
	cluster *testenv.Cluster
	// rules is the rules file that names every workload, and parsed what it parses to.
	rules  []byte
	parsed *rules.Rules
	n      int
}

// newBenchWorld starts the components and creates the namespaces and the n Deployments;
// interval is the rules' interval (such as 15s).
func newBenchWorld(b *testing.B, n int, interval string) *benchWorld {
	b.Helper()
	fleet := testenv.NewFleet(b)
	// Scraped every 15 s, as a production Prometheus scrapes (its default is 1m,
	// kube-prometheus-stack's 30s), not the test environment's 1 s: at 5,000 workloads the
	// fixture exposes more than 100,000 series, and scraping and ingesting them every second
	// shares this machine's cores with the queries a cycle waits for (a cycle then took
	// 6.0-6.3 s at 5,000 workloads, 95% of it waiting on Prometheus; docs/benchmark.md).
	p := testenv.StartPrometheus(b, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}, ScrapeInterval: 15 * time.Second})
	cluster := testenv.StartCluster(b)
	ctx := b.Context()
	var rb strings.Builder
	fmt.Fprintf(&rb, "prometheus: {url: %q}\ninterval: %s\nqueries: {preset: bullmq}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}\nworkloads:\n", p.URL, interval)
	for ns := range 10 {
		if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%d", ns)}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// The Deployments, created a few at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		ns, name := fmt.Sprintf("team-%d", i%10), fmt.Sprintf("w%d", i)
		fmt.Fprintf(&rb, "  - {name: %s, maxReplicas: 20, queues: [%s], target: {namespace: %s, name: %s}}\n", name, name, ns, name)
		fleet.SetQueue(name, testenv.Queue{Waiting: float64(i % 7), Active: 4, CompletedPerSecond: 1})
		fleet.SetWorkload(ns, name, testenv.Workload{Pods: 2, CPUCores: 1, CPURequest: 2, MemoryBytes: 1 << 30, MemoryRequest: 4 << 30})
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d := testenv.WorkerDeployment(ns, name, 2, "2", "4Gi", testenv.Concurrency("5", "2")...)
			if _, err := cluster.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	r, err := rules.Parse("bench.yaml", []byte(rb.String()))
	if err != nil {
		b.Fatal(err)
	}
	return &benchWorld{cluster: cluster, rules: []byte(rb.String()), parsed: r, n: n}
}

// waitForSeries waits until Prometheus has every queue's series: the last workload's queue
// depth is fresh through source.
func (w *benchWorld) waitForSeries(b *testing.B, source *prom.Source) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c := source.Observe(b.Context(), w.parsed, time.Now())
		if o := c.Observations[fmt.Sprintf("w%d", w.n-1)][rules.QueueDepth]; o.Status == autoscaler.Fresh {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("Prometheus has no fresh queue depth for the last workload after 2m")
		}
		time.Sleep(time.Second)
	}
}

func benchmarkCycle(b *testing.B, n int) {
	w := newBenchWorld(b, n, "15s")
	cluster, r, ctx := w.cluster, w.parsed, b.Context()
	counter := &countRequests{}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS, cfg.Burst = 20, 30 // run's defaults
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	kc, err := kube.New(cfg, nil, true)
	if err != nil {
		b.Fatal(err)
	}
	defer kc.Close()
	reg := prometheus.NewRegistry()
	promMetrics := prom.NewMetrics(reg)
	source, err := prom.New(r.Prometheus, prom.Options{Metrics: promMetrics})
	if err != nil {
		b.Fatal(err)
	}
	defer source.Close()
	var queries atomic.Int64
	loop := &autoscaler.Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(ctx context.Context, r *rules.Rules, at time.Time) (map[string]autoscaler.Observations, []error) {
			c := source.Observe(ctx, r, at)
			queries.Add(int64(c.Queries))
			return c.Observations, c.Errors
		},
		Cluster: kc, Metrics: autoscaler.NewLoopMetrics(reg), DryRun: true,
	}
	// Wait until Prometheus has every queue's series, then a first cycle fills the caches.
	w.waitForSeries(b, source)
	if err := loop.RunOnce(ctx); err != nil {
		b.Logf("first cycle: %v", err)
	}
	counter.reads.Store(0)
	counter.writes.Store(0)
	queries.Store(0)
	b.ResetTimer()
	for b.Loop() {
		if err := loop.RunOnce(ctx); err != nil {
			b.Logf("cycle: %v", err)
		}
	}
	b.StopTimer()
	cycles := float64(b.N)
	b.ReportMetric(float64(counter.reads.Load())/cycles, "api-reads/cycle")
	b.ReportMetric(float64(counter.writes.Load())/cycles, "api-writes/cycle")
	b.ReportMetric(float64(queries.Load())/cycles, "prom-queries/cycle")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
}
