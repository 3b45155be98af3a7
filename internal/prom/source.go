package prom

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// errBadResult is a result of the wrong type: a query must return an instant vector.
var errBadResult = errors.New("unexpected result type")

// Cycle is one cycle's observations for all workloads.
type Cycle struct {
	At time.Time
	// Observations map each workload's name to its metrics.
	Observations map[string]autoscaler.Observations
	// Queries is how many queries were sent (values and freshness, each distinct text once).
	Queries int
	// Errors are the queries that failed; their metrics are missing in Observations.
	Errors []error
	// Pods map each workload's name to what its pods are busy with (the per-pod
	// templates); a workload none of whose pods has a series is not in it.
	Pods map[string]autoscaler.PodLoads
}

// use is one workload's need for one metric of a batch.
type use struct {
	workload  int
	metric    string
	freshness *batch
}

// batch is one distinct query and the workloads that read it.
type batch struct {
	query string
	match string
	uses  []use
	// Filled in by the run.
	index *index
	err   error
}

// index is a result split by the workload label: each key's sample values, all a
// workload's metric needs. The samples themselves (a label map each) are dropped as soon as
// the result is indexed, so that a cycle does not hold every query's decoded result at once.
type index struct {
	byKey     map[string][]float64
	total     int
	unlabeled int
	// unavailable holds, per key, the reason of a series labelled rules.UnavailableLabel.
	unavailable map[string]string
	// byPod holds a per-pod query's values, by key (namespace/workload) and pod.
	byPod map[string]map[string]float64
}

// keysOf are the label values under which a workload's series come back.
func keysOf(w *rules.Workload, match string) []string {
	if match == rules.MatchTarget || match == rules.MatchPod {
		return []string{w.Target.Namespace + "/" + w.Target.Name}
	}
	return w.Queues
}

func labelsOf(match string) string {
	if match == rules.MatchTarget {
		return "namespace and workload labels"
	}
	return "queue label"
}

// plan renders every workload's templates and groups identical queries, so that N
// workloads cost as many queries as one.
func plan(r *rules.Rules) (values, freshness []*batch, err error) {
	data := r.TemplateData()
	// The key is a pair, not match and text joined: a text names every queue, and joining
	// it anew for each workload's metric made a cycle allocate tens of megabytes at 1,000
	// workloads (BenchmarkResidentMemory).
	type batchKey struct{ match, text string }
	byText := map[batchKey]*batch{}
	get := func(list *[]*batch, text, match string) *batch {
		key := batchKey{match, text}
		b, ok := byText[key]
		if !ok {
			b = &batch{query: text, match: match}
			byText[key] = b
			*list = append(*list, b)
		}
		return b
	}
	// Every workload renders its templates with the same data (all the rules' queues and
	// targets), so each distinct template is rendered once: with thousands of workloads a
	// rendering is long, and the same one thousands of times.
	rendered := map[string]string{}
	renderOnce := func(tmpl string) (string, error) {
		if text, ok := rendered[tmpl]; ok {
			return text, nil
		}
		text, err := rules.Query{Query: tmpl}.Render(data)
		if err == nil {
			rendered[tmpl] = text
		}
		return text, err
	}
	for i := range r.Workloads {
		w := &r.Workloads[i]
		for _, metric := range slices.Sorted(maps.Keys(w.Queries)) {
			q := w.Queries[metric]
			text, err := renderOnce(q.Query)
			if err != nil {
				return nil, nil, fmt.Errorf("workload %s, %s: %w", w.Name, metric, err)
			}
			u := use{workload: i, metric: metric}
			fresh := ""
			if q.Freshness != "" {
				if fresh, err = renderOnce(q.Freshness); err != nil {
					return nil, nil, fmt.Errorf("workload %s, %s freshness: %w", w.Name, metric, err)
				}
			}
			if fresh != "" {
				u.freshness = get(&freshness, fresh, q.Match)
			}
			b := get(&values, text, q.Match)
			b.uses = append(b.uses, u)
		}
		for _, metric := range slices.Sorted(maps.Keys(w.PodQueries)) {
			if strings.TrimSpace(w.PodQueries[metric].Query) == "" {
				continue // turned off
			}
			text, err := renderOnce(w.PodQueries[metric].Query)
			if err != nil {
				return nil, nil, fmt.Errorf("workload %s, per-pod %s: %w", w.Name, metric, err)
			}
			b := get(&values, text, rules.MatchPod)
			b.uses = append(b.uses, use{workload: i, metric: metric})
		}
	}
	return values, freshness, nil
}

// observePods files a per-pod batch's values under each workload's pods. A pod's series
// that is not a finite number, or that comes twice, gives it no value.
func observePods(b *batch, u use, w *rules.Workload, pods map[string]autoscaler.PodLoads) {
	if b.err != nil || b.index == nil {
		return
	}
	for pod, v := range b.index.byPod[keysOf(w, rules.MatchPod)[0]] {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			continue
		}
		loads := pods[w.Name]
		if loads == nil {
			loads = autoscaler.PodLoads{}
			pods[w.Name] = loads
		}
		l := loads[pod]
		switch u.metric {
		case rules.PodActiveJobs:
			l.ActiveJobs = &v
		case rules.PodOldestJobAge:
			l.OldestJobAge = &v
		case rules.PodJobsRemaining:
			l.JobsRemaining = &v
		case rules.PodLastJobRemaining:
			l.LastJobRemaining = &v
		case rules.PodCPU:
			l.CPU = &v
		}
		loads[pod] = l
	}
}

// Observe runs one cycle at time at: every distinct query once, then each workload's
// metrics cut out of the results. It does not fail as a whole: a failed query makes its
// metrics missing, with the error as the reason.
func (s *Source) Observe(ctx context.Context, r *rules.Rules, at time.Time) Cycle {
	c := Cycle{At: at, Observations: map[string]autoscaler.Observations{}}
	s.opts.Metrics.retain(r)
	for _, w := range r.Workloads {
		c.Observations[w.Name] = autoscaler.Observations{}
	}
	values, freshness, err := plan(r)
	if err != nil {
		c.Errors = append(c.Errors, err)
		return c
	}
	all := append(slices.Clone(values), freshness...)
	s.run(ctx, all, at)
	c.Queries = len(all)
	for _, b := range all {
		if b.err != nil {
			c.Errors = append(c.Errors, fmt.Errorf("query %q: %w", oneLine(b.query), b.err))
		}
	}
	staleness := r.Prometheus.Staleness.D()
	c.Pods = map[string]autoscaler.PodLoads{}
	for _, b := range values {
		claimed := map[string]bool{}
		for _, u := range b.uses {
			w := &r.Workloads[u.workload]
			if b.match == rules.MatchPod {
				observePods(b, u, w, c.Pods)
				claimed[keysOf(w, b.match)[0]] = true
				continue
			}
			o, outcome := observe(b, u, w, at, staleness)
			if outcome == "unavailable" {
				s.log.Warn("metric unavailable", "workload", w.Name, "metric", u.metric, "reason", o.Reason)
			}
			c.Observations[w.Name][u.metric] = o
			s.opts.Metrics.outcome(w.Name, outcome, 1)
			for _, k := range keysOf(w, b.match) {
				claimed[k] = true
			}
		}
		if b.index != nil {
			unmatched := 0
			for k, pods := range b.index.byPod {
				if !claimed[k] {
					unmatched += len(pods)
				}
			}
			for k, ss := range b.index.byKey {
				if !claimed[k] {
					unmatched += len(ss)
				}
			}
			if unmatched > 0 {
				s.log.Debug("series for no workload", "query", oneLine(b.query), "series", unmatched)
				s.opts.Metrics.outcome("", "unmatched", unmatched)
			}
		}
	}
	return c
}

// run sends the batches' queries, a few at a time.
func (s *Source) run(ctx context.Context, batches []*batch, at time.Time) {
	sem := make(chan struct{}, s.opts.Parallel)
	var wg sync.WaitGroup
	for _, b := range batches {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			b.index, b.err = s.instant(ctx, b.query, b.match, at)
		}()
	}
	wg.Wait()
}

// instant runs one instant query under the per-query timeout and indexes its result.
func (s *Source) instant(ctx context.Context, query, match string, at time.Time) (*index, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	idx, warnings, err := s.queryVector(ctx, query, match, at)
	s.opts.Metrics.query("instant", time.Since(start).Seconds(), err)
	for _, w := range warnings {
		s.log.Warn("prometheus warning", "query", oneLine(query), "warning", w)
	}
	if err != nil {
		s.log.Warn("prometheus query failed", "query", oneLine(query), "error", err, "kind", errorKind(err))
		return nil, err
	}
	return idx, nil
}

// observe cuts one workload's metric out of a batch's result, strictly, and names the
// outcome for the outcomes metric.
func observe(b *batch, u use, w *rules.Workload, at time.Time, staleness time.Duration) (autoscaler.Observation, string) {
	if b.err != nil {
		return absent("failed", "the query failed: %v", b.err)
	}
	idx := b.index
	if idx.total == 0 {
		return absent("empty", "empty result: the query returned no series")
	}
	keys := keysOf(w, b.match)
	values := make([]float64, 0, len(keys))
	for _, k := range keys {
		if reason, ok := idx.unavailable[k]; ok {
			return absent("unavailable", "%s (%s)", reason, describeKey(k, b.match))
		}
	}
	for _, k := range keys {
		ss := idx.byKey[k]
		switch {
		case len(ss) == 0 && idx.unlabeled > 0 && len(idx.byKey) == 0:
			return absent("unlabeled", "the query's %d series have no %s; it must aggregate by it", idx.unlabeled, labelsOf(b.match))
		case len(ss) == 0:
			return absent("no_series", "no series for %s", describeKey(k, b.match))
		case len(ss) > 1:
			return absent("duplicate", "%d series for %s; the query must return one (aggregate by the %s)", len(ss), describeKey(k, b.match), labelsOf(b.match))
		}
		v := ss[0]
		switch {
		case math.IsNaN(v):
			return absent("nan", "the value for %s is NaN (such as 0/0: nothing happened in the window)", describeKey(k, b.match))
		case math.IsInf(v, 0):
			return absent("inf", "the value for %s is %v", describeKey(k, b.match), v)
		}
		values = append(values, v)
	}
	o := autoscaler.Value(aggregate(u.metric, w, values))
	if u.freshness == nil {
		return o, "fresh"
	}
	age, err := sampleAge(u.freshness, keys, at)
	switch {
	case err != nil:
		// A value whose age cannot be told is not taken as current.
		o.Status, o.Reason = autoscaler.Stale, "the age of its samples is unknown: "+err.Error()
		return o, "stale"
	case age > staleness:
		o.Status = autoscaler.Stale
		o.Reason = fmt.Sprintf("its samples are %s old, past the %s staleness bound", age.Round(time.Second), staleness)
		return o, "stale"
	}
	return o, "fresh"
}

// sampleAge is the age of the oldest sample behind a workload's value, from its freshness
// batch: one finite timestamp per key, or an error saying what is wrong.
func sampleAge(f *batch, keys []string, at time.Time) (time.Duration, error) {
	if f.err != nil {
		return 0, fmt.Errorf("the freshness query failed: %w", f.err)
	}
	var oldest time.Duration
	for i, k := range keys {
		ss := f.index.byKey[k]
		if len(ss) != 1 {
			return 0, fmt.Errorf("the freshness query gave %d series for %s", len(ss), k)
		}
		ts := ss[0]
		if math.IsNaN(ts) || math.IsInf(ts, 0) {
			return 0, fmt.Errorf("the freshness query gave %v for %s", ts, k)
		}
		age := at.Sub(time.Unix(0, int64(ts*1e9)))
		if i == 0 || age > oldest {
			oldest = age
		}
	}
	return oldest, nil
}

// aggregate combines the values of a workload's several queues as w.Aggregation says.
func aggregate(metric string, w *rules.Workload, vs []float64) float64 {
	switch w.Aggregation(metric) {
	case "sum":
		var sum float64
		for _, v := range vs {
			sum += v
		}
		return sum
	case "min":
		return slices.Min(vs)
	}
	return slices.Max(vs)
}

func absent(outcome, format string, args ...any) (autoscaler.Observation, string) {
	return autoscaler.Absent(fmt.Sprintf(format, args...)), outcome
}

func describeKey(k, match string) string {
	if match == rules.MatchTarget {
		return "workload " + k
	}
	return "queue " + k
}

func oneLine(q string) string { return strings.Join(strings.Fields(q), " ") }
