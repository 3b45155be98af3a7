package sim

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/rules"
)

// Backtest replays recorded metrics through the decision engine: at each step of a grid
// over [From, To], every workload's observations are cut out of the ranges as a cycle at
// that time would have seen them, all workloads are decided together (autoscaler.DecideAll,
// so shared rate budgets apply), and the history is carried as the control loop carries it.
// A decision that changes a shape is taken as applied at once: the next step starts from
// its shape, with no rollout in progress, and its history records
// the change (History.Applied). The recorded metrics are what really ran; they do not
// respond to the decisions replayed: so the ready replicas the engine is given stay the
// recording's starting count, the pods the recorded CPU, memory and active jobs come
// from, and once the replay has changed the replica count the engine sees a fleet that is
// not all ready and measures no job's CPU and memory on it.
type Backtest struct {
	Rules *rules.Rules
	// From, Step and To are the grid: From, From+Step, ... up to To, the timestamps of
	// Prometheus's query_range over the same arguments.
	From, To time.Time
	Step     time.Duration
	// Values are the rules' metrics over the grid (prom.Source.Range over Rules). A metric
	// the workload has a query for and that has no point at a step is missing there.
	Values prom.Ranges
	// Freshness holds, under BacktestFreshnessMetric(metric), the Unix time in seconds of
	// the oldest newest sample behind each value (prom.Source.Range over
	// BacktestFreshnessRules). A value older than prometheus.staleness, or whose age has no
	// point at that step, is stale, as in a live cycle. Nil checks no freshness.
	Freshness prom.Ranges
	// Start is every workload's shape at From, by workload name.
	Start map[string]autoscaler.Shape
}

// BacktestChange is a decision that changed a workload's shape, at the step it was made.
// Its JSON is explain's decision with a "time" field.
type BacktestChange struct {
	Time time.Time `json:"time"`
	autoscaler.Decision
}

// BacktestResult is what a replay decided.
type BacktestResult struct {
	// Steps is how many steps were replayed.
	Steps int
	// Changes are the decisions that changed a shape, in time order (by workload within a
	// step, in the rules' order). Decisions that keep the shape are left out.
	Changes []BacktestChange
	// Final is every workload's shape after the last step.
	Final map[string]autoscaler.Shape
}

// BacktestMaxSteps bounds a replay's grid.
const BacktestMaxSteps = 1_000_000

// BacktestSteps is the number of steps of the grid From, From+step, ... up to To.
func BacktestSteps(from, to time.Time, step time.Duration) (int, error) {
	switch {
	case step <= 0:
		return 0, fmt.Errorf("the step must be positive, got %s", step)
	case to.Before(from):
		return 0, fmt.Errorf("the end %s is before the start %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	n := to.Sub(from)/step + 1
	if n > BacktestMaxSteps {
		return 0, fmt.Errorf("%s at a step of %s is %d steps; at most %d", to.Sub(from), step, n, BacktestMaxSteps)
	}
	return int(n), nil
}

// Replay runs the backtest. It fails only on inconsistent arguments: a workload without a
// starting shape, or a bad grid.
func (b Backtest) Replay() (BacktestResult, error) {
	r := b.Rules
	if r == nil {
		return BacktestResult{}, errors.New("backtest: no rules")
	}
	n, err := BacktestSteps(b.From, b.To, b.Step)
	if err != nil {
		return BacktestResult{}, fmt.Errorf("backtest: %w", err)
	}
	type replayed struct {
		w       *rules.Workload
		metrics []btMetric
		state   autoscaler.State
		hist    autoscaler.History
		// recorded is the replica count of the recording, whose pods the metrics are of.
		recorded int32
	}
	all := make([]*replayed, len(r.Workloads))
	for i := range r.Workloads {
		w := &r.Workloads[i]
		shape, ok := b.Start[w.Name]
		if !ok {
			return BacktestResult{}, fmt.Errorf("backtest: no starting shape for workload %s", w.Name)
		}
		all[i] = &replayed{w: w, metrics: b.metricsOf(w), state: btState(shape, shape.Replicas), recorded: shape.Replicas}
	}
	res := BacktestResult{Steps: n, Final: map[string]autoscaler.Shape{}}
	staleness := r.Prometheus.Staleness.D()
	inputs := make([]autoscaler.Input, len(all))
	for k := range n {
		now := b.From.Add(time.Duration(k) * b.Step)
		for i, x := range all {
			obs := autoscaler.Observations{}
			for _, m := range x.metrics {
				obs[m.name] = m.at(now, staleness)
			}
			inputs[i] = autoscaler.Input{Workload: x.w, Observations: obs, State: x.state, History: x.hist}
		}
		for i, d := range autoscaler.DecideAll(now, r, inputs) {
			x := all[i]
			x.hist = d.History
			if d.Changed() {
				// As the control loop does once the write succeeded.
				x.hist = x.hist.Applied(now, d)
				x.state = btState(d.To, x.recorded)
				res.Changes = append(res.Changes, BacktestChange{Time: now, Decision: d})
			}
		}
	}
	for _, x := range all {
		res.Final[x.w.Name] = x.state.Shape
	}
	return res, nil
}

// btState is a shape taken at once, no rollout in progress, with the recording's ready
// pods.
func btState(s autoscaler.Shape, ready int32) autoscaler.State {
	return autoscaler.State{Shape: s, ReadyReplicas: ready}
}

// btMetric is one metric of a workload, its points indexed by time.
type btMetric struct {
	name   string
	values map[int64]float64 // by Unix milliseconds, Prometheus's resolution
	// fresh is nil when the metric's freshness is not checked.
	fresh map[int64]float64
}

func (b Backtest) metricsOf(w *rules.Workload) []btMetric {
	index := func(pts []prom.Point) map[int64]float64 {
		m := make(map[int64]float64, len(pts))
		for _, p := range pts {
			m[p.T.UnixMilli()] = p.V
		}
		return m
	}
	var out []btMetric
	for _, name := range slices.Sorted(maps.Keys(w.Queries)) {
		m := btMetric{name: name, values: index(b.Values[w.Name][name])}
		if b.Freshness != nil && w.Queries[name].Freshness != "" {
			m.fresh = index(b.Freshness[w.Name][BacktestFreshnessMetric(name)])
		}
		out = append(out, m)
	}
	return out
}

// at is the metric as a live cycle at now would have observed it: missing without a
// finite value at that step, stale when its samples are older than the staleness bound or
// their age is unknown (as internal/prom's Observe marks them).
func (m btMetric) at(now time.Time, staleness time.Duration) autoscaler.Observation {
	v, ok := m.values[now.UnixMilli()]
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return autoscaler.Absent("no value at this step: no series, no sample within Prometheus's lookback, or not a finite number")
	}
	o := autoscaler.Value(v)
	if m.fresh == nil {
		return o
	}
	ts, ok := m.fresh[now.UnixMilli()]
	if !ok || math.IsNaN(ts) || math.IsInf(ts, 0) {
		o.Status, o.Reason = autoscaler.Stale, "the age of its samples is unknown: the freshness query has no value at this step"
		return o
	}
	if age := now.Sub(time.Unix(0, int64(ts*1e9))); age > staleness {
		o.Status = autoscaler.Stale
		o.Reason = fmt.Sprintf("its samples are %s old, past the %s staleness bound", age.Round(time.Second), staleness)
	}
	return o
}

// BacktestFreshnessMetric is the name under which BacktestFreshnessRules read a metric's
// freshness.
func BacktestFreshnessMetric(metric string) string { return "freshness:" + metric }

// BacktestFreshnessRules returns rules whose queries are r's freshness templates, each as
// the value of BacktestFreshnessMetric(metric), for prom.Source.Range. The timestamps of
// a workload's several queues combine to the oldest (a lowerIsWorse threshold makes
// Workload.Aggregation take the minimum), as a live cycle takes its oldest sample.
func BacktestFreshnessRules(r *rules.Rules) *rules.Rules {
	return btRulesWith(r, func(w *rules.Workload) (map[string]rules.Query, map[string]rules.Threshold) {
		qs, ths := map[string]rules.Query{}, map[string]rules.Threshold{}
		for name, q := range w.Queries {
			if q.Freshness == "" {
				continue
			}
			f := BacktestFreshnessMetric(name)
			qs[f] = rules.Query{Query: q.Freshness, Match: q.Match}
			ths[f] = rules.Threshold{Direction: rules.LowerIsWorse}
		}
		return qs, ths
	})
}

// The metrics of BacktestStateRules.
const (
	// StateReplicas is the spec replica count.
	StateReplicas = "replicas"
	// StateCPURequest and StateMemoryRequest are the target container's requests, in cores
	// and bytes (the largest over the workload's pods).
	StateCPURequest    = "cpuRequest"
	StateMemoryRequest = "memoryRequest"
)

// podOfWorkload captures a pod's Deployment or StatefulSet from its name, as the presets'
// resource queries do (rules/presets.go).
const podOfWorkload = `(.+)-(?:[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}|[0-9]+)`

// BacktestStateRules returns rules whose queries read each workload's recorded shape from
// kube-state-metrics, for prom.Source.Range at the backtest's start: the spec replicas
// (kube_deployment_spec_replicas or kube_statefulset_replicas) and the target container's
// CPU and memory requests (kube_pod_container_resource_requests), from which
// BacktestRecordedShape tells the class. Concurrency is not recorded there.
func BacktestStateRules(r *rules.Rules) *rules.Rules {
	return btRulesWith(r, func(w *rules.Workload) (map[string]rules.Query, map[string]rules.Threshold) {
		byWorkload := func(expr, label string) string {
			return fmt.Sprintf(`max by (namespace, workload) (label_replace(%s, "workload", "$1", "%s", "(.*)"))`, expr, label)
		}
		replicas := byWorkload(`kube_deployment_spec_replicas{namespace=~"{{.Namespaces}}", deployment=~"{{.Workloads}}"}`, "deployment")
		if w.Target.Kind == "StatefulSet" {
			replicas = byWorkload(`kube_statefulset_replicas{namespace=~"{{.Namespaces}}", statefulset=~"{{.Workloads}}"}`, "statefulset")
		}
		container := ""
		if w.Target.Container != "" {
			// An alternation escapes braces, so the name cannot open a template action.
			container = `, container=~"` + rules.PromQLAlternation([]string{w.Target.Container}) + `"`
		}
		request := func(resource string) string {
			return fmt.Sprintf(`max by (namespace, workload) (label_replace(kube_pod_container_resource_requests{namespace=~"{{.Namespaces}}", resource="%s"%s}, "workload", "$1", "pod", "%s"))`,
				resource, container, podOfWorkload)
		}
		return map[string]rules.Query{
			StateReplicas:      {Query: replicas, Match: rules.MatchTarget},
			StateCPURequest:    {Query: request("cpu"), Match: rules.MatchTarget},
			StateMemoryRequest: {Query: request("memory"), Match: rules.MatchTarget},
		}, map[string]rules.Threshold{}
	})
}

// BacktestRecordedShape reads a workload's shape at time at from the ranges of
// BacktestStateRules: the replicas (ok false when not recorded) and the class whose CPU
// and memory equal the recorded requests (autoscaler.CustomClass when none does, "" when
// the requests are not recorded).
func BacktestRecordedShape(r *rules.Rules, w *rules.Workload, rg prom.Ranges, at time.Time) (replicas int32, ok bool, class string) {
	pointAt := func(metric string) (float64, bool) {
		for _, p := range rg[w.Name][metric] {
			if p.T.Equal(at) {
				return p.V, true
			}
		}
		return 0, false
	}
	if v, found := pointAt(StateReplicas); found && v >= 0 && v <= math.MaxInt32 {
		replicas, ok = int32(math.Round(v)), true
	}
	cpu, okCPU := pointAt(StateCPURequest)
	mem, okMem := pointAt(StateMemoryRequest)
	if !okCPU || !okMem {
		return replicas, ok, ""
	}
	for _, c := range r.Classes {
		if c.CPU.MilliValue() == int64(math.Round(cpu*1000)) && c.Memory.Value() == int64(math.Round(mem)) {
			return replicas, ok, c.Name
		}
	}
	return replicas, ok, autoscaler.CustomClass
}

// btRulesWith is a copy of r whose workloads have the queries and thresholds that with
// returns, for reading other series with prom.Source's batching, retries and client
// settings. r is not changed.
func btRulesWith(r *rules.Rules, with func(w *rules.Workload) (map[string]rules.Query, map[string]rules.Threshold)) *rules.Rules {
	out := *r
	out.Workloads = slices.Clone(r.Workloads)
	for i := range out.Workloads {
		w := &out.Workloads[i]
		w.Queries, w.Thresholds = with(&r.Workloads[i])
	}
	return &out
}
