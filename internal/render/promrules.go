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
	// dashboards' namespace and workload variables read their values from it, and the
	// recording rules of target-matched queries and the alerts find a workload's target
	// by it.
	InfoSeries = "workerscale:workload_info"
	// QueueInfoSeries is 1 per queue of a workload: {workload, queue}. The recording rules
	// of queue-matched queries find a queue's workload by it.
	QueueInfoSeries = "workerscale:workload_queue_info"
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

// genericData is the template data of the recording rules, which read every workload at
// once: any queue, namespace and target name (anyValue), which the joins with
// QueueInfoSeries and InfoSeries then narrow to the rules' own, so that the recording
// rules do not grow with the workloads or their namespaces. They read the cluster's
// cAdvisor and kube-state-metrics series as kubernetes-mixin's recording rules do; the
// controller's own queries keep to the rules' namespaces.
func genericData(r *rules.Rules) rules.TemplateData {
	return rules.TemplateData{Queues: anyValue, Namespaces: anyValue, Workloads: anyValue, RateWindow: r.Queries.RateWindow.String()}
}

// anyValue is a regular expression matching any label value but the empty one; a name
// may hold a newline, which . alone does not match.
const anyValue = "(?s:.+)"

// names are the workloads' names, sorted.
func names(ws []*rules.Workload) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Name
	}
	slices.Sort(out)
	return out
}

// among are the matchers (none or one) that narrow series of the workloads of universe
// (every workload a rule's input has a series for, or more) to those of group: none when
// the group is the whole universe, else the shorter of workload=~ the group and
// workload!~ the rest of all. Rules written for a group of workloads thus hold their
// names only where the workloads differ (in a level, a direction, a query).
func among(group, universe, all []string) []string {
	if len(group) == len(universe) {
		return nil
	}
	var rest []string
	for _, n := range all {
		if !slices.Contains(group, n) {
			rest = append(rest, n)
		}
	}
	in, out := "workload=~"+`"`+rules.PromQLAlternation(group)+`"`, "workload!~"+`"`+rules.PromQLAlternation(rest)+`"`
	if len(out) < len(in) {
		return []string{out}
	}
	return []string{in}
}

// groupBy partitions ws by key, in the order of the keys' first workloads.
func groupBy[K comparable](ws []*rules.Workload, key func(*rules.Workload) K) ([]K, map[K][]*rules.Workload) {
	var keys []K
	groups := map[K][]*rules.Workload{}
	for _, w := range ws {
		k := key(w)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], w)
	}
	return keys, groups
}

// pointers are r's workloads.
func pointers(r *rules.Rules) []*rules.Workload {
	out := make([]*rules.Workload, len(r.Workloads))
	for i := range r.Workloads {
		out[i] = &r.Workloads[i]
	}
	return out
}

// metricsOf are the metrics that some workload of ws reads, sorted.
func metricsOf(ws []*rules.Workload) []string {
	var out []string
	for _, w := range ws {
		for m := range w.Queries {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// queryKey is what a metric's recording rule depends on: workloads whose template expands
// the same, with the same match and aggregation, share one.
type queryKey struct {
	expr, match, aggregation string
}

// recordingRules give every metric of every workload a series with a workload label: one
// rule per metric and way of reading it (the rules' template, shared by every workload
// that does not replace it), over all its workloads at once. A template's series are
// matched to workloads by QueueInfoSeries (by queue) or InfoSeries (by namespace and
// target name), and combined as the engine combines them.
func recordingRules(r *rules.Rules) ([]Rule, error) {
	all := pointers(r)
	allNames := names(all)
	data := genericData(r)
	var out []Rule
	for _, metric := range metricsOf(all) {
		var readers []*rules.Workload
		for _, w := range all {
			if _, ok := w.Queries[metric]; ok {
				readers = append(readers, w)
			}
		}
		var err error
		keys, groups := groupBy(readers, func(w *rules.Workload) queryKey {
			q := w.Queries[metric]
			expr, e := q.Render(data)
			if e != nil && err == nil {
				err = fmt.Errorf("workload %s, %s: %w", w.Name, metric, e)
			}
			return queryKey{expr, q.Match, w.Aggregation(metric)}
		})
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			sel := among(names(groups[k]), allNames, allNames)
			// The series a query marks unavailable are no value to combine.
			expr := rules.WithoutUnavailable(k.expr)
			var joined string
			if k.match == rules.MatchTarget {
				// The template's workload label is the target's name.
				joined = fmt.Sprintf(`label_replace(%s, "target_name", "$1", "workload", "(.*)")`+"\n* on (namespace, target_name) group_left (workload) %s",
					expr, selector(InfoSeries, sel...))
			} else {
				joined = fmt.Sprintf("(%s)\n* on (queue) group_left (workload) %s", expr, selector(QueueInfoSeries, sel...))
			}
			out = append(out, Rule{Record: MetricSeries(metric), Expr: fmt.Sprintf("%s by (workload) (\n%s\n)", k.aggregation, joined)})
			if metric == rules.QueueDepth && k.match == rules.MatchQueue {
				out = append(out, Rule{Record: QueueDepthSeries, Expr: fmt.Sprintf("sum by (workload, queue) (\n%s\n)", joined)})
			}
		}
	}
	out = append(out, derivedRules(all, allNames)...)
	return append(out, levelRules(all, allNames)...), nil
}

// derivedRules are what the engine derives, for the workloads that do not query it:
// saturation from the active jobs and the ready replicas' slots, the wait from the queue
// depth and the throughput (Little's law). The controller's gauges come from every
// instance it runs as (see controllerGauge).
func derivedRules(all []*rules.Workload, allNames []string) []Rule {
	var saturation, wait []*rules.Workload
	for _, w := range all {
		_, sat := w.Queries[rules.Saturation]
		_, active := w.Queries[rules.ActiveJobs]
		_, waits := w.Queries[rules.WaitSeconds]
		_, depth := w.Queries[rules.QueueDepth]
		_, tput := w.Queries[rules.Throughput]
		if !sat && active {
			saturation = append(saturation, w)
		}
		if !waits && depth && tput {
			wait = append(wait, w)
		}
	}
	var out []Rule
	if len(saturation) > 0 {
		sel := among(names(saturation), allNames, allNames)
		out = append(out, Rule{Record: MetricSeries(rules.Saturation), Expr: fmt.Sprintf(
			`%s / on (workload) ((%s * on (workload) %s) > 0)`,
			selector(MetricSeries(rules.ActiveJobs), sel...), controllerGauge("workerscale_ready_replicas", sel...),
			controllerGauge("workerscale_current_concurrency", sel...))})
	}
	if len(wait) > 0 {
		sel := among(names(wait), allNames, allNames)
		out = append(out, Rule{Record: MetricSeries(rules.WaitSeconds), Expr: fmt.Sprintf(
			`%s / on (workload) (%s > 0)`, selector(MetricSeries(rules.QueueDepth), sel...), selector(MetricSeries(rules.Throughput), sel...))})
	}
	return out
}

// graders are the workloads of all that grade metric, sorted by name.
func graders(all []*rules.Workload, metric string) []*rules.Workload {
	var out []*rules.Workload
	for _, w := range all {
		if slices.Contains(gradedWithQuery(w), metric) {
			out = append(out, w)
		}
	}
	return out
}

// gradedMetrics are the metrics some workload of all grades, sorted.
func gradedMetrics(all []*rules.Workload) []string {
	var out []string
	for _, w := range all {
		for _, m := range gradedWithQuery(w) {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// comparisons are the operators that grade a value at or beyond its warning level and
// beyond its critical level, for a direction.
func comparisons(d rules.Direction) (warning, critical string) {
	if d == rules.LowerIsWorse {
		return "<=", "<"
	}
	return ">=", ">"
}

// thresholdOf selects a metric's level among ThresholdSeries.
func thresholdOf(metric, level string) string {
	return selector(ThresholdSeries, is("metric", metric), is("level", level))
}

// levelRules grade each graded metric by each workload's own levels, as its alerts do:
// 0 ok, 1 at or beyond its warning level, 2 beyond its critical level. One rule per
// metric and direction.
func levelRules(all []*rules.Workload, allNames []string) []Rule {
	var out []Rule
	for _, metric := range gradedMetrics(all) {
		ws := graders(all, metric)
		dirs, groups := groupBy(ws, func(w *rules.Workload) rules.Direction { return w.Thresholds[metric].Direction })
		for _, d := range dirs {
			series := selector(MetricSeries(metric), among(names(groups[d]), names(ws), allNames)...)
			warn, crit := comparisons(d)
			out = append(out, Rule{
				Record: LevelSeries,
				Expr: fmt.Sprintf("(%s %s bool on (workload) %s)\n+ (%s %s bool on (workload) %s)",
					series, warn, thresholdOf(metric, "warning"), series, crit, thresholdOf(metric, "critical")),
				Labels: map[string]string{"metric": metric},
			})
		}
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

// thresholdRules publish each workload's target (InfoSeries), its queues
// (QueueInfoSeries), its levels and the classes' costs, so that the recording rules, the
// alerts and the dashboards find each workload's series and levels without naming it.
// They are the only rules that grow with the workloads: a workload's info and queues, and
// each level only where workloads differ (one rule per metric and level, whose workloads
// at the same value share a term).
func thresholdRules(r *rules.Rules) []Rule {
	var out []Rule
	for _, w := range r.Workloads {
		out = append(out, Rule{Record: InfoSeries, Expr: "vector(1)", Labels: map[string]string{
			"workload": w.Name, "namespace": w.Target.Namespace, "target_kind": w.Target.Kind, "target_name": w.Target.Name,
		}})
	}
	for _, w := range r.Workloads {
		for _, q := range w.Queues {
			out = append(out, Rule{Record: QueueInfoSeries, Expr: "vector(1)", Labels: map[string]string{"workload": w.Name, "queue": q}})
		}
	}
	all := pointers(r)
	allNames := names(all)
	for _, metric := range gradedMetrics(all) {
		for _, level := range []string{"target", "warning", "critical"} {
			values, groups := groupBy(graders(all, metric), func(w *rules.Workload) float64 { return levelOf(w.Thresholds[metric], level) })
			slices.Sort(values)
			terms := make([]string, len(values))
			for i, v := range values {
				terms[i] = fmt.Sprintf("%s * %s", num(v), selector(InfoSeries, among(names(groups[v]), allNames, allNames)...))
			}
			out = append(out, Rule{Record: ThresholdSeries, Expr: strings.Join(terms, "\nor "),
				Labels: map[string]string{"metric": metric, "level": level}})
		}
	}
	for _, c := range r.Classes {
		out = append(out, Rule{Record: ClassCostSeries, Expr: constant(c.CostPerHour), Labels: map[string]string{"class": c.Name}})
	}
	return out
}

// levelOf is a threshold's level: target (warning when it has none), warning or critical.
func levelOf(t rules.Threshold, level string) float64 {
	switch level {
	case "target":
		if t.Target != nil {
			return *t.Target
		}
		return *t.Warning
	case "warning":
		return *t.Warning
	}
	return *t.Critical
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

// targetLabels are the labels an alert about a workload takes from InfoSeries (or from
// ThresholdSeries, which carries them), besides the workload's name: its target's
// namespace (so that a team's AlertmanagerConfig, which matches its own namespace,
// receives it), kind and name.
const targetLabels = "namespace, target_kind, target_name"

// workloadText names the alert's workload and its target in a description, from its
// labels: render (Deployment luneo/luneo-worker-ia).
const workloadText = "{{ $labels.workload }} ({{ $labels.target_kind }} {{ $labels.namespace }}/{{ $labels.target_name }})"

// ofWorkload joins expr, whose series have a workload label, to InfoSeries for the labels
// of its target; workloads that are not the rules' drop out.
func ofWorkload(expr string) string {
	return fmt.Sprintf("(%s)\n* on (workload) group_left (%s) %s", expr, targetLabels, InfoSeries)
}

// levelText is the template text of the alert's workload's level of a metric, read from
// ThresholdSeries when the alert fires.
func levelText(metric, level string) string {
	return fmt.Sprintf(`{{ with printf "%s{workload=%%q, metric=%%q, level=%%q}" $labels.workload %q %q | query }}{{ . | first | value }}{{ end }}`,
		ThresholdSeries, metric, level)
}

// alertKey is what one metric alert rule is written for: its workloads share the metric's
// direction and `for`.
type alertKey struct {
	direction rules.Direction
	hold      string
}

// metricAlertRules are the alerts of the graded metrics: one name per metric, at each
// workload's warning level (at or beyond it) and beyond its critical level, each with its
// severity. A rule compares every workload's series with its own level in
// ThresholdSeries, so it is written once per metric, direction and `for`, whatever the
// number of workloads.
func metricAlertRules(all []*rules.Workload, o Options) []Rule {
	allNames := names(all)
	var out []Rule
	for _, metric := range gradedMetrics(all) {
		ws := graders(all, metric)
		keys, groups := groupBy(ws, func(w *rules.Workload) alertKey {
			t := w.Thresholds[metric]
			return alertKey{t.Direction, t.For.String()}
		})
		for _, k := range keys {
			a := metricAlertOf(metric, k.direction)
			series := selector(MetricSeries(metric), among(names(groups[k]), names(ws), allNames)...)
			warn, crit := comparisons(k.direction)
			for _, lv := range []struct{ level, severity, op, word string }{
				{"warning", a.AtWarning, warn, "at or above"},
				{"critical", a.AtCritical, crit, "above"},
			} {
				word := lv.word
				if k.direction == rules.LowerIsWorse {
					word = strings.NewReplacer("above", "below").Replace(word)
				}
				out = append(out, Rule{
					Alert: a.Name,
					// A filter keeps the metric's value; the level's series carries the
					// target's labels.
					Expr:   fmt.Sprintf("%s %s on (workload) group_left (%s) %s", series, lv.op, targetLabels, thresholdOf(metric, lv.level)),
					For:    k.hold,
					Labels: map[string]string{"severity": lv.severity},
					Annotations: map[string]string{
						"summary": a.Summary,
						"description": fmt.Sprintf("%s of workload %s is {{ $value | printf \"%%.3g\" }}, %s its %s level %s, for %s.",
							metric, workloadText, word, lv.level, levelText(metric, lv.level), k.hold),
						"runbook_url": o.runbook(a.Name),
					},
				})
			}
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
func limitedRecently(job, limit, by string) string {
	return fmt.Sprintf("max by (%s) (increase(%s[5m])) > 0", by, selector("workerscale_limits_total", is("job", job), limit))
}

// workloadControllerRules are the alerts on the controller's own per-workload series:
// metrics missing, the circuit breaker open, held at a limit, and held while the backlog
// is critical. Each is written once for every workload of the rules.
func workloadControllerRules(all []*rules.Workload, o Options) []Rule {
	job := o.ControllerJob
	out := []Rule{
		{
			// A standby exports no per-workload series; the largest value of the instances
			// that do counts once.
			Alert:  "WorkerscaleMetricsMissing",
			Expr:   ofWorkload(fmt.Sprintf("max by (workload) (%s) > 0", selector("workerscale_metrics_missing", is("job", job)))),
			For:    "10m",
			Labels: map[string]string{"severity": severityCritical},
			Annotations: map[string]string{
				"summary":     "Metrics the workload's replica count rests on are missing, so its scaling is frozen.",
				"description": "{{ $value }} of the metrics workload " + workloadText + "'s replica count rests on (threshold: more than 0) have been missing, stale or invalid for 10m: workerscale holds its capacity and does not scale it in.",
			},
		},
		{
			Alert:  "WorkerscaleCircuitBreakerOpen",
			Expr:   ofWorkload(limitedRecently(job, `limit="circuitBreaker"`, "workload")),
			For:    "5m",
			Labels: map[string]string{"severity": severityCritical},
			Annotations: map[string]string{
				"summary":     "The workload's circuit breaker is open: workerscale does not add workers to a failing fleet.",
				"description": "workerscale's circuit breaker has held back workload " + workloadText + "'s capacity for 5m ({{ $value | printf \"%.3g\" }} decisions bounded in the last 5m, threshold: more than 0): its jobs fail, the upstream answers 429, or none of its replicas is ready.",
			},
		},
		{
			Alert:  "WorkerscaleWorkloadMaxedOut",
			Expr:   ofWorkload(limitedRecently(job, "limit=~"+str(heldLimits), "workload, limit")),
			For:    "15m",
			Labels: map[string]string{"severity": severityWarning},
			Annotations: map[string]string{
				"summary":     "The workload is held at a limit below what it needs.",
				"description": "workerscale has wanted more for workload " + workloadText + " than its {{ $labels.limit }} limit allows for 15m ({{ $value | printf \"%.3g\" }} decisions bounded in the last 5m, threshold: more than 0).",
			},
		},
	}
	// The backlog is critical where the queue depth or the wait grades 2 (LevelSeries), by
	// each workload's own levels and direction.
	var backlog []string
	for _, m := range []string{rules.QueueDepth, rules.WaitSeconds} {
		if len(graders(all, m)) > 0 {
			backlog = append(backlog, m)
		}
	}
	if len(backlog) > 0 {
		maxed := out[len(out)-1]
		out = append(out, Rule{
			Alert:  maxed.Alert,
			Expr:   fmt.Sprintf("%s\nand on (workload) (%s == 2)", maxed.Expr, selector(LevelSeries, "metric=~"+str(strings.Join(backlog, "|")))),
			For:    maxed.For,
			Labels: map[string]string{"severity": severityCritical},
			Annotations: map[string]string{
				"summary": maxed.Annotations["summary"],
				"description": "workerscale has wanted more for workload " + workloadText + " than its {{ $labels.limit }} limit allows for 15m ({{ $value | printf \"%.3g\" }} decisions bounded in the last 5m) while its backlog is critical (" +
					strings.Join(backlog, " or ") + " beyond its critical level): the autoscaler cannot absorb it.",
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

// alertRules are the metric alerts and the alerts on the controller's per-workload
// series, each written once for all workloads, and the alerts on the controller itself.
func alertRules(r *rules.Rules, o Options) []Rule {
	all := pointers(r)
	return slices.Concat(metricAlertRules(all, o), workloadControllerRules(all, o), controllerRules(o))
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
		{Name: "workerscale-thresholds", Interval: r.Interval.String(), Rules: thresholdRules(r)},
		{Name: "workerscale-metrics", Interval: r.Interval.String(), Rules: recording},
		{Name: "workerscale-alerts", Rules: alertRules(r, o)},
	}}, nil
}
