package render

import (
	"fmt"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// The dashboards' UIDs.
const (
	FleetUID    = "workerscale-fleet"
	WorkloadUID = "workerscale-workload"
)

var datasource = &DatasourceRef{Type: "prometheus", UID: "${datasource}"}

// metricInfo is how a metric is shown.
type metricInfo struct {
	title, unit, description string
}

func infoOf(metric string) metricInfo {
	switch metric {
	case rules.QueueDepth:
		return metricInfo{"Queue depth", "short", "Jobs waiting in the workload's queues, summed over its queues."}
	case rules.Saturation:
		return metricInfo{"Saturation", "percentunit", "Busy concurrency slots over the slots of the ready replicas."}
	case rules.WaitSeconds:
		return metricInfo{"Job wait", "s", "How long a job waits before it starts: the queue depth over the throughput, or the rules' own query."}
	case rules.CPU:
		return metricInfo{"CPU / request", "percentunit", "CPU used by the workload's pods over their CPU requests."}
	case rules.Memory:
		return metricInfo{"Memory / request", "percentunit", "Working-set memory of the workload's pods over their memory requests."}
	case rules.CompletionRate:
		return metricInfo{"Completion rate", "percentunit", "Jobs completed over jobs finished (completed or failed)."}
	}
	return metricInfo{metric, "short", "The rules' metric " + metric + "."}
}

// layout places panels left to right, wrapping at the grid's 24 columns.
type layout struct {
	nextID int
	x, y   int
	rowH   int
	panels []Panel
}

func (l *layout) id() int { l.nextID++; return l.nextID }

func (l *layout) row(title string) {
	l.newline()
	collapsed := false
	l.panels = append(l.panels, Panel{ID: l.id(), Type: "row", Title: title, GridPos: GridPos{H: 1, W: 24, X: 0, Y: l.y}, Collapsed: &collapsed, Panels: &[]Panel{}})
	l.y++
}

func (l *layout) newline() {
	if l.x > 0 {
		l.x, l.y, l.rowH = 0, l.y+l.rowH, 0
	}
}

func (l *layout) add(p Panel, w, h int) {
	if l.x+w > 24 {
		l.newline()
	}
	p.ID = l.id()
	p.GridPos = GridPos{H: h, W: w, X: l.x, Y: l.y}
	p.Datasource = datasource
	for i := range p.Targets {
		p.Targets[i].Datasource = datasource
		p.Targets[i].RefID = string(rune('A' + i))
	}
	l.panels = append(l.panels, p)
	l.x += w
	l.rowH = max(l.rowH, h)
}

func timeseries(title, description, unit string, targets ...Target) Panel {
	return Panel{
		Type: "timeseries", Title: title, Description: description, Targets: targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{
			Unit: unit, Color: map[string]any{"mode": "palette-classic"}, Mappings: []any{},
			Custom: map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false},
		}, Overrides: []any{}},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []string{}},
			"tooltip": map[string]any{"mode": "multi", "sort": "none"},
		},
	}
}

// levelLines colours the threshold series of a time series panel: dotted green for the
// target, dashed orange for warning, dashed red for critical.
func levelLines() []any {
	var out []any
	for _, lv := range []struct{ name, color string }{{"critical", "red"}, {"target", "green"}, {"warning", "orange"}} {
		out = append(out, map[string]any{
			"matcher": map[string]any{"id": "byName", "options": lv.name},
			"properties": []any{
				map[string]any{"id": "color", "value": map[string]any{"mode": "fixed", "fixedColor": lv.color}},
				map[string]any{"id": "custom.lineStyle", "value": map[string]any{"fill": "dash", "dash": []int{10, 10}}},
				map[string]any{"id": "custom.fillOpacity", "value": 0},
			},
		})
	}
	return out
}

// The dashboards' variables as queries use them. Their values are label values read
// from Prometheus, so the dashboards hold no workload, queue or namespace name and their
// size does not depend on how many workloads the rules have. Grafana escapes a
// variable's values for the Prometheus data source: a multi-value variable's as regular
// expressions (matched with =~), a single value's backslashes and single quotes.
// Workload names are DNS labels (rules.Load checks them), which need neither.
const (
	clusterMatcher   = `cluster=~"$cluster"`
	namespaceMatcher = `namespace=~"$namespace"`
	// workloadMatcher selects the fleet dashboard's workloads (several) and the
	// workload dashboard's one.
	workloadsMatcher = `workload=~"$workload"`
	workloadMatcher  = `workload="$workload"`
)

// variables are datasource, cluster (every value, and matching a missing label, when
// there is no cluster label), namespace and workload, the last from InfoSeries. multi
// makes workload a multi-value variable with All.
func variables(multi bool) []Variable {
	ds := Variable{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus",
		Current: Option{Text: "default", Value: "default", Selected: true}, Options: []Option{}}
	query := func(name, label, q string, multi, all bool) Variable {
		v := Variable{Name: name, Label: label, Type: "query", Query: q, Definition: q, Datasource: datasource,
			Refresh: 2, Sort: 1, Multi: multi, IncludeAll: all, Options: []Option{}}
		if all {
			v.Current = Option{Text: "All", Value: "$__all", Selected: true}
		}
		return v
	}
	cluster := query("cluster", "Cluster", "label_values("+InfoSeries+", cluster)", false, true)
	// With no cluster label (one Prometheus), All must match its absence.
	cluster.AllValue = ".*"
	namespace := query("namespace", "Namespace", "label_values("+InfoSeries+"{"+clusterMatcher+"}, namespace)", true, true)
	workload := query("workload", "Workload", "label_values("+InfoSeries+"{"+clusterMatcher+", "+namespaceMatcher+"}, workload)", multi, multi)
	return []Variable{ds, cluster, namespace, workload}
}

func base(uid, title, description string, multi bool) Dashboard {
	return Dashboard{
		UID: uid, Title: title, Description: description, Tags: []string{"workerscale"},
		Timezone: "browser", SchemaVersion: SchemaVersion, Version: 1, Editable: true, GraphTooltip: 1,
		Refresh: "30s", Time: TimeRange{From: "now-6h", To: "now"},
		Templating: Templating{List: variables(multi)},
		Annotations: Annotations{List: []Annotation{{
			Name: "Annotations & Alerts", BuiltIn: 1, Type: "dashboard", Enable: true, Hide: true,
			IconColor: "rgba(0, 211, 255, 1)", Datasource: &DatasourceRef{Type: "grafana", UID: "-- Grafana --"},
		}}},
		Links: []Link{{Title: "workerscale", Type: "dashboards", Tags: []string{"workerscale"}, AsDropdown: true, IncludeVars: true, KeepTime: true, Icon: "external link"}},
	}
}

// graded are the graded metrics that some workload of r reads or derives, in the order
// of rules.GradedMetrics and then by name: the union over the workloads, which does not
// grow with their number.
func graded(r *rules.Rules) []string {
	var metrics []string
	for i := range r.Workloads {
		for _, m := range gradedWithQuery(&r.Workloads[i]) {
			if !slices.Contains(metrics, m) {
				metrics = append(metrics, m)
			}
		}
	}
	order := rules.GradedMetrics()
	rank := func(m string) int {
		if i := slices.Index(order, m); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(metrics, func(a, b string) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return metrics
}

// levelMappings show LevelSeries' values as words on their colours.
func levelMappings() []any {
	return []any{map[string]any{"type": "value", "options": map[string]any{
		"0": map[string]any{"text": "ok", "color": "green", "index": 0},
		"1": map[string]any{"text": "warning", "color": "orange", "index": 1},
		"2": map[string]any{"text": "critical", "color": "red", "index": 2},
	}}}
}

// column is a column of the fleet table: the value of one instant query, named, with a
// unit and a description.
type column struct {
	title, unit, description, expr string
}

// override sets properties on the field named name.
func override(name string, properties ...map[string]any) map[string]any {
	props := make([]any, len(properties))
	for i, p := range properties {
		props[i] = p
	}
	return map[string]any{"matcher": map[string]any{"id": "byName", "options": name}, "properties": props}
}

func property(id string, value any) map[string]any { return map[string]any{"id": id, "value": value} }

// workloadLink opens the workload dashboard on a table row's workload, keeping the data
// source, cluster and time range.
const workloadLink = "/d/" + WorkloadUID + "/workerscale-workload?var-workload=${__data.fields.workload}&${datasource:queryparam}&${cluster:queryparam}&${namespace:queryparam}&${__url_time_range}"

// rolloutExpr is, for the selected workloads (matchers on InfoSeries), a series per
// workload while its target rolls out, from kube-state-metrics: a Deployment has pods in
// more than one of its ReplicaSets (kube_replicaset_owner, as the presets' owner join),
// a StatefulSet has pods not yet updated to its update revision. A change of the
// replicas alone is no rollout. label_join copies the owner's name, as label_replace's
// "$1" would be a variable to Grafana.
func rolloutExpr(workloads []string) string {
	ns := []string{clusterMatcher, namespaceMatcher}
	deployments := fmt.Sprintf(`count by (namespace, owner_name) (
    (%s > 0)
    * on (namespace, replicaset) group_left (owner_name) max by (namespace, replicaset, owner_name) (%s)
  ) > 1`, selector("kube_replicaset_status_replicas", ns...), selector("kube_replicaset_owner", append(ns, `owner_kind="Deployment"`)...))
	statefulSets := fmt.Sprintf(`%s < %s`, selector("kube_statefulset_status_replicas_updated", ns...), selector("kube_statefulset_status_replicas", ns...))
	return fmt.Sprintf(`max by (workload) (
  (
    label_join(%s, "target_name", "", "owner_name")
    or
    label_join(%s, "target_name", "", "statefulset")
  )
  * on (namespace, target_name) group_left (workload) %s
)`, deployments, statefulSets, selector(InfoSeries, workloads...))
}

// annotations mark, for the selected workloads (matchers wl), workerscale's applied
// scaling actions (from its decisions counter), the changes of the replicas it wants,
// and the targets' rollouts.
func annotations(wl []string, job string) []Annotation {
	return []Annotation{
		{
			Name: "Scaling decisions", Datasource: datasource, Enable: true, IconColor: "rgba(255, 152, 48, 1)",
			Expr:        `sum by (workload, kind) (increase(` + selector("workerscale_decisions_total", append(wl, job, `applied="true"`, `kind!="hold"`)...) + `[2m])) > 0`,
			Step:        "1m",
			TitleFormat: "{{kind}}", TextFormat: "workerscale applied a {{kind}} to {{workload}}", TagKeys: "kind",
		},
		{
			Name: "Desired replicas changed", Datasource: datasource, Enable: true, IconColor: "rgba(138, 184, 255, 1)",
			Expr:        `max by (workload) (changes(` + selector("workerscale_desired_replicas", append(wl, job)...) + `[2m])) > 0`,
			Step:        "1m",
			TitleFormat: "desired replicas changed", TextFormat: "workerscale changed the desired replicas of {{workload}}",
		},
		{
			Name: "Rollouts", Datasource: datasource, Enable: true, IconColor: "rgba(184, 119, 217, 1)",
			Expr: rolloutExpr(wl), Step: "1m",
			TitleFormat: "rollout", TextFormat: "{{workload}}'s target is rolling out: pods of two revisions run",
		},
	}
}

// FleetDashboard is every workload of the selected namespaces at once: a table with a
// row per workload (its worst level, each metric, replicas, class, concurrency and cost
// per hour), linking to its workload dashboard, and each workload's levels over time.
// Every name and level comes from the recording rules, so the dashboard is the same
// whatever the number of workloads.
func FleetDashboard(r *rules.Rules, o Options) Dashboard {
	d := base(FleetUID, "workerscale / fleet", "Every workload of the selected namespaces: its levels, metrics, replicas, class, concurrency and cost. Generated by workerscale render from "+r.File+".", true)
	sel := []string{clusterMatcher, workloadsMatcher}
	job := is("job", o.ControllerJob)
	d.Annotations.List = append(d.Annotations.List, annotations(sel, job)...)
	columns := []column{
		{"Level", "", "The worst level of the workload's metrics, as its rules grade them: ok, warning or critical.", fmt.Sprintf("max by (workload) (%s)", selector(LevelSeries, sel...))},
	}
	for _, m := range graded(r) {
		info := infoOf(m)
		columns = append(columns, column{info.title, info.unit, info.description, fmt.Sprintf("max by (workload) (%s)", selector(MetricSeries(m), sel...))})
	}
	replicas := controllerGauge("workerscale_current_replicas", append(sel, job)...)
	columns = append(columns,
		column{"Replicas", "short", "The target's current replicas, as workerscale last read them.", replicas},
		column{"Desired", "short", "The replicas workerscale last decided on.", controllerGauge("workerscale_desired_replicas", append(sel, job)...)},
		column{"Concurrency", "short", "Jobs each replica runs at once.", controllerGauge("workerscale_current_concurrency", append(sel, job)...)},
		column{"Cost per hour", "currencyUSD", "Replicas times the hourly cost of the current class.", fmt.Sprintf(
			`max by (workload) (%s * on (class) group_left () %s) * on (workload) %s`,
			selector("workerscale_workload_class", append(sel, job, `state="current"`)...), ClassCostSeries, replicas)},
	)
	info := Target{Expr: selector(InfoSeries, clusterMatcher, namespaceMatcher, workloadsMatcher), Instant: true, Format: "table"}
	class := Target{Expr: controllerGaugeBy("workerscale_workload_class", "workload, class", append(sel, job, `state="current"`)...), Instant: true, Format: "table"}
	targets := []Target{info, class}
	overrides := []any{
		override("workload", property("displayName", "Workload"), property("links", []any{map[string]any{"title": "Open the workload dashboard of ${__data.fields.workload}", "url": workloadLink}})),
		override("namespace", property("displayName", "Namespace")),
		override("target_kind", property("displayName", "Kind")),
		override("target_name", property("displayName", "Target")),
		override("class", property("displayName", "Class")),
	}
	exclude := map[string]any{"Time": true, "Value #A": true, "Value #B": true, "__name__": true}
	for i, c := range columns {
		ref := string(rune('C' + i))
		targets = append(targets, Target{Expr: c.expr, Instant: true, Format: "table"})
		props := []map[string]any{property("displayName", c.title), property("description", c.description)}
		if c.unit != "" {
			props = append(props, property("unit", c.unit))
		}
		if c.title == "Level" {
			props = append(props, property("mappings", levelMappings()), property("custom.cellOptions", map[string]any{"type": "color-background"}))
		}
		overrides = append(overrides, override("Value #"+ref, props...))
	}
	table := Panel{
		Type: "table", Title: "Workloads",
		Description: "One row per workload of the selected namespaces. A workload's name opens its dashboard. Levels, metrics and costs come from the recording rules render writes from the rules; replicas, class and concurrency from workerscale's own metrics (job " + o.ControllerJob + ").",
		Targets:     targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Mappings: []any{}, Custom: map[string]any{"align": "auto", "cellOptions": map[string]any{"type": "auto"}, "inspect": false}}, Overrides: overrides},
		Options:     map[string]any{"frameIndex": 0, "showHeader": true, "cellHeight": "sm", "footer": map[string]any{"show": false, "reducer": []string{"sum"}, "fields": ""}, "sortBy": []any{map[string]any{"displayName": "Level", "desc": true}}},
		Transformations: []any{
			map[string]any{"id": "merge", "options": map[string]any{}},
			map[string]any{"id": "organize", "options": map[string]any{"excludeByName": exclude, "indexByName": map[string]any{"workload": 0, "namespace": 1, "target_kind": 2, "target_name": 3}}},
		},
	}
	l := &layout{}
	l.add(table, 24, 12)
	levels := Panel{
		Type: "status-history", Title: "Levels over time",
		Description: "Each metric of each workload graded by its own rules: green ok, orange at or beyond its warning level, red beyond its critical level.",
		Targets:     []Target{{Expr: selector(LevelSeries, sel...), LegendFormat: "{{workload}} {{metric}}"}},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Color: map[string]any{"mode": "thresholds"}, Mappings: levelMappings(),
			Thresholds: &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green"}}}}, Overrides: []any{}},
		Options: map[string]any{"showValue": "never", "rowHeight": 0.9, "legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": false, "calcs": []string{}},
			"tooltip": map[string]any{"mode": "single", "sort": "none"}},
	}
	l.add(levels, 24, 10)
	d.Panels = l.panels
	return d
}

// WorkloadDashboard is one workload over time: its metrics with its own target, warning
// and critical levels (from ThresholdSeries), its queues, replicas, class and
// concurrency, the controller's decisions, limits and errors, and scaling events as
// annotations.
func WorkloadDashboard(r *rules.Rules, o Options) Dashboard {
	d := base(WorkloadUID, "workerscale / workload", "One workload over time, with the levels of its rules. Generated by workerscale render from "+r.File+".", false)
	job := is("job", o.ControllerJob)
	wl := []string{clusterMatcher, workloadMatcher}
	d.Annotations.List = append(d.Annotations.List, annotations(wl, job)...)
	l := &layout{}
	l.row("Metrics of $workload")
	for _, m := range graded(r) {
		info := infoOf(m)
		p := timeseries(info.title, info.description+" Dashed: the workload's target, warning and critical levels from its rules ("+ThresholdSeries+").", info.unit,
			Target{Expr: selector(MetricSeries(m), wl...), LegendFormat: m},
			Target{Expr: fmt.Sprintf("max by (level) (%s)", selector(ThresholdSeries, append(wl, is("metric", m))...)), LegendFormat: "{{level}}"})
		p.FieldConfig.Overrides = levelLines()
		l.add(p, 8, 8)
	}
	if q, ok := r.Queries.Templates[rules.QueueDepth]; ok && q.Match == rules.MatchQueue {
		l.row("Queues")
		l.add(timeseries("Queue depth by queue", "Jobs waiting in each of the workload's queues.", "short",
			Target{Expr: fmt.Sprintf("sum by (queue) (%s)", selector(QueueDepthSeries, wl...)), LegendFormat: "{{queue}}"}), 24, 8)
	}
	l.row("Scaling of $workload")
	l.add(timeseries("Replicas", "The target's current replicas and the replicas workerscale decided on.", "short",
		Target{Expr: controllerGauge("workerscale_current_replicas", append(wl, job)...), LegendFormat: "current"},
		Target{Expr: controllerGauge("workerscale_desired_replicas", append(wl, job)...), LegendFormat: "desired"}), 8, 8)
	classPanel := Panel{Type: "state-timeline", Title: "Class", Description: "The workload's current class and the class workerscale decided on.",
		Targets:     []Target{{Expr: controllerGaugeBy("workerscale_workload_class", "workload, class, state", append(wl, job)...), LegendFormat: "{{state}}: {{class}}"}},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Color: map[string]any{"mode": "palette-classic"}, Mappings: []any{}}, Overrides: []any{}},
		Options: map[string]any{"showValue": "never", "mergeValues": true, "rowHeight": 0.9, "legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []string{}},
			"tooltip": map[string]any{"mode": "single", "sort": "none"}},
	}
	l.add(classPanel, 8, 8)
	l.add(timeseries("Concurrency", "Jobs each replica runs at once: current and decided.", "short",
		Target{Expr: controllerGauge("workerscale_current_concurrency", append(wl, job)...), LegendFormat: "current"},
		Target{Expr: controllerGauge("workerscale_desired_concurrency", append(wl, job)...), LegendFormat: "desired"}), 8, 8)
	l.row("The controller (job " + o.ControllerJob + ")")
	// Counters are summed over the instances: each counts its own cycles (in --dry-run
	// every replica decides; otherwise only the leader does).
	l.add(timeseries("Decisions", "The workload's decisions by kind, and whether they were applied.", "short",
		Target{Expr: `sum by (kind, applied) (increase(` + selector("workerscale_decisions_total", append(wl, job)...) + `[$__rate_interval]))`, LegendFormat: "{{kind}} applied={{applied}}"}), 8, 8)
	l.add(timeseries("Limits hit", "Decisions of the workload that a limit bounded, by limit.", "short",
		Target{Expr: `sum by (limit) (increase(` + selector("workerscale_limits_total", append(wl, job)...) + `[$__rate_interval]))`, LegendFormat: "{{limit}}"}), 8, 8)
	ctl := []string{clusterMatcher, job}
	l.add(timeseries("Errors", "The controller's errors per second by stage, and its failed Prometheus queries by kind.", "reqps",
		Target{Expr: `sum by (stage) (rate(` + selector("workerscale_errors_total", ctl...) + `[$__rate_interval]))`, LegendFormat: "{{stage}}"},
		Target{Expr: `sum by (kind) (rate(` + selector("workerscale_prometheus_query_errors_total", ctl...) + `[$__rate_interval]))`, LegendFormat: "prometheus {{kind}}"}), 8, 8)
	l.add(timeseries("Cycle duration (p90)", "How long the controller's control-loop cycles take, 90th percentile.", "s",
		Target{Expr: `histogram_quantile(0.9, sum by (le) (rate(` + selector("workerscale_cycle_duration_seconds_bucket", ctl...) + `[$__rate_interval])))`, LegendFormat: "p90"}), 12, 8)
	l.add(timeseries("Observations by outcome", "The controller's reads of metrics per second, by outcome.", "reqps",
		Target{Expr: `sum by (outcome) (rate(` + selector("workerscale_prometheus_observations_total", ctl...) + `[$__rate_interval]))`, LegendFormat: "{{outcome}}"}), 12, 8)
	d.Panels = l.panels
	return d
}
