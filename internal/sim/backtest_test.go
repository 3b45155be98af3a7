package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/rules"
)

const backtestRules = `prometheus: {url: "http://127.0.0.1:9", staleness: 1m}
interval: 15s
queries: {preset: bullmq}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
workloads:
  - name: render
    target: {namespace: luneo, name: luneo-worker-ia, container: worker}
    queues: [render]
    minReplicas: 2
    maxReplicas: 20
    horizontal: {sizing: seed}
`

func backtestRulesFor(t *testing.T) *rules.Rules {
	t.Helper()
	r, err := rules.Parse("backtest.yaml", []byte(backtestRules))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var btT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// btSeries is n points every step from btT0; value says each one's value, or no point.
func btSeries(n int, step time.Duration, value func(k int, at time.Time) (float64, bool)) []prom.Point {
	var pts []prom.Point
	for k := range n {
		at := btT0.Add(time.Duration(k) * step)
		if v, ok := value(k, at); ok {
			pts = append(pts, prom.Point{T: at, V: v})
		}
	}
	return pts
}

func btConst(v float64) func(int, time.Time) (float64, bool) {
	return func(int, time.Time) (float64, bool) { return v, true }
}

// btCalm is a fleet with little to do: every metric fresh, the queue as depth says.
func btCalm(n int, step time.Duration, depth func(k int, at time.Time) (float64, bool)) prom.Ranges {
	return prom.Ranges{"render": {
		rules.QueueDepth:     btSeries(n, step, depth),
		rules.ActiveJobs:     btSeries(n, step, btConst(2)),
		rules.Throughput:     btSeries(n, step, btConst(5)),
		rules.CompletionRate: btSeries(n, step, btConst(1)),
		rules.CPU:            btSeries(n, step, btConst(0.6)),
		rules.Memory:         btSeries(n, step, btConst(0.5)),
	}}
}

func medium(replicas int32) autoscaler.Shape {
	return autoscaler.Shape{Replicas: replicas, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
}

// TestBacktestCarriesHistory: the replay keeps the engine's history from step to step and
// records its own changes as applied, so the scale-down stabilization window and the
// scale-up rate policy act across steps, and only changes are reported.
func TestBacktestCarriesHistory(t *testing.T) {
	r := backtestRulesFor(t)
	const n = 41 // 10 minutes at 15 s
	// 30 jobs need 9 workers, within the tolerance of 10; from the fifth step the queue is
	// empty and 2 workers do (minReplicas).
	busyThenIdle := btCalm(n, 15*time.Second, func(k int, _ time.Time) (float64, bool) {
		if k < 4 {
			return 30, true
		}
		return 0, true
	})
	gap := btCalm(n, 15*time.Second, func(k int, at time.Time) (float64, bool) {
		switch {
		case k < 4:
			return 30, true
		case at.Sub(btT0) >= 330*time.Second && at.Sub(btT0) < 420*time.Second:
			return 0, false // not recorded: missing, never 0
		}
		return 0, true
	})
	surge := btCalm(121, 5*time.Second, btConst(200))
	for _, tc := range []struct {
		name   string
		step   time.Duration
		steps  int
		start  int32
		values prom.Ranges
		want   []string // "offset from -> to"
		final  int32
	}{
		// The last recommendation of 10 is at 45 s; the window of 300 s lets the count
		// fall only when that one has left it, at 345 s, and nothing changes afterwards.
		{"scale-down held by the stabilization window", 15 * time.Second, n, 10, busyThenIdle, []string{"5m45s 10 -> 2"}, 2},
		// The queue depth is not recorded from 330 s to 405 s: no scale-down while it is
		// missing; once it is back, the window has passed.
		{"no scale-down while a metric is missing", 15 * time.Second, n, 10, gap, []string{"7m0s 10 -> 2"}, 2},
		// 200 jobs need 60 workers, 20 at most. Scale-up: at most max(+4, +100 %) per 15 s,
		// counted from the changes the replay applied: at 5 s and 10 s the policy still
		// sees the change at 0 s and holds.
		{"the rate policy counts applied changes", 5 * time.Second, 121, 2, surge, []string{"0s 2 -> 6", "15s 6 -> 12", "30s 12 -> 20"}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Backtest{Rules: r, From: btT0, To: btT0.Add(time.Duration(tc.steps-1) * tc.step), Step: tc.step,
				Values: tc.values, Start: map[string]autoscaler.Shape{"render": medium(tc.start)}}
			res, err := b.Replay()
			if err != nil {
				t.Fatal(err)
			}
			if res.Steps != tc.steps {
				t.Errorf("steps = %d, want %d", res.Steps, tc.steps)
			}
			var got []string
			for _, c := range res.Changes {
				got = append(got, fmt.Sprintf("%s %d -> %d", c.Time.Sub(btT0), c.From.Replicas, c.To.Replicas))
				if c.Workload != "render" || len(c.Reasons) == 0 || !c.Changed() {
					t.Errorf("change %+v: want render's, changed, with reasons", c)
				}
			}
			if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("changes = %q, want %q", got, tc.want)
			}
			if want := medium(tc.final); res.Final["render"] != want {
				t.Errorf("final = %+v, want %+v", res.Final["render"], want)
			}
		})
	}
}

// TestBacktestChangeJSON: a change is explain's decision with its time.
func TestBacktestChangeJSON(t *testing.T) {
	r := backtestRulesFor(t)
	b := Backtest{Rules: r, From: btT0, To: btT0, Step: 15 * time.Second, Values: btCalm(1, 15*time.Second, btConst(200)),
		Start: map[string]autoscaler.Shape{"render": medium(2)}}
	res, err := b.Replay()
	if err != nil || len(res.Changes) != 1 {
		t.Fatalf("%v, %d changes", err, len(res.Changes))
	}
	data, err := json.Marshal(res.Changes[0])
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "workload", "from", "to", "grades", "metrics", "limitedBy", "reasons"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %q in %s", k, data)
		}
	}
	if string(got["time"]) != `"2026-03-01T12:00:00Z"` {
		t.Errorf("time = %s", got["time"])
	}
}

// TestBacktestObservation: a step's observation is what a live cycle would have seen:
// missing without a finite value at that step (never 0), stale when its samples are older
// than the staleness bound or their age is unknown.
func TestBacktestObservation(t *testing.T) {
	at := btT0.Add(time.Minute)
	ms := at.UnixMilli()
	secs := func(d time.Duration) float64 { return float64(at.Add(-d).UnixMilli()) / 1000 }
	for _, tc := range []struct {
		name   string
		m      btMetric
		status autoscaler.Status
		reason string
	}{
		{"fresh, freshness not checked", btMetric{values: map[int64]float64{ms: 7}}, autoscaler.Fresh, ""},
		{"fresh", btMetric{values: map[int64]float64{ms: 7}, fresh: map[int64]float64{ms: secs(20 * time.Second)}}, autoscaler.Fresh, ""},
		{"no point at this step", btMetric{values: map[int64]float64{ms - 15000: 7}}, autoscaler.Missing, "no value at this step"},
		{"NaN", btMetric{values: map[int64]float64{ms: math.NaN()}}, autoscaler.Missing, "not a finite number"},
		{"old samples", btMetric{values: map[int64]float64{ms: 7}, fresh: map[int64]float64{ms: secs(90 * time.Second)}}, autoscaler.Stale,
			"its samples are 1m30s old, past the 1m0s staleness bound"},
		{"age unknown", btMetric{values: map[int64]float64{ms: 7}, fresh: map[int64]float64{}}, autoscaler.Stale, "the age of its samples is unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.m.at(at, time.Minute)
			if o.Status != tc.status || !strings.Contains(o.Reason, tc.reason) {
				t.Errorf("got %s %q, want %s %q", o.Status, o.Reason, tc.status, tc.reason)
			}
			if o.Status == autoscaler.Missing && o.Value != 0 {
				t.Errorf("a missing value carries %v", o.Value)
			}
		})
	}
}

// TestBacktestStaleHoldsScaleDown: with freshness ranges, a queue depth whose samples
// froze is stale, and the fleet is not scaled down on it.
func TestBacktestStaleHoldsScaleDown(t *testing.T) {
	r := backtestRulesFor(t)
	const n = 41
	values := btCalm(n, 15*time.Second, btConst(0))
	fresh := prom.Ranges{"render": {}}
	for m := range values["render"] {
		fresh["render"][BacktestFreshnessMetric(m)] = btSeries(n, 15*time.Second, func(_ int, at time.Time) (float64, bool) {
			if m == rules.QueueDepth {
				return float64(btT0.Unix() - 600), true // the exporter froze 10 minutes ago
			}
			return float64(at.Unix()), true
		})
	}
	b := Backtest{Rules: r, From: btT0, To: btT0.Add(10 * time.Minute), Step: 15 * time.Second, Values: values, Freshness: fresh,
		Start: map[string]autoscaler.Shape{"render": medium(10)}}
	res, err := b.Replay()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 {
		t.Errorf("scaled on a stale queue depth: %+v", res.Changes[0])
	}
	b.Freshness = nil
	if res, _ := b.Replay(); len(res.Changes) != 1 {
		t.Errorf("without freshness the same values scale down once, got %d changes", len(res.Changes))
	}
}

func TestBacktestBadArguments(t *testing.T) {
	r := backtestRulesFor(t)
	ok := Backtest{Rules: r, From: btT0, To: btT0.Add(time.Minute), Step: 15 * time.Second,
		Start: map[string]autoscaler.Shape{"render": medium(2)}}
	for _, tc := range []struct {
		name string
		edit func(b *Backtest)
		want string
	}{
		{"no start", func(b *Backtest) { b.Start = nil }, "no starting shape for workload render"},
		{"zero step", func(b *Backtest) { b.Step = 0 }, "the step must be positive"},
		{"backwards", func(b *Backtest) { b.To = btT0.Add(-time.Minute) }, "is before the start"},
		{"too many steps", func(b *Backtest) { b.Step = time.Millisecond; b.To = btT0.Add(time.Hour) }, "at most 1000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := ok
			tc.edit(&b)
			if _, err := b.Replay(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Nothing recorded at all: every metric missing, the shape held.
	res, err := ok.Replay()
	if err != nil || len(res.Changes) != 0 || res.Steps != 5 || res.Final["render"] != medium(2) {
		t.Errorf("replay over no data: %v, %+v", err, res)
	}
}

// TestBacktestRecordedShape: the starting shape from kube-state-metrics, the class by the
// container's requests.
func TestBacktestRecordedShape(t *testing.T) {
	r := backtestRulesFor(t)
	w := &r.Workloads[0]
	pt := func(v float64) []prom.Point { return []prom.Point{{T: btT0, V: v}} }
	for _, tc := range []struct {
		name     string
		rg       prom.Ranges
		replicas int32
		ok       bool
		class    string
	}{
		{"all recorded", prom.Ranges{"render": {StateReplicas: pt(3), StateCPURequest: pt(2), StateMemoryRequest: pt(4 << 30)}}, 3, true, "medium"},
		{"other requests", prom.Ranges{"render": {StateReplicas: pt(3), StateCPURequest: pt(1.5), StateMemoryRequest: pt(4 << 30)}}, 3, true, autoscaler.CustomClass},
		{"no requests", prom.Ranges{"render": {StateReplicas: pt(3)}}, 3, true, ""},
		{"nothing", prom.Ranges{}, 0, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replicas, ok, class := BacktestRecordedShape(r, w, tc.rg, btT0)
			if replicas != tc.replicas || ok != tc.ok || class != tc.class {
				t.Errorf("got %d %v %q, want %d %v %q", replicas, ok, class, tc.replicas, tc.ok, tc.class)
			}
		})
	}
}

// TestBacktestQueryRules: the rules for freshness and for the recorded shape leave the
// rules they come from untouched and render as batched queries.
func TestBacktestQueryRules(t *testing.T) {
	r := backtestRulesFor(t)
	before := len(r.Workloads[0].Queries)
	fr := BacktestFreshnessRules(r)
	st := BacktestStateRules(r)
	if len(r.Workloads[0].Queries) != before || r.Workloads[0].Queries[rules.QueueDepth].Freshness == "" {
		t.Fatal("the source rules changed")
	}
	data := r.TemplateData()
	f := fr.Workloads[0]
	if got := len(f.Queries); got != before {
		t.Errorf("%d freshness queries, want %d", got, before)
	}
	fq := f.Queries[BacktestFreshnessMetric(rules.QueueDepth)]
	if text, err := fq.Render(data); err != nil || !strings.Contains(text, "timestamp(bullmq_job_count") {
		t.Errorf("freshness query %q, %v", text, err)
	}
	if f.Aggregation(BacktestFreshnessMetric(rules.QueueDepth)) != "min" {
		t.Errorf("freshness of several queues must combine to the oldest")
	}
	for metric, want := range map[string]string{
		StateReplicas:      `kube_deployment_spec_replicas{namespace=~"luneo", deployment=~"luneo-worker-ia"}`,
		StateCPURequest:    `resource="cpu", container=~"worker"`,
		StateMemoryRequest: `resource="memory", container=~"worker"`,
	} {
		q := st.Workloads[0].Queries[metric]
		text, err := q.Render(data)
		if err != nil || !strings.Contains(text, want) || q.Match != rules.MatchTarget {
			t.Errorf("%s: %q, %v; want it to contain %q", metric, text, err, want)
		}
	}
}
