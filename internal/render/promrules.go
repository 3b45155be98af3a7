package render

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/workerscale/workerscale/rules"
)

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is a group of recording and alerting rules.
type RuleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record) or an alerting rule (Alert).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Series names the recording rules write.
const (
	// metricSeries is workerscale:<metric>{workload}: each metric of each workload, read
	// with the rules' own templates and combined across queues as the engine combines them.
	metricSeries = "workerscale:%s"
	// ThresholdSeries is each graded metric's levels: {workload, metric, level}.
	ThresholdSeries = "workerscale:threshold:value"
	// ClassCostSeries is each class's cost per hour: {class}.
	ClassCostSeries = "workerscale:class_cost_per_hour:value"
)

// MetricSeries is the recording rule name of a metric.
func MetricSeries(metric string) string { return fmt.Sprintf(metricSeries, metric) }

// withLabel sets a constant label on an expression's result. label_replace expands $1 and
// ${name} in its replacement, so a $ of the value is written $$.
func withLabel(expr, label, value string) string {
	return fmt.Sprintf(`label_replace(%s, %s, %s, "", "")`, expr, str(label), str(strings.ReplaceAll(value, "$", "$$")))
}

// constant is a one-series vector with the given labels.
func constant(v float64, labels ...[2]string) string {
	expr := fmt.Sprintf("vector(%s)", num(v))
	for _, l := range labels {
		expr = withLabel(expr, l[0], l[1])
	}
	return expr
}

// workloadData is the template data for one workload alone, so that a recording rule
// reads only its series.
func workloadData(r *rules.Rules, w *rules.Workload) rules.TemplateData {
	one := *r
	one.Workloads = []rules.Workload{*w}
	return one.TemplateData()
}

// recordingRules give every metric of every workload a series with a workload label.
func recordingRules(r *rules.Rules) ([]Rule, error) {
	var out []Rule
	for i := range r.Workloads {
		w := &r.Workloads[i]
		data := workloadData(r, w)
		for _, metric := range slices.Sorted(maps.Keys(w.Queries)) {
			q := w.Queries[metric]
			expr, err := q.Render(data)
			if err != nil {
				return nil, fmt.Errorf("workload %s, %s: %w", w.Name, metric, err)
			}
			// The series a query marks unavailable are no value to sum.
			expr = rules.WithoutUnavailable(expr)
			if q.Match == rules.MatchTarget {
				// Keep only the target's series: a join with a vector of its labels.
				target := constant(1, [2]string{"namespace", w.Target.Namespace}, [2]string{"workload", w.Target.Name})
				expr = fmt.Sprintf("(%s) * on (namespace, workload) group_left () %s", expr, target)
			}
			out = append(out, Rule{
				Record: MetricSeries(metric),
				Expr:   fmt.Sprintf("%s(%s)", w.Aggregation(metric), expr),
				Labels: map[string]string{"workload": w.Name},
			})
		}
		// What the engine derives, for dashboards and alerts. The controller's gauges come
		// from every instance it runs as (see controllerGauge).
		wl := is("workload", w.Name)
		if _, ok := w.Queries[rules.Saturation]; !ok {
			if _, ok := w.Queries[rules.ActiveJobs]; ok {
				out = append(out, Rule{Record: MetricSeries(rules.Saturation), Expr: fmt.Sprintf(
					`%s / on (workload) ((%s * on (workload) %s) > 0)`,
					selector(MetricSeries(rules.ActiveJobs), wl), controllerGauge("workerscale_ready_replicas", wl),
					controllerGauge("workerscale_current_concurrency", wl)), Labels: map[string]string{"workload": w.Name}})
			}
		}
		if _, ok := w.Queries[rules.WaitSeconds]; !ok {
			_, depth := w.Queries[rules.QueueDepth]
			_, tput := w.Queries[rules.Throughput]
			if depth && tput {
				out = append(out, Rule{Record: MetricSeries(rules.WaitSeconds), Expr: fmt.Sprintf(
					`%s / on (workload) (%s > 0)`,
					selector(MetricSeries(rules.QueueDepth), wl), selector(MetricSeries(rules.Throughput), wl)), Labels: map[string]string{"workload": w.Name}})
			}
		}
	}
	return out, nil
}

// controllerGauge reads one of the controller's per-workload gauges
// (workerscale_current_replicas, _ready_replicas, _current_concurrency, ...) as one series
// per workload. Every instance of the controller exports them with its own instance, pod
// and job labels: the live overlay (deploy/overlays/live) runs two replicas, one leading
// and one standing by, and a rolling update runs two for a while. Their values agree but for the moment of each one's cycle,
// so the largest is taken; without it a join of two such gauges is many-to-many, and a
// sum counts every instance.
func controllerGauge(metric string, matchers ...string) string {
	return controllerGaugeBy(metric, "workload", matchers...)
}

// controllerGaugeBy is controllerGauge keeping the labels by (workerscale_workload_class
// keeps class and state).
func controllerGaugeBy(metric, by string, matchers ...string) string {
	return fmt.Sprintf("max by (%s) (%s)", by, selector(metric, matchers...))
}

// thresholdRules publish each workload's levels, so a dashboard can draw the selected
// workload's own thresholds.
func thresholdRules(r *rules.Rules) []Rule {
	var out []Rule
	for _, w := range r.Workloads {
		for _, metric := range gradedWithQuery(&w) {
			t := w.Thresholds[metric]
			for _, lv := range []struct {
				name string
				v    float64
			}{{"warning", *t.Warning}, {"critical", *t.Critical}} {
				out = append(out, Rule{Record: ThresholdSeries, Expr: constant(lv.v),
					Labels: map[string]string{"workload": w.Name, "metric": metric, "level": lv.name}})
			}
		}
	}
	for _, c := range r.Classes {
		out = append(out, Rule{Record: ClassCostSeries, Expr: constant(c.CostPerHour), Labels: map[string]string{"class": c.Name}})
	}
	return out
}

// gradedWithQuery are the metrics of w that have a threshold and a series: the graded
// metrics it reads or derives, and its own extra metrics.
func gradedWithQuery(w *rules.Workload) []string {
	var out []string
	for _, m := range slices.Sorted(maps.Keys(w.Thresholds)) {
		_, queried := w.Queries[m]
		_, active := w.Queries[rules.ActiveJobs]
		_, depth := w.Queries[rules.QueueDepth]
		_, tput := w.Queries[rules.Throughput]
		derived := (m == rules.Saturation && active) || (m == rules.WaitSeconds && depth && tput)
		if queried || derived {
			out = append(out, m)
		}
	}
	return out
}

// AlertName is the alert of a metric: WorkerscaleQueueDepth, ...
func AlertName(metric string) string {
	r := []rune(metric)
	r[0] = unicode.ToUpper(r[0])
	return "Workerscale" + string(r)
}

// Options tune what render writes.
type Options struct {
	// RunbookURL is where docs/runbooks.md is published; alerts link to its anchors.
	RunbookURL string
	// ControllerJob is the scrape job of workerscale's own /metrics.
	ControllerJob string
	// RuleLabels are added to the PrometheusRule's metadata (e.g. release=...).
	RuleLabels map[string]string
	// Namespace is where the PrometheusRule and the dashboards' ConfigMap go.
	Namespace string
	// APIURL is workerscale's runtime API as Alertmanager reaches it, for the action
	// alerts' receiver.
	APIURL string
}

func (o Options) runbook(alert string) string {
	return o.RunbookURL + "#" + strings.ToLower(alert)
}

// alertRules are a warning and a critical alert per graded metric and workload, and the
// alerts on the controller itself.
func alertRules(r *rules.Rules, o Options) []Rule {
	var out []Rule
	for _, w := range r.Workloads {
		for _, metric := range gradedWithQuery(&w) {
			t := w.Thresholds[metric]
			series := selector(MetricSeries(metric), is("workload", w.Name))
			for _, lv := range []struct {
				severity, op, word string
				level              float64
			}{
				{"warning", ">=", "at or above", *t.Warning},
				{"critical", ">", "above", *t.Critical},
			} {
				op, word := lv.op, lv.word
				if t.Direction == rules.LowerIsWorse {
					op = map[string]string{">=": "<=", ">": "<"}[op]
					word = strings.NewReplacer("above", "below").Replace(word)
				}
				name := AlertName(metric)
				out = append(out, Rule{
					Alert:  name,
					Expr:   fmt.Sprintf("%s %s %s", series, op, num(lv.level)),
					For:    t.For.String(),
					Labels: map[string]string{"severity": lv.severity, "workload": templateText(w.Name)},
					Annotations: map[string]string{
						"summary":     fmt.Sprintf("%s of %s is %s", templateText(metric), templateText(w.Name), lv.severity),
						"description": fmt.Sprintf("%s of workload %s is {{ $value | printf \"%%.3g\" }}, %s its %s level %s, for %s.", templateText(metric), templateText(w.Name), word, lv.severity, num(lv.level), t.For),
						"runbook_url": o.runbook(name),
					},
				})
			}
		}
	}
	up := selector("up", is("job", o.ControllerJob))
	controller := []Rule{
		{
			// Down when no instance is up: one of two replicas down still scales.
			Alert: "WorkerscaleDown", Expr: fmt.Sprintf(`max(%s) == 0 or absent(%s)`, up, up), For: "5m",
			Labels: map[string]string{"severity": "critical"},
			Annotations: map[string]string{
				"summary":     "workerscale is down",
				"description": fmt.Sprintf("No workerscale instance of job %s has been up for 5m: no fleet is scaled.", templateText(o.ControllerJob)),
			},
		},
		{
			Alert: "WorkerscaleCyclesFailing",
			Expr:  `sum(rate(workerscale_cycles_total{result="error"}[10m])) / sum(rate(workerscale_cycles_total[10m])) > 0.5`, For: "15m",
			Labels: map[string]string{"severity": "warning"},
			Annotations: map[string]string{
				"summary":     "workerscale cycles are failing",
				"description": "More than half of workerscale's cycles failed over 15m: {{ $value | humanizePercentage }}.",
			},
		},
		{
			Alert: "WorkerscaleRulesInvalid", Expr: `max(workerscale_rules_valid) == 0`, For: "5m",
			Labels: map[string]string{"severity": "warning"},
			Annotations: map[string]string{
				"summary":     "workerscale refused an invalid rules file",
				"description": "The newest rules file is invalid; the previous rules stay in force. Its problems are in workerscale's log.",
			},
		},
		{
			// Per workload: a missing exporter of one workload pages for that workload.
			Alert:  "WorkerscaleMetricsMissing",
			Expr:   `max by (workload) (workerscale_metrics_missing) > 0`,
			For:    "10m",
			Labels: map[string]string{"severity": "warning"},
			Annotations: map[string]string{
				"summary":     "{{ $labels.workload }}'s metrics are missing",
				"description": "{{ $value }} of the metrics {{ $labels.workload }}'s replica count rests on have been missing, stale or invalid for 10m: workerscale does not scale it down while they are.",
			},
		},
		{
			Alert:  "WorkerscaleHeldAtMax",
			Expr:   `sum by (workload, limit) (increase(workerscale_limits_total{limit=~"maxReplicas|classMax|rateBudget"}[15m])) > 0`,
			For:    "30m",
			Labels: map[string]string{"severity": "warning"},
			Annotations: map[string]string{
				"summary":     "{{ $labels.workload }} is held at its {{ $labels.limit }} limit",
				"description": "workerscale has wanted more for {{ $labels.workload }} than {{ $labels.limit }} allows for 30m.",
			},
		},
	}
	for i := range controller {
		controller[i].Annotations["runbook_url"] = o.runbook(controller[i].Alert)
	}
	return append(out, controller...)
}

// metricName is what a metric of the rules may be called: it becomes part of a series
// name (workerscale:<metric>) and of an alert name.
var metricName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// checkMetricNames refuses rules whose metric names cannot be series names. Everything
// else of the rules is escaped where it reaches PromQL; a series name cannot be.
func checkMetricNames(r *rules.Rules) error {
	for _, w := range r.Workloads {
		for _, m := range slices.Concat(slices.Sorted(maps.Keys(w.Queries)), slices.Sorted(maps.Keys(w.Thresholds))) {
			if !metricName.MatchString(m) {
				return fmt.Errorf("workload %s: metric %q: a metric name must match %s to name a series", w.Name, m, metricName)
			}
		}
	}
	return nil
}

// PrometheusRules is the rule file for the rules r.
func PrometheusRules(r *rules.Rules, o Options) (RuleFile, error) {
	if err := checkMetricNames(r); err != nil {
		return RuleFile{}, err
	}
	recording, err := recordingRules(r)
	if err != nil {
		return RuleFile{}, err
	}
	return RuleFile{Groups: []RuleGroup{
		{Name: "workerscale-metrics", Interval: r.Interval.String(), Rules: recording},
		{Name: "workerscale-thresholds", Interval: r.Interval.String(), Rules: thresholdRules(r)},
		{Name: "workerscale-alerts", Rules: alertRules(r, o)},
	}}, nil
}
