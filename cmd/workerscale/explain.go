package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/selector"
	"github.com/workerscale/workerscale/rules"
)

func newExplainCommand(e *env) *cobra.Command {
	var (
		file, class, output, hpa, vpa        string
		sel                                  selector.Selector
		replicas, ready, conc, tenant, limit int
		sustained                            bool
	)
	obs := autoscaler.Observations{}
	c := &cobra.Command{
		Use:   "explain --rules FILE --workload NAME --replicas N --class C [--set METRIC=VALUE ...] [--hpa NAME] [--vpa NAME]",
		Short: "Run the decision engine once on values you give, and show the decision with its reasons",
		Long: `Run the decision engine once on values you give, and show the decision: from and to, the
grades, the limits that bound it, and the reasons with their numbers. cpu and memory are
fractions of the request; a metric not set is missing. The workload is the one --workload
names, or the only workload of the namespace -n names.`,
		Example: `workerscale explain --rules rules/examples/luneo-render.yaml --workload render \
    --replicas 2 --class medium --set queueDepth=500 --set cpu=0.6
workerscale explain --rules rules/examples/luneo-render.yaml -n luneo --replicas 2 --class medium --set queueDepth=500 -o yaml`,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case file == "":
				return usagef("--rules is required")
			case sel.Empty():
				return usagef("--workload is required (or -n with a namespace that holds one workload)")
			case !c.Flags().Changed("replicas"):
				return usagef("--replicas is required")
			case replicas < 0:
				return usagef("--replicas must not be negative")
			case c.Flags().Changed("ready") && ready < 0:
				return usagef("--ready must not be negative")
			case class == "":
				return usagef("--class is required")
			case conc < 0 || tenant < 0:
				return usagef("--concurrency and --tenant-concurrency must not be negative")
			}
			if !c.Flags().Changed("ready") {
				ready = -1
			}
			r, err := rules.Load(file)
			if err != nil {
				return err
			}
			if err := sel.Check(r); err != nil {
				return selectionError(err)
			}
			names := sel.Names(r)
			if len(names) != 1 {
				return usagef("%s selects %d workloads (%s); explain decides for one: name it with --workload", sel, len(names), strings.Join(names, ", "))
			}
			w := r.Workload(names[0])
			if err := checkMetricNames(r, w, obs); err != nil {
				return err
			}
			st, err := explainState(r, w, class, replicas, ready, conc, tenant)
			if err != nil {
				return err
			}
			switch {
			case limit < 0:
				return usagef("--rate-limit-max must not be negative")
			case limit > 0 && *w.Env.RateLimitMax == "":
				return usagef("--rate-limit-max: workload %q does not manage a rate limiter (env.rateLimitMax)", w.Name)
			}
			st.RateLimitMax = limit
			now := time.Now()
			in := autoscaler.Input{Workload: w, Observations: obs, State: st}
			if hpa != "" {
				in.Owners.Horizontal = "HorizontalPodAutoscaler " + hpa
			}
			if vpa != "" {
				in.Owners.Vertical = "VerticalPodAutoscaler " + vpa
			}
			if sustained {
				in.History = autoscaler.AssumeSustained(now, w, obs)
			}
			d := autoscaler.Decide(now, r, in)
			if output != formatText {
				// The runtime API's schema: a decision made now, not applied.
				return writeObject(e.stdout, output, autoscaler.WorkloadStatus{Report: autoscaler.Report{Decision: d}, Override: d.Override, LastCycle: now})
			}
			return printDecision(e.stdout, d)
		},
	}
	fs := c.Flags()
	rulesFlag(c, &file, "the rules YAML (required)")
	selectorFlags(c, e, &sel, "the one workload to decide for")
	fs.IntVar(&replicas, "replicas", 0, "the current replica count (required)")
	fs.IntVar(&ready, "ready", 0, "ready replicas (default: --replicas)")
	fs.StringVar(&class, "class", "", "the current class, or custom (required)")
	fs.IntVar(&conc, "concurrency", 0, "the current WORKER_CONCURRENCY (default: the class's, or the workload's override)")
	fs.IntVar(&tenant, "tenant-concurrency", 0, "the current DEFAULT_TENANT_CONCURRENCY (default: as --concurrency)")
	fs.IntVar(&limit, "rate-limit-max", 0, "the current RATE_LIMIT_MAX, for a workload that manages its rate limiter (default: not set)")
	fs.BoolVar(&sustained, "assume-sustained", false, "treat the CPU and memory conditions of this moment as having held for the workload's sustainFor")
	fs.StringVar(&hpa, "hpa", "", "decide as if this HPA (a name to show) owned the replicas: they stay as they are")
	fs.StringVar(&vpa, "vpa", "", "decide as if this VPA (a name to show) owned the pod template: class, concurrency and rate limiter stay as they are")
	outputFlag(c, e, &output, "output format: text, json or yaml (the runtime API's workload status)", formatText, formatJSON, formatYAML)
	fs.Func("set", "a metric's value, `METRIC=VALUE` (repeatable); cpu and memory are fractions of the request; a metric not set is missing", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want METRIC=VALUE, got %q", s)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", k, v)
		}
		obs[k] = autoscaler.Value(f)
		return nil
	})
	return c
}

func workloadNames(r *rules.Rules) []string {
	var names []string
	for _, w := range r.Workloads {
		names = append(names, w.Name)
	}
	return names
}

// checkMetricNames refuses --set names the engine would ignore or that no real cycle could
// observe: names no rules metric has (typos), and metrics the workload has no query for,
// whose values a real cycle never reads.
func checkMetricNames(r *rules.Rules, w *rules.Workload, obs autoscaler.Observations) error {
	reads := slices.Sorted(maps.Keys(w.Queries))
	for _, m := range slices.Sorted(maps.Keys(obs)) {
		switch {
		case slices.Contains(reads, m):
		case !slices.Contains(metricNames(r), m):
			return usagef("--set: unknown metric %q (known: %s)", m, strings.Join(metricNames(r), ", "))
		default:
			hint := ""
			if from := derivedFrom(m, w); from != "" {
				hint = fmt.Sprintf("; the engine derives it from %s, so set that instead", from)
			}
			return usagef("--set %s: workload %q never reads the metric %q: the rules have no query for it (it reads %s)%s",
				m, w.Name, m, strings.Join(reads, ", "), hint)
		}
	}
	return nil
}

// metricNames lists every metric the engine knows or the rules name, sorted.
func metricNames(r *rules.Rules) []string {
	names := append(rules.ActedOnMetrics(), rules.Throughput, rules.ActiveJobs)
	names = slices.AppendSeq(names, maps.Keys(r.Thresholds))
	names = slices.AppendSeq(names, maps.Keys(r.Queries.Templates))
	for _, w := range r.Workloads {
		names = slices.AppendSeq(names, maps.Keys(w.Thresholds))
		names = slices.AppendSeq(names, maps.Keys(w.Queries))
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// derivedFrom names the metrics the engine derives m from for w, when it does (see
// docs/policy.md): saturation from active jobs, the wait from queue depth and throughput.
func derivedFrom(m string, w *rules.Workload) string {
	has := func(metrics ...string) bool {
		for _, x := range metrics {
			if _, ok := w.Queries[x]; !ok {
				return false
			}
		}
		return true
	}
	switch {
	case m == rules.Saturation && has(rules.ActiveJobs):
		return rules.ActiveJobs
	case m == rules.WaitSeconds && has(rules.QueueDepth, rules.Throughput):
		return rules.QueueDepth + " and " + rules.Throughput
	}
	return ""
}

func explainState(r *rules.Rules, w *rules.Workload, class string, replicas, ready, conc, tenant int) (autoscaler.State, error) {
	st := autoscaler.State{Shape: autoscaler.Shape{Replicas: int32(replicas), Class: class}, ReadyReplicas: int32(replicas)}
	if ready >= 0 {
		st.ReadyReplicas = int32(ready)
	}
	if class != autoscaler.CustomClass {
		c := r.Class(class)
		if c == nil {
			var names []string
			for _, c := range r.Classes {
				names = append(names, c.Name)
			}
			return st, usagef("--class: no class %q in the rules (%s, or custom)", class, strings.Join(names, ", "))
		}
		st.Concurrency, st.TenantConcurrency = *c.Concurrency, *c.TenantConcurrency
		if w.Concurrency.Global != nil {
			st.Concurrency = *w.Concurrency.Global
		}
		if w.Concurrency.Tenant != nil {
			st.TenantConcurrency = *w.Concurrency.Tenant
		}
	} else if conc == 0 {
		return st, usagef("--concurrency is required with --class custom")
	}
	if conc > 0 {
		st.Concurrency = conc
		if tenant == 0 {
			tenant = min(st.TenantConcurrency, conc)
		}
	}
	if tenant > 0 {
		st.TenantConcurrency = tenant
	}
	if st.TenantConcurrency == 0 {
		st.TenantConcurrency = 1
	}
	return st, nil
}

// printDecision writes a decision as a short table and its reasons.
func printDecision(out io.Writer, d autoscaler.Decision) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	// The rate limit (RATE_LIMIT_MAX) shows only for a workload that has one.
	limiter := d.From.RateLimitMax != 0 || d.To.RateLimitMax != 0
	head := fmt.Sprintf("WORKLOAD %s\tREPLICAS\tCLASS\tCONCURRENCY\tTENANT", d.Workload)
	if limiter {
		head += "\tRATE LIMIT"
	}
	fmt.Fprintln(tw, head)
	for _, row := range []struct {
		name string
		s    autoscaler.Shape
	}{{"from", d.From}, {"to", d.To}} {
		line := fmt.Sprintf("%s\t%d\t%s\t%d\t%d", row.name, row.s.Replicas, row.s.Class, row.s.Concurrency, row.s.TenantConcurrency)
		if limiter {
			line += fmt.Sprintf("\t%d", row.s.RateLimitMax)
		}
		fmt.Fprintln(tw, line)
	}
	fmt.Fprintf(tw, "\nMETRIC\tVALUE\tGRADE\t\t\n")
	names := make([]string, 0, len(d.Grades))
	for m := range d.Grades {
		names = append(names, m)
	}
	slices.Sort(names)
	for _, m := range names {
		value := "-"
		if o, ok := d.Metrics[m]; ok && o.Status == autoscaler.Fresh {
			value = strconv.FormatFloat(o.Value, 'g', 6, 64)
			if o.Estimated {
				value += " (estimated)"
			}
		} else if ok {
			value = string(o.Status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", m, value, d.Grades[m])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	printLimits(out, "", "\n", d.LimitedBy, d.Reasons)
	return nil
}

// printLimits writes a decision's limits and reasons, each line after indent; sep stands
// between the limits and the reasons.
func printLimits(out io.Writer, indent, sep string, limitedBy, reasons []string) {
	limits := "none"
	if len(limitedBy) > 0 {
		limits = strings.Join(limitedBy, ", ")
	}
	fmt.Fprintf(out, "%slimited by: %s\n%s%sreasons:\n", indent, limits, sep, indent)
	for _, r := range reasons {
		fmt.Fprintf(out, "%s  - %s\n", indent, r)
	}
}
