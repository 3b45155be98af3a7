package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/selector"
	"github.com/workerscale/workerscale/internal/sim"
	"github.com/workerscale/workerscale/rules"
)

// backtestChunk is how many steps one range query covers: Prometheus refuses more than
// 11,000 points per series.
const backtestChunk = 10_000

func newBacktestCommand(e *env) *cobra.Command {
	var (
		file, from, to, class, output string
		step                          time.Duration
		sel                           selector.Selector
		replicas, conc, tenant        int
		logs                          logOptions
	)
	c := &cobra.Command{
		Use:   "backtest --rules FILE --from T [--to T]",
		Short: "Replay Prometheus's recorded metrics through the decision engine and show what it would have decided, when and why",
		Long: `Replay Prometheus's recorded metrics through the decision engine and show what it would
have decided, when and why. At each step the metrics are what a cycle at that time would
have read (no value at a step is missing, never 0). Each change is taken as applied at
once: the next step starts from its shape, with the history the control loop keeps. The
recorded metrics are what really ran; they do not respond to the decisions replayed, so a
job's CPU and memory are measured only on the recorded pods, before the first change.
Every workload is replayed (they may share rate budgets); -n and --workload narrow what is
shown, and what --replicas, --class and --concurrency apply to. Nothing is written.`,
		Example: `workerscale backtest --rules rules/examples/luneo-render.yaml --from -6h --to now
workerscale backtest --rules rules/examples/luneo-render.yaml --from 2026-03-01T08:00:00Z --to 2026-03-01T20:00:00Z \
    --workload render --replicas 2 --class medium -o json`,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case file == "":
				return usagef("--rules is required")
			case from == "":
				return usagef("--from is required")
			}
			// An int flag not given is -1: read from Prometheus.
			for _, f := range []struct {
				name string
				p    *int
			}{{"replicas", &replicas}, {"concurrency", &conc}, {"tenant-concurrency", &tenant}} {
				switch {
				case !c.Flags().Changed(f.name):
					*f.p = -1
				case *f.p < 0:
					return usagef("--%s must not be negative", f.name)
				}
			}
			now := time.Now()
			start, err := parseBacktestTime("--from", from, now)
			if err != nil {
				return err
			}
			end, err := parseBacktestTime("--to", to, now)
			if err != nil {
				return err
			}
			if end.Before(start) {
				return usagef("--to %s is before --from %s", end.Format(time.RFC3339), start.Format(time.RFC3339))
			}
			r, err := rules.Load(file)
			if err != nil {
				return err
			}
			if err := sel.Check(r); err != nil {
				return selectionError(err)
			}
			if step == 0 {
				step = r.Interval.D()
			}
			steps, err := sim.BacktestSteps(start, end, step)
			if err != nil {
				return usagef("--step: %v", err)
			}
			src, err := prom.New(r.Prometheus, prom.Options{Logger: logs.logger(e.stderr)})
			if err != nil {
				return err
			}
			defer src.Close()
			ctx := c.Context()
			flags := startFlags{sel: sel, replicas: replicas, class: class, conc: max(conc, 0), tenant: max(tenant, 0)}
			shapes, err := flags.shapes(ctx, src, r, start, step)
			if err != nil {
				return err
			}
			values, errs := backtestRanges(ctx, src, r, start, steps, step, backtestChunk)
			fresh, freshErrs := backtestRanges(ctx, src, sim.BacktestFreshnessRules(r), start, steps, step, backtestChunk)
			errs = append(errs, freshErrs...)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res, err := sim.Backtest{Rules: r, From: start, To: end, Step: step, Values: values, Freshness: fresh, Start: shapes}.Replay()
			if err != nil {
				return err
			}
			changes := slices.DeleteFunc(res.Changes, func(c sim.BacktestChange) bool { return !sel.Matches(r.Workload(c.Workload)) })
			if output != formatText {
				if changes == nil {
					changes = []sim.BacktestChange{}
				}
				if err := writeObject(e.stdout, output, changes); err != nil {
					return err
				}
			} else {
				printBacktest(e.stdout, r, sel, res, changes, shapes, start, end, step)
			}
			if len(errs) > 0 {
				lines := make([]string, len(errs))
				for i, err := range errs {
					lines[i] = err.Error()
				}
				return fmt.Errorf("%d range queries failed; their metrics count as missing in the replay:\n  %s", len(errs), strings.Join(lines, "\n  "))
			}
			return nil
		},
	}
	fs := c.Flags()
	rulesFlag(c, &file, "the rules YAML (required); its prometheus section says which Prometheus to read")
	fs.StringVar(&from, "from", "", "the start: RFC3339 (2026-03-01T08:00:00Z), Unix seconds, now, or now-D / -D with D a Prometheus duration (90m, 6h, 2d) (required)")
	fs.StringVar(&to, "to", "now", "the end, in the same forms as --from")
	fs.Func("step", "the time between two decisions, a Prometheus `duration` such as 15s or 1m (default: the rules' interval)", func(s string) error {
		d, err := model.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 15s or 1m, got %q", s)
		}
		step = time.Duration(d)
		return nil
	})
	selectorFlags(c, e, &sel, "shown, and given the starting flags; every workload is replayed, as they may share rate budgets")
	fs.IntVar(&replicas, "replicas", 0, "the starting replica count (default: kube_deployment_spec_replicas, or kube_statefulset_replicas, at --from)")
	fs.StringVar(&class, "class", "", "the starting class, or custom (default: the class whose CPU and memory equal the target container's kube_pod_container_resource_requests at --from)")
	fs.IntVar(&conc, "concurrency", 0, "the starting WORKER_CONCURRENCY (default: the class's, or the workload's override; Prometheus does not record it)")
	fs.IntVar(&tenant, "tenant-concurrency", 0, "the starting DEFAULT_TENANT_CONCURRENCY (default: as --concurrency)")
	outputFlag(c, e, &output, "output format: text, json or yaml (a list of explain's decisions, each with its time)", formatText, formatJSON, formatYAML)
	logs.flags(c, e, "warn", "debug", "info", "error")
	return c
}

// parseBacktestTime reads a --from or --to: RFC3339, Unix seconds, now, or now-D / -D.
// The result is in UTC, to the second.
func parseBacktestTime(flagName, s string, now time.Time) (time.Time, error) {
	rel := strings.TrimPrefix(s, "now")
	switch {
	case rel == "":
		return now.UTC().Truncate(time.Second), nil
	case strings.HasPrefix(rel, "-"):
		d, err := model.ParseDuration(rel[1:])
		if err != nil {
			return time.Time{}, usagef("%s: %q is not a time: after -, want a duration such as 90m, 6h or 2d", flagName, s)
		}
		return now.Add(-time.Duration(d)).UTC().Truncate(time.Second), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC().Truncate(time.Second), nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil && secs >= 0 {
		return time.Unix(int64(secs), 0).UTC(), nil
	}
	return time.Time{}, usagef("%s: %q is not a time: want RFC3339 (2026-03-01T08:00:00Z), Unix seconds, now, or now-D / -D (-6h)", flagName, s)
}

// backtestRanges evaluates r's queries over steps steps from start, chunk steps per range
// query. A query that fails in several chunks is reported once.
func backtestRanges(ctx context.Context, src *prom.Source, r *rules.Rules, start time.Time, steps int, step time.Duration, chunk int) (prom.Ranges, []error) {
	out := prom.Ranges{}
	var errs []error
	seen := map[string]bool{}
	for first := 0; first < steps && ctx.Err() == nil; first += chunk {
		last := min(first+chunk, steps) - 1
		rg, chunkErrs := src.Range(ctx, r, start.Add(time.Duration(first)*step), start.Add(time.Duration(last)*step), step)
		for _, err := range chunkErrs {
			if !seen[err.Error()] {
				seen[err.Error()] = true
				errs = append(errs, err)
			}
		}
		for w, metrics := range rg {
			if out[w] == nil {
				out[w] = map[string][]prom.Point{}
			}
			for m, pts := range metrics {
				out[w][m] = append(out[w][m], pts...)
			}
		}
	}
	return out, errs
}

// startFlags are the starting-shape flags, which apply to the workloads sel selects.
type startFlags struct {
	sel          selector.Selector
	replicas     int
	class        string
	conc, tenant int
	// recorded is what kube-state-metrics recorded at the start, read once when needed.
	recorded     prom.Ranges
	recordedErrs []error
	recordedRead bool
}

// shapes is every workload's shape at start: from the flags where given, otherwise as
// kube-state-metrics recorded it in Prometheus at start.
func (f *startFlags) shapes(ctx context.Context, src *prom.Source, r *rules.Rules, start time.Time, step time.Duration) (map[string]autoscaler.Shape, error) {
	out := map[string]autoscaler.Shape{}
	for i := range r.Workloads {
		w := &r.Workloads[i]
		mine := f.sel.Matches(w)
		replicas, class, conc, tenant := -1, "", 0, 0
		if mine {
			replicas, class, conc, tenant = f.replicas, f.class, f.conc, f.tenant
		}
		fromPrometheus := ""
		if replicas < 0 || class == "" {
			if !f.recordedRead {
				f.recordedRead = true
				f.recorded, f.recordedErrs = src.Range(ctx, sim.BacktestStateRules(r), start, start, step)
			}
			if len(f.recordedErrs) > 0 {
				return nil, fmt.Errorf("workload %s: reading its starting shape from Prometheus (--replicas and --class give it instead): %w", w.Name, errors.Join(f.recordedErrs...))
			}
			recReplicas, ok, recClass := sim.BacktestRecordedShape(r, w, f.recorded, start)
			at := start.Format(time.RFC3339)
			if replicas < 0 {
				if !ok {
					selector := fmt.Sprintf("kube_deployment_spec_replicas{namespace=%q, deployment=%q}", w.Target.Namespace, w.Target.Name)
					if w.Target.Kind == "StatefulSet" {
						selector = fmt.Sprintf("kube_statefulset_replicas{namespace=%q, statefulset=%q}", w.Target.Namespace, w.Target.Name)
					}
					return nil, usagef("--replicas: workload %s: Prometheus has no %s at %s; give the starting replicas%s", w.Name, selector, at, f.hint(r, w))
				}
				replicas = int(recReplicas)
				fromPrometheus = "replicas"
			}
			if class == "" {
				switch recClass {
				case "":
					return nil, usagef("--class: workload %s: Prometheus has no kube_pod_container_resource_requests of its container at %s; give the starting class%s", w.Name, at, f.hint(r, w))
				case autoscaler.CustomClass:
					if conc == 0 {
						return nil, usagef("--concurrency: workload %s: its container's recorded requests at %s match no class of the rules, so it runs as custom; give its concurrency, or --class%s", w.Name, at, f.hint(r, w))
					}
				}
				class = recClass
				fromPrometheus = strings.TrimPrefix(fromPrometheus+", class", ", ")
			}
		}
		st, err := explainState(r, w, class, replicas, -1, conc, tenant)
		if err != nil {
			if fromPrometheus != "" {
				return nil, fmt.Errorf("workload %s (%s from Prometheus): %w", w.Name, fromPrometheus, err)
			}
			return nil, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		out[w.Name] = st.Shape
	}
	return out, nil
}

// hint says how to give one workload's starting shape when there are several.
func (f *startFlags) hint(r *rules.Rules, w *rules.Workload) string {
	if len(r.Workloads) > 1 && f.sel.Empty() {
		return fmt.Sprintf(" (with --workload %s, or for every workload without it)", w.Name)
	}
	return ""
}

// printBacktest writes each change with its time, shapes, grades, limits and reasons, then
// a summary.
func printBacktest(out io.Writer, r *rules.Rules, sel selector.Selector, res sim.BacktestResult, changes []sim.BacktestChange, start map[string]autoscaler.Shape, from, to time.Time, step time.Duration) {
	for _, c := range changes {
		fmt.Fprintf(out, "%s  %s  %s -> %s\n", c.Time.UTC().Format(time.RFC3339), c.Workload, shape(c.From), shape(c.To))
		var grades []string
		for _, m := range slices.Sorted(maps.Keys(c.Grades)) {
			grades = append(grades, m+"="+string(c.Grades[m]))
		}
		fmt.Fprintf(out, "  grades: %s\n", strings.Join(grades, " "))
		printLimits(out, "  ", "", c.LimitedBy, c.Reasons)
		fmt.Fprintln(out)
	}
	noun := "changes"
	if len(changes) == 1 {
		noun = "change"
	}
	fmt.Fprintf(out, "backtest: %d steps of %s from %s to %s, %d %s\n", res.Steps, step, from.Format(time.RFC3339), to.Format(time.RFC3339), len(changes), noun)
	for i := range r.Workloads {
		w := &r.Workloads[i]
		if !sel.Matches(w) {
			continue
		}
		fmt.Fprintf(out, "  %s: %s at the start, %s at the end\n", w.Name, shape(start[w.Name]), shape(res.Final[w.Name]))
	}
}
