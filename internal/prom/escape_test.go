package prom

import (
	"fmt"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// TestObserveHostileQueueNames: a real Prometheus scrapes queues with hostile names and
// decoys that an unescaped query would select (x, a, b, new, ...); each workload gets its
// own queue's values, and the decoys are never read.
func TestObserveHostileQueueNames(t *testing.T) {
	e := startEnv(t)
	var y strings.Builder
	fmt.Fprintf(&y, "prometheus: {url: %q, timeout: 5s, staleness: 30s}\nqueries: {preset: bullmq, rateWindow: 4s}\n", e.proxy.server.URL)
	y.WriteString("classes: [{name: medium, cpu: '2', memory: 4Gi}]\nworkloads:\n")
	for i, q := range hostileQueues {
		e.fleet.SetQueue(q, testenv.Queue{Waiting: float64(10 * (i + 1)), Active: float64(i + 1), CompletedPerSecond: 1})
		fmt.Fprintf(&y, "  - {name: w%d, queues: [%q], maxReplicas: 50, target: {namespace: fleet, name: w%d}}\n", i, q, i)
	}
	for _, decoy := range []string{"x", "a", "b", "new", "line", "q0", "Q0", "y", "back", "it", "1", "spaced", "anything"} {
		e.fleet.SetQueue(decoy, testenv.Queue{Waiting: 1e6, Active: 1e6, CompletedPerSecond: 1})
	}
	r, err := rules.Parse("test.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	c := waitFresh(t, newSource(t, r, nil), r, rules.QueueDepth, rules.ActiveJobs)
	if len(c.Errors) > 0 {
		t.Errorf("errors: %v", c.Errors)
	}
	for i, q := range hostileQueues {
		o := c.Observations[fmt.Sprintf("w%d", i)]
		if d, a := o[rules.QueueDepth], o[rules.ActiveJobs]; d.Status != autoscaler.Fresh || d.Value != float64(10*(i+1)) || a.Value != float64(i+1) {
			t.Errorf("queue %q: depth %+v, active %+v; want %d and %d", q, d, a, 10*(i+1), i+1)
		}
	}
}
