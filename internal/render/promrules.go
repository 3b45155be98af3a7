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
	// ThresholdSeries is each graded metric's levels: {workload, metric, level}, level
	// target, warning or critical.
	ThresholdSeries = "workerscale:threshold:value"
	// LevelSeries is each graded metric's grade: {workload, metric}, 0 ok, 1 at or beyond
	// its warning level, 2 beyond its critical level, as the alerts grade it.
	LevelSeries = "workerscale:level"
	// InfoSeries is 1 per workload: {workload, namespace, target_kind, target_name}. The
	// dashboards' namespace and workload variables read their values from it.
	InfoSeries = "workerscale:workload_info"
	// QueueDepthSeries is a workload's queue depth by queue: {workload, queue}.
	QueueDepthSeries = "workerscale:queue_depth:by_queue"
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
			if metric == rules.QueueDepth && q.Match == rules.MatchQueue {
				out = append(out, Rule{Record: QueueDepthSeries, Expr: fmt.Sprintf("sum by (queue) (%s)", expr),
					Labels: map[string]string{"workload": w.Name}})
			}
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
		out = append(out, levelRules(w)...)
	}
	return out, nil
}

// levelRules grade each graded metric of w by its levels, as its alerts do: 0 ok, 1 at
// or beyond its warning level, 2 beyond its critical level.
func levelRules(w *rules.Workload) []Rule {
	var out []Rule
	for _, metric := range gradedWithQuery(w) {
		t := w.Thresholds[metric]
		series := selector(MetricSeries(metric), is("workload", w.Name))
		warn, crit := ">=", ">"
		if t.Direction == rules.LowerIsWorse {
			warn, crit = "<=", "<"
		}
		out = append(out, Rule{
			Record: LevelSeries,
			Expr:   fmt.Sprintf("(%s %s bool %s) + (%s %s bool %s)", series, warn, num(*t.Warning), series, crit, num(*t.Critical)),
			Labels: map[string]string{"workload": w.Name, "metric": metric},
		})
	}
	return out
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

// thresholdRules publish each workload's target (its namespace, kind and name, in
// InfoSeries) and levels, so that the dashboards list the workloads and draw each one's
// own thresholds without holding any of them.
func thresholdRules(r *rules.Rules) []Rule {
	var out []Rule
	for _, w := range r.Workloads {
		out = append(out, Rule{Record: InfoSeries, Expr: constant(1), Labels: map[string]string{
			"workload": w.Name, "namespace": w.Target.Namespace, "target_kind": w.Target.Kind, "target_name": w.Target.Name,
		}})
		for _, metric := range gradedWithQuery(&w) {
			t := w.Thresholds[metric]
			target := *t.Warning
			if t.Target != nil {
				target = *t.Target
			}
			for _, lv := range []struct {
				name string
				v    float64
			}{{"target", target}, {"warning", *t.Warning}, {"critical", *t.Critical}} {
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

// Options tune what render writes.
type Options struct {
	// RunbookURL is where docs/runbooks.md is published; alerts link to its anchors.
	RunbookURL string
	// ControllerJob is the scrape job of workerscale's own /metrics.
	ControllerJob string
	// ControllerNamespace is the namespace workerscale runs in: the namespace label of
	// WorkerscaleDown when no series of its job is left to carry one.
	ControllerNamespace string
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

// Severities. What a person must do sets them, not how far a metric is from its level: a
// symptom the autoscaler is absorbing (a backlog, a long wait, busy workers) is info at
// its warning level and warning at its critical level; critical is for what it cannot
// absorb (held at a limit while the backlog is critical, its circuit breaker open, its
// metrics missing, the controller down or its rules refused). docs/runbooks.md says so.
const (
	severityInfo     = "info"
	severityWarning  = "warning"
	severityCritical = "critical"
)

// metricAlert is how a graded metric alerts: its name, which says the condition, its
// static summary, and the severity at the metric's warning and at its critical level.
type metricAlert struct {
	Name, Summary         string
	AtWarning, AtCritical string
}

// metricAlerts are the alerts of the built-in graded metrics.
var metricAlerts = map[string]metricAlert{
	rules.QueueDepth:  {"WorkerscaleQueueBacklogHigh", "Jobs are queueing beyond the workload's backlog level.", severityInfo, severityWarning},
	rules.WaitSeconds: {"WorkerscaleWaitTimeHigh", "Jobs wait longer than the workload's level before they start.", severityInfo, severityWarning},
	rules.Saturation:  {"WorkerscaleSaturationHigh", "Almost every concurrency slot of the workload is busy.", severityInfo, severityWarning},
	rules.CPU:         {"WorkerscaleCPUHigh", "The workload's workers use most of their CPU request.", severityInfo, severityWarning},
	rules.Memory:      {"WorkerscaleMemoryHigh", "The workload's workers use most of their memory request.", severityInfo, severityWarning},
	rules.RateLimited: {"WorkerscaleUpstreamRateLimited", "The upstream API answers the workload's requests with 429s.", severityInfo, severityWarning},
	// Failing jobs are not absorbed by more workers: at its critical level the circuit
	// breaker stops adding them.
	rules.CompletionRate: {"WorkerscaleCompletionRateLow", "Too many of the workload's jobs fail.", severityWarning, severityCritical},
}

// metricAlertOf is the alert of a graded metric: WorkerscaleQueueBacklogHigh, ...; a metric
// the rules add alerts as Workerscale<Metric>High, or Low where lower is worse.
func metricAlertOf(metric string, direction rules.Direction) metricAlert {
	if a, ok := metricAlerts[metric]; ok {
		return a
	}
	r := []rune(metric)
	r[0] = unicode.ToUpper(r[0])
	way := "High"
	if direction == rules.LowerIsWorse {
		way = "Low"
	}
	return metricAlert{"Workerscale" + string(r) + way, fmt.Sprintf("The workload's metric %s is beyond its level.", metric), severityInfo, severityWarning}
}

// workloadLabels are the labels of an alert about workload w: its severity, the
// namespace, kind and name of its target (so that a team's AlertmanagerConfig, which
// matches its own namespace, receives it) and the workload's name.
func workloadLabels(w *rules.Workload, severity string) map[string]string {
	return map[string]string{
		"severity":    severity,
		"namespace":   templateText(w.Target.Namespace),
		"target_kind": templateText(w.Target.Kind),
		"target_name": templateText(w.Target.Name),
		"workload":    templateText(w.Name),
	}
}

// workloadText names w and its target in a description: render (Deployment luneo/luneo-worker-ia).
func workloadText(w *rules.Workload) string {
	return fmt.Sprintf("%s (%s %s/%s)", templateText(w.Name), templateText(w.Target.Kind), templateText(w.Target.Namespace), templateText(w.Target.Name))
}

// metricAlertRules are the alerts of w's graded metrics: one name per metric, at its
// warning level (at or beyond it) and beyond its critical level, each with its severity.
func metricAlertRules(w *rules.Workload, o Options) []Rule {
	var out []Rule
	for _, metric := range gradedWithQuery(w) {
		t := w.Thresholds[metric]
		a := metricAlertOf(metric, t.Direction)
		series := selector(MetricSeries(metric), is("workload", w.Name))
		for _, lv := range []struct {
			level, severity, op, word string
			value                     float64
		}{
			{"warning", a.AtWarning, ">=", "at or above", *t.Warning},
			{"critical", a.AtCritical, ">", "above", *t.Critical},
		} {
			op, word := lv.op, lv.word
			if t.Direction == rules.LowerIsWorse {
				op = map[string]string{">=": "<=", ">": "<"}[op]
				word = strings.NewReplacer("above", "below").Replace(word)
			}
			out = append(out, Rule{
				Alert:  a.Name,
				Expr:   fmt.Sprintf("%s %s %s", series, op, num(lv.value)),
				For:    t.For.String(),
				Labels: workloadLabels(w, lv.severity),
				Annotations: map[string]string{
					"summary": a.Summary,
					"description": fmt.Sprintf("%s of workload %s is {{ $value | printf \"%%.3g\" }}, %s its %s level %s, for %s.",
						metric, workloadText(w), word, lv.level, num(lv.value), t.For),
					"runbook_url": o.runbook(a.Name),
				},
			})
		}
	}
	return out
}

// The limits that hold a workload below what it needs, by name in workerscale_limits_total.
const heldLimits = "maxReplicas|classMax|rateBudget"

// limitedRecently is 1 per workload (and limit) whose decisions a limit bounded in the
// last 5 minutes. The controller decides every interval, so a workload held for a while
// has one at every evaluation; the largest of the instances' counts is taken (a standby
// decides nothing, and two instances during a rolling update would count twice).
func limitedRecently(job string, w *rules.Workload, limit, by string) string {
	return fmt.Sprintf("max by (%s) (increase(%s[5m])) > 0", by,
		selector("workerscale_limits_total", is("job", job), is("workload", w.Name), limit))
}

// backlogCritical is w's queue depth or wait beyond its critical level, as the alerts
// grade them; "" when w has neither.
func backlogCritical(w *rules.Workload) (expr, text string) {
	var exprs, texts []string
	for _, metric := range gradedWithQuery(w) {
		if metric != rules.QueueDepth && metric != rules.WaitSeconds {
			continue
		}
		t := w.Thresholds[metric]
		op := ">"
		if t.Direction == rules.LowerIsWorse {
			op = "<"
		}
		exprs = append(exprs, fmt.Sprintf("%s %s %s", selector(MetricSeries(metric), is("workload", w.Name)), op, num(*t.Critical)))
		texts = append(texts, fmt.Sprintf("%s %s %s", metric, op, num(*t.Critical)))
	}
	return strings.Join(exprs, " or "), strings.Join(texts, " or ")
}

// workloadControllerRules are the alerts on the controller's own per-workload series:
// metrics missing, the circuit breaker open, held at a limit.
func workloadControllerRules(w *rules.Workload, o Options) []Rule {
	job := o.ControllerJob
	out := []Rule{
		{
			// A standby exports no per-workload series; the largest value of the instances
			// that do counts once.
			Alert:  "WorkerscaleMetricsMissing",
			Expr:   fmt.Sprintf("max by (workload) (%s) > 0", selector("workerscale_metrics_missing", is("job", job), is("workload", w.Name))),
			For:    "10m",
			Labels: workloadLabels(w, severityCritical),
			Annotations: map[string]string{
				"summary": "Metrics the workload's replica count rests on are missing, so its scaling is frozen.",
				"description": fmt.Sprintf("{{ $value }} of the metrics workload %s's replica count rests on (threshold: more than 0) have been missing, stale or invalid for 10m: workerscale holds its capacity and does not scale it in.",
					workloadText(w)),
			},
		},
		{
			Alert:  "WorkerscaleCircuitBreakerOpen",
			Expr:   limitedRecently(job, w, `limit="circuitBreaker"`, "workload"),
			For:    "5m",
			Labels: workloadLabels(w, severityCritical),
			Annotations: map[string]string{
				"summary": "The workload's circuit breaker is open: workerscale does not add workers to a failing fleet.",
				"description": fmt.Sprintf("workerscale's circuit breaker has held back workload %s's capacity for 5m ({{ $value | printf \"%%.3g\" }} decisions bounded in the last 5m, threshold: more than 0): its jobs fail, the upstream answers 429, or none of its replicas is ready.",
					workloadText(w)),
			},
		},
		{
			Alert:  "WorkerscaleWorkloadMaxedOut",
			Expr:   limitedRecently(job, w, "limit=~"+str(heldLimits), "workload, limit"),
			For:    "15m",
			Labels: workloadLabels(w, severityWarning),
			Annotations: map[string]string{
				"summary": "The workload is held at a limit below what it needs.",
				"description": fmt.Sprintf("workerscale has wanted more for workload %s than its {{ $labels.limit }} limit allows for 15m ({{ $value | printf \"%%.3g\" }} decisions bounded in the last 5m, threshold: more than 0).",
					workloadText(w)),
			},
		},
	}
	if backlog, text := backlogCritical(w); backlog != "" {
		maxed := out[len(out)-1]
		out = append(out, Rule{
			Alert:  maxed.Alert,
			Expr:   fmt.Sprintf("(%s) and on (workload) (%s)", maxed.Expr, backlog),
			For:    maxed.For,
			Labels: workloadLabels(w, severityCritical),
			Annotations: map[string]string{
				"summary": maxed.Annotations["summary"],
				"description": fmt.Sprintf("workerscale has wanted more for workload %s than its {{ $labels.limit }} limit allows for 15m ({{ $value | printf \"%%.3g\" }} decisions bounded in the last 5m) while its backlog is critical (%s): the autoscaler cannot absorb it.",
					workloadText(w), text),
			},
		})
	}
	for i := range out {
		out[i].Annotations["runbook_url"] = o.runbook(out[i].Alert)
	}
	return out
}

// controllerRules are the alerts on the controller itself, by the namespace it runs in.
// Two instances may run at once (the leader and a standby, or two during a rolling
// update): the controller is down only when none is up, and its rules are invalid when
// any refused them (a standby does not reload them, and keeps 1).
func controllerRules(o Options) []Rule {
	up := selector("up", is("job", o.ControllerJob))
	job := templateText(o.ControllerJob)
	out := []Rule{
		{
			Alert: "WorkerscaleDown",
			// With no series of the job left (never scraped, or gone from service
			// discovery), absent's 1 becomes an up of 0 in the controller's namespace.
			Expr: fmt.Sprintf(`max by (namespace) (%s) == 0 or max by (namespace) (%s) * 0`, up,
				withLabel(fmt.Sprintf("absent(%s)", up), "namespace", o.ControllerNamespace)),
			For:    "5m",
			Labels: map[string]string{"severity": severityCritical},
			Annotations: map[string]string{
				"summary":     "No workerscale instance is up: no workload is scaled.",
				"description": fmt.Sprintf("No instance of workerscale's job %s in namespace {{ $labels.namespace }} has been up for 5m (up is {{ $value }}, threshold: 1): every workload keeps its size.", job),
			},
		},
		{
			Alert: "WorkerscaleRulesInvalid",
			Expr:  fmt.Sprintf("min by (namespace) (%s) == 0", selector("workerscale_rules_valid", is("job", o.ControllerJob))),
			For:   "5m", Labels: map[string]string{"severity": severityCritical},
			Annotations: map[string]string{
				"summary":     "The controller refused its newest rules file; the previous rules stay in force.",
				"description": fmt.Sprintf("workerscale_rules_valid of job %s in namespace {{ $labels.namespace }} has been {{ $value }} (threshold: 0) for 5m: the newest rules file is invalid, and no change to it applies until it is fixed. Its problems are in workerscale's log.", job),
			},
		},
		{
			Alert: "WorkerscaleCyclesFailing",
			Expr: fmt.Sprintf(`sum by (namespace) (rate(%s[10m])) / sum by (namespace) (rate(%s[10m])) > 0.5`,
				selector("workerscale_cycles_total", is("job", o.ControllerJob), `result="error"`), selector("workerscale_cycles_total", is("job", o.ControllerJob))),
			For:    "15m",
			Labels: map[string]string{"severity": severityWarning},
			Annotations: map[string]string{
				"summary":     "Most of workerscale's control-loop cycles fail.",
				"description": fmt.Sprintf("{{ $value | humanizePercentage }} of the cycles of workerscale's job %s in namespace {{ $labels.namespace }} failed over 10m (threshold: 50%%), for 15m.", job),
			},
		},
	}
	for i := range out {
		out[i].Annotations["runbook_url"] = o.runbook(out[i].Alert)
	}
	return out
}

// alertRules are every workload's metric alerts and alerts on its controller series, and
// the alerts on the controller itself.
func alertRules(r *rules.Rules, o Options) []Rule {
	var out []Rule
	for i := range r.Workloads {
		w := &r.Workloads[i]
		out = append(out, metricAlertRules(w, o)...)
		out = append(out, workloadControllerRules(w, o)...)
	}
	return append(out, controllerRules(o)...)
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
