package prom

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// BenchmarkObserve1000 is one cycle for 1,000 workloads x 6 metrics against the real
// Prometheus of the test environment: it reports the queries a cycle issues (which must
// not grow with the workloads) and the time a cycle takes.
func BenchmarkObserve1000(b *testing.B) {
	const n = 1000
	fleet := testenv.NewFleet(b)
	for i := range n {
		fleet.SetQueue(fmt.Sprintf("q%d", i), testenv.Queue{Waiting: float64(i), Active: 2, CompletedPerSecond: 1, FailedPerSecond: 0.01})
		fleet.SetWorkload("fleet", fmt.Sprintf("w%d", i), testenv.Workload{Pods: 1, CPUCores: 0.5, CPURequest: 1, MemoryBytes: 1 << 30, MemoryRequest: 2 << 30})
	}
	p := testenv.StartPrometheus(b, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}, ScrapeInterval: 2 * time.Second})
	var y strings.Builder
	fmt.Fprintf(&y, "prometheus: {url: %q, timeout: 30s}\nqueries: {preset: bullmq, rateWindow: 10s}\n", p.URL)
	y.WriteString("classes: [{name: medium, cpu: '2', memory: 4Gi}]\nworkloads:\n")
	for i := range n {
		fmt.Fprintf(&y, "  - {name: w%d, queues: [q%d], maxReplicas: 50, target: {namespace: fleet, name: w%d}}\n", i, i, i)
	}
	r, err := rules.Parse("bench.yaml", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(r.Prometheus, Options{})
	if err != nil {
		b.Fatal(err)
	}
	// Wait for the data: every workload's six metrics fresh.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c := s.Observe(b.Context(), r, time.Now())
		fresh := 0
		for _, obs := range c.Observations {
			for _, o := range obs {
				if o.Status == autoscaler.Fresh {
					fresh++
				}
			}
		}
		if fresh == n*6 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d observations fresh after 2 minutes", fresh, n*6)
		}
		time.Sleep(time.Second)
	}
	b.ResetTimer()
	var queries int
	for b.Loop() {
		c := s.Observe(b.Context(), r, time.Now())
		queries = c.Queries
	}
	b.ReportMetric(float64(queries), "queries/cycle")
	b.ReportMetric(float64(n*6), "observations/cycle")
}
