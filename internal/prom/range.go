package prom

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/rules"
)

// Point is one value of a range.
type Point struct {
	T time.Time
	V float64
}

// Ranges map a workload's name to its metrics' points.
type Ranges map[string]map[string][]Point

// Range evaluates the same batched templates over [start, end] at step, for the backtest:
// one range query per distinct template. A workload's points are the steps at which each
// of its series has a finite value (several queues combined as Observe does); a query that
// fails, or gives one workload several series, is reported and leaves that metric empty.
func (s *Source) Range(ctx context.Context, r *rules.Rules, start, end time.Time, step time.Duration) (Ranges, []error) {
	out := Ranges{}
	for _, w := range r.Workloads {
		out[w.Name] = map[string][]Point{}
	}
	values, _, err := plan(r)
	if err != nil {
		return out, []error{err}
	}
	var errs []error
	for _, b := range values {
		if b.match == rules.MatchPod {
			continue // per-pod values rank a scale-in's pods now; a backtest reads none
		}
		streams, err := s.rangeQuery(ctx, b, promv1.Range{Start: start, End: end, Step: step})
		if err != nil {
			errs = append(errs, fmt.Errorf("range query %q: %w", oneLine(b.query), err))
			continue
		}
		for _, u := range b.uses {
			w := &r.Workloads[u.workload]
			pts, err := combine(streams, keysOf(w, b.match), u.metric, w)
			if err != nil {
				errs = append(errs, fmt.Errorf("workload %s, %s: %w", w.Name, u.metric, err))
				continue
			}
			out[w.Name][u.metric] = pts
		}
	}
	return out, errs
}

func (s *Source) rangeQuery(ctx context.Context, b *batch, rg promv1.Range) (map[string][]*model.SampleStream, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	begin := time.Now()
	v, warnings, _, err := s.api.QueryRange(ctx, b.query, rg)
	if err == nil {
		if _, ok := v.(model.Matrix); !ok {
			err = fmt.Errorf("%w: the query returns a %s, not series", errBadResult, v.Type())
		}
	}
	s.opts.Metrics.query("range", time.Since(begin).Seconds(), err)
	for _, w := range warnings {
		s.log.Warn("prometheus warning", "query", oneLine(b.query), "warning", w)
	}
	if err != nil {
		return nil, err
	}
	streams := map[string][]*model.SampleStream{}
	for _, ss := range v.(model.Matrix) {
		if _, ok := ss.Metric[rules.UnavailableLabel]; ok {
			continue // the metric cannot be told at those steps: no points there
		}
		if k := pickLabels(ss.Metric).key(b.match); k.ok {
			streams[k.key] = append(streams[k.key], ss)
		}
	}
	return streams, nil
}

// combine joins a workload's series (one per key) into points at the steps where all have
// a finite value.
func combine(streams map[string][]*model.SampleStream, keys []string, metric string, w *rules.Workload) ([]Point, error) {
	perStep := map[model.Time][]float64{}
	for _, k := range keys {
		ss := streams[k]
		switch {
		case len(ss) == 0:
			return nil, nil
		case len(ss) > 1:
			return nil, fmt.Errorf("%d series for %s", len(ss), k)
		}
		for _, p := range ss[0].Values {
			if v := float64(p.Value); !math.IsNaN(v) && !math.IsInf(v, 0) {
				perStep[p.Timestamp] = append(perStep[p.Timestamp], v)
			}
		}
	}
	var pts []Point
	for ts, vs := range perStep {
		if len(vs) == len(keys) {
			pts = append(pts, Point{T: ts.Time(), V: aggregate(metric, w, vs)})
		}
	}
	slices.SortFunc(pts, func(a, b Point) int { return a.T.Compare(b.T) })
	return pts, nil
}
