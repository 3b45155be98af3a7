package prom

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/workerscale/workerscale/autoscaler"
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
	// The preset's 7 queries and 5 per-pod ones, plus c's own queue depth; b's override
	// equals the preset's.
	if len(values) != 13 || len(freshness) != 5 {
		t.Errorf("%d value and %d freshness queries, want 13 and 5", len(values), len(freshness))
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

// hostileQueues are queue names that rewrite a query whose values are not escaped.
var hostileQueues = []string{
	`x", job!="`, `a|b`, `.*`, "new\nline", `}{`, `x"} or vector(1) or {y="`, `back\slash`, `it's`,
	`$1`, `a,b`, ` spaced `, `(?i)q0`, `ünï`, "\uFFFD", "tab\t",
}

// TestPlanEscapesQueueNames: every query the engine sends, with hostile queue names,
// parses, and each of its queue matchers matches exactly the rules' queues.
func TestPlanEscapesQueueNames(t *testing.T) {
	var y strings.Builder
	y.WriteString("prometheus: {url: 'http://p:9090'}\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads:\n")
	for i, q := range hostileQueues {
		fmt.Fprintf(&y, "  - {name: w%d, maxReplicas: 3, queues: [%q]}\n", i, q)
	}
	r, err := rules.Parse("t.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	values, freshness, err := plan(r)
	if err != nil {
		t.Fatal(err)
	}
	p := parser.NewParser(parser.Options{})
	queueMatchers := 0
	for _, b := range slices.Concat(values, freshness) {
		expr, err := p.ParseExpr(b.query)
		if err != nil {
			t.Fatalf("%v\n%s", err, b.query)
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			for _, m := range vs.LabelMatchers {
				switch m.Name {
				case "queue":
					queueMatchers++
					for _, v := range slices.Concat(hostileQueues, []string{"x", "a", "b", "q0", "Q0", "new", "", "anything"}) {
						if want := slices.Contains(hostileQueues, v); m.Matches(v) != want {
							t.Errorf("%s matches %q: %v, want %v\n%s", m, v, !want, want, b.query)
						}
					}
				case "job", "y":
					t.Errorf("a queue name added the matcher %s\n%s", m, b.query)
				}
			}
			return nil
		})
	}
	// Queue depth, active jobs, throughput, completion rate (3) and two freshness queries.
	if queueMatchers < 8 {
		t.Errorf("%d queue matchers, want at least 8", queueMatchers)
	}
}

// TestUnavailableSeriesMakeTheMetricMissing: a series labelled rules.UnavailableLabel
// makes its queue's metric missing with the label's value as the reason, even beside a
// value for that queue; other queues read their values.
func TestUnavailableSeriesMakeTheMetricMissing(t *testing.T) {
	now := time.Now()
	prometheus := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		value := func(v float64) string { return fmt.Sprintf(`[%d, "%v"]`, now.Unix(), v) }
		series := fmt.Sprintf(`{"metric": {"queue": "q0"}, "value": %s},
			{"metric": {"queue": "q1", %q: "the counter is off"}, "value": %s},
			{"metric": {"queue": "q2"}, "value": %s},
			{"metric": {"queue": "q2", %q: "the counter is off"}, "value": %s}`,
			value(3), rules.UnavailableLabel, value(0), value(1), rules.UnavailableLabel, value(0))
		if strings.Contains(r.FormValue("query"), "timestamp(") {
			series = fmt.Sprintf(`{"metric": {"queue": "q0"}, "value": %[1]s}, {"metric": {"queue": "q1"}, "value": %[1]s}, {"metric": {"queue": "q2"}, "value": %[1]s}`, value(float64(now.Unix())))
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status": "success", "data": {"resultType": "vector", "result": [%s]}}`, series)
	}))
	t.Cleanup(prometheus.Close)
	r, err := rules.Parse("t.yaml", []byte(fmt.Sprintf(`
prometheus: {url: %q, staleness: 30s}
queries:
  templates:
    throughput: {query: 'sum by (queue) (rate(done_total{queue=~"{{.Queues}}"}[5m]))', freshness: 'min by (queue) (timestamp(done_total{queue=~"{{.Queues}}"}))'}
classes: [{name: s, cpu: "1", memory: 2Gi}]
workloads:
  - {name: a, queues: [q0], maxReplicas: 3}
  - {name: b, queues: [q1], maxReplicas: 3}
  - {name: c, queues: [q2], maxReplicas: 3}
`, prometheus.URL)))
	if err != nil {
		t.Fatal(err)
	}
	reg := promclient.NewRegistry()
	s := newSource(t, r, reg)
	c := s.Observe(t.Context(), r, now)
	if o := c.Observations["a"][rules.Throughput]; o.Status != autoscaler.Fresh || o.Value != 3 {
		t.Errorf("a = %+v, want fresh 3", o)
	}
	for _, w := range []string{"b", "c"} {
		want := "the counter is off (queue " + map[string]string{"b": "q1", "c": "q2"}[w] + ")"
		if o := c.Observations[w][rules.Throughput]; o.Status != autoscaler.Missing || o.Reason != want {
			t.Errorf("%s = %+v, want missing: %s", w, o, want)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := 0.0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if f.GetName() == "workerscale_prometheus_observations_total" && labels["outcome"] == "unavailable" {
				counted += m.GetCounter().GetValue()
			}
		}
	}
	if counted != 2 {
		t.Errorf("unavailable outcomes counted: %v, want 2 (b and c)", counted)
	}
}
