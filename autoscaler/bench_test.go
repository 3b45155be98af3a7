package autoscaler

import (
	"fmt"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// BenchmarkDecideAll1000 is one evaluation of 1,000 workloads, a tenth of them sharing
// rate budgets, with a full set of fresh metrics and some history.
func BenchmarkDecideAll1000(b *testing.B) {
	var y strings.Builder
	y.WriteString(seedClasses)
	y.WriteString("rateBudgets:\n")
	for i := range 10 {
		fmt.Fprintf(&y, "  - {name: pool%d, keys: 5, safeRequestsPerSecond: 70}\n", i)
	}
	y.WriteString("workloads:\n")
	for i := range 1000 {
		fmt.Fprintf(&y, "  - {name: w%d, maxReplicas: 50", i)
		if i%10 == 0 {
			fmt.Fprintf(&y, ", rateBudget: pool%d, requestsPerJob: 2, horizontal: {jobDuration: 1s}", i/100)
		}
		y.WriteString("}\n")
	}
	r := load(b, y.String())
	inputs := make([]Input, len(r.Workloads))
	for i := range r.Workloads {
		obs := fresh(map[string]float64{rules.QueueDepth: float64(i % 700), rules.Throughput: 3, rules.ActiveJobs: 12, rules.CPU: 0.5 + float64(i%50)/100})
		h := History{Recommendations: []Recommendation{{Time: t0.Add(-60e9), Replicas: 4}, {Time: t0.Add(-30e9), Replicas: 5}}}
		inputs[i] = Input{Workload: &r.Workloads[i], Observations: obs, State: state(5, "medium", 5, 2), History: h}
	}
	b.ReportAllocs()
	for b.Loop() {
		ds := DecideAll(t0, r, inputs)
		if len(ds) != 1000 {
			b.Fatal(len(ds))
		}
	}
}
