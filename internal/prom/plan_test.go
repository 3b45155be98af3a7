package prom

import (
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// TestPlanSendsIdenticalQueriesOnce: workloads whose overrides render to the same text
// share one query; a different override is one more.
func TestPlanSendsIdenticalQueriesOnce(t *testing.T) {
	r, err := rules.Parse("t.yaml", []byte(`
prometheus: {url: "http://p:9090"}
queries: {preset: bullmq}
classes: [{name: s, cpu: "1", memory: 2Gi}]
workloads:
  - {name: a, maxReplicas: 3}
  - name: b
    maxReplicas: 3
    queries:
      queueDepth: {query: 'sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state=~"waiting|prioritized"})', freshness: 'min by (queue) (timestamp(bullmq_job_count{queue=~"{{.Queues}}"}))'}
  - name: c
    maxReplicas: 3
    queries:
      queueDepth: {query: 'sum by (queue) (my_depth{queue=~"{{.Queues}}"})'}
`))
	if err != nil {
		t.Fatal(err)
	}
	values, freshness, err := plan(r)
	if err != nil {
		t.Fatal(err)
	}
	// The preset's 6 queries, plus c's own queue depth; b's override equals the preset's.
	if len(values) != 7 || len(freshness) != 4 {
		t.Errorf("%d value and %d freshness queries, want 7 and 4", len(values), len(freshness))
	}
	for _, b := range values {
		if b.match == rules.MatchQueue && len(b.uses) == 2 {
			names := []string{r.Workloads[b.uses[0].workload].Name, r.Workloads[b.uses[1].workload].Name}
			if names[0] != "a" || names[1] != "b" {
				t.Errorf("a shared queue-depth query serves %v, want a and b", names)
			}
		}
	}
}
