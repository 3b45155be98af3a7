package render

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

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
	title, unit string
}

func infoOf(metric string) metricInfo {
	switch metric {
	case rules.QueueDepth:
		return metricInfo{"Queue depth", "short"}
	case rules.Saturation:
		return metricInfo{"Saturation", "percentunit"}
	case rules.WaitSeconds:
		return metricInfo{"Job wait", "s"}
	case rules.CPU:
		return metricInfo{"CPU / request", "percentunit"}
	case rules.Memory:
		return metricInfo{"Memory / request", "percentunit"}
	case rules.CompletionRate:
		return metricInfo{"Completion rate", "percentunit"}
	}
	return metricInfo{metric, "short"}
}

// ThresholdSteps colour a metric by its levels: green, orange from warning, red from
// critical (the reverse when lower is worse).
func ThresholdSteps(t rules.Threshold) []Step {
	w, c := *t.Warning, *t.Critical
	if t.Direction == rules.LowerIsWorse {
		return []Step{{Color: "red"}, {Color: "orange", Value: &c}, {Color: "green", Value: &w}}
	}
	return []Step{{Color: "green"}, {Color: "orange", Value: &w}, {Color: "red", Value: &c}}
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
	l.panels = append(l.panels, Panel{ID: l.id(), Type: "row", Title: title, GridPos: GridPos{H: 1, W: 24, X: 0, Y: l.y}, Collapsed: &collapsed})
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

func stat(title, unit, expr, legend string, steps []Step) Panel {
	if steps == nil {
		steps = []Step{{Color: "blue"}}
	}
	return Panel{
		Type: "stat", Title: title,
		Targets: []Target{{Expr: expr, LegendFormat: legend, Instant: true}},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{
			Unit: unit, Color: map[string]any{"mode": "thresholds"},
			Thresholds: &Thresholds{Mode: "absolute", Steps: steps}, Mappings: []any{},
		}, Overrides: []any{}},
		Options: map[string]any{
			"colorMode": "background", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
		},
	}
}

func timeseries(title, unit string, targets ...Target) Panel {
	return Panel{
		Type: "timeseries", Title: title, Targets: targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{
			Unit: unit, Color: map[string]any{"mode": "palette-classic"}, Mappings: []any{},
			Custom: map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false},
		}, Overrides: []any{}},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "none"},
		},
	}
}

// levelLines colours the threshold series of a time series panel: dashed orange for
// warning, dashed red for critical.
func levelLines() []any {
	var out []any
	for level, color := range map[string]string{"warning": "orange", "critical": "red"} {
		out = append(out, map[string]any{
			"matcher": map[string]any{"id": "byName", "options": level},
			"properties": []any{
				map[string]any{"id": "color", "value": map[string]any{"mode": "fixed", "fixedColor": color}},
				map[string]any{"id": "custom.lineStyle", "value": map[string]any{"fill": "dash", "dash": []int{10, 10}}},
				map[string]any{"id": "custom.fillOpacity", "value": 0},
			},
		})
	}
	slices.SortFunc(out, func(a, b any) int {
		return strings.Compare(a.(map[string]any)["matcher"].(map[string]any)["options"].(string),
			b.(map[string]any)["matcher"].(map[string]any)["options"].(string))
	})
	return out
}

// The dashboards' variables, as queries use them. A variable's value is not the name
// itself but rules.PromQLAlternation of it: a regular expression matching exactly the
// name, already escaped for a PromQL string, and free of what Grafana's custom variables
// and interpolation treat specially (commas, spaces, $). Queries match it with =~ and the
// pipe format, which joins several values with | and, unlike Grafana's Prometheus
// escaping, leaves them as they are; so a name with quotes, backslashes or newlines
// selects itself and nothing else.
const (
	workloadVar = "${workload:pipe}"
	queueVar    = "${queue:pipe}"
)

func variables(r *rules.Rules) []Variable {
	ds := Variable{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus",
		Current: Option{Text: "default", Value: "default", Selected: true}, Options: []Option{}}
	var names, queues []string
	for _, w := range r.Workloads {
		names = append(names, w.Name)
		queues = append(queues, w.Queues...)
	}
	slices.Sort(queues)
	queues = slices.Compact(queues)
	custom := func(name, label string, values []string, multi bool) Variable {
		v := Variable{Name: name, Label: label, Type: "custom", Multi: multi, IncludeAll: multi}
		var items []string
		for i, val := range values {
			o := Option{Text: variableText(val), Value: rules.PromQLAlternation([]string{val}), Selected: i == 0 && !multi}
			v.Options = append(v.Options, o)
			if i == 0 {
				v.Current = o
				v.Current.Selected = true
			}
			// Grafana reads "text : value" pairs separated by commas; \, is a comma of the
			// text. The value has neither commas nor spaces.
			item := o.Value
			if o.Text != o.Value {
				item = strings.ReplaceAll(o.Text, ",", `\,`) + " : " + o.Value
			}
			items = append(items, item)
		}
		v.Query = strings.Join(items, ",")
		if multi {
			v.Current = Option{Text: "All", Value: "$__all", Selected: true}
		}
		return v
	}
	return []Variable{ds, custom("workload", "Workload", names, false), custom("queue", "Queue", queues, true)}
}

// variableText is how a variable shows a name: the name itself, or, when it holds
// characters that Grafana would read into (a $ starts a variable, a line break ends the
// pair) or that would not show, its Go-quoted form with $ written \x24.
func variableText(s string) string {
	plain := s != "" && strings.TrimSpace(s) == s
	for _, r := range s {
		plain = plain && r != '$' && r != '"' && r != '\\' && unicode.IsPrint(r)
	}
	if plain {
		return s
	}
	return strings.ReplaceAll(strconv.Quote(s), "$", `\x24`)
}

func base(r *rules.Rules, uid, title, description string) Dashboard {
	return Dashboard{
		UID: uid, Title: title, Description: description, Tags: []string{"workerscale"},
		Timezone: "browser", SchemaVersion: SchemaVersion, Version: 1, Editable: true, GraphTooltip: 1,
		Refresh: "30s", Time: TimeRange{From: "now-6h", To: "now"},
		Templating: Templating{List: variables(r)},
		Annotations: Annotations{List: []Annotation{{
			Name: "Annotations & Alerts", BuiltIn: 1, Type: "dashboard", Enable: true, Hide: true,
			IconColor: "rgba(0, 211, 255, 1)", Datasource: &DatasourceRef{Type: "grafana", UID: "-- Grafana --"},
		}}},
		Links: []Link{{Title: "workerscale", Type: "dashboards", Tags: []string{"workerscale"}, AsDropdown: true, IncludeVars: true, KeepTime: true}},
	}
}

// FleetDashboard is one row per workload: each metric coloured by the workload's own
// thresholds, and its replicas, class, concurrency and cost per hour.
func FleetDashboard(r *rules.Rules) Dashboard {
	d := base(r, FleetUID, "workerscale / fleet", "Every workload of the rules: its grade for each metric, replicas, class, concurrency and cost. Generated by workerscale render from "+r.File+".")
	l := &layout{}
	for i := range r.Workloads {
		w := &r.Workloads[i]
		l.row(fmt.Sprintf("%s: %s %s/%s", w.Name, w.Target.Kind, w.Target.Namespace, w.Target.Name))
		metrics := gradedWithQuery(w)
		width := max(3, 24/max(len(metrics), 1))
		wl := is("workload", w.Name)
		for _, m := range metrics {
			info := infoOf(m)
			l.add(stat(info.title, info.unit, selector(MetricSeries(m), wl), "", ThresholdSteps(w.Thresholds[m])), width, 4)
		}
		l.newline()
		// The controller's gauges, one series per workload however many instances export
		// them (see controllerGauge).
		replicas := controllerGauge("workerscale_current_replicas", wl)
		class := stat("Class", "short", controllerGaugeBy("workerscale_workload_class", "workload, class", wl, `state="current"`), "{{class}}", nil)
		class.Options["textMode"] = "name"
		l.add(stat("Replicas", "short", replicas, "", nil), 6, 3)
		l.add(class, 6, 3)
		l.add(stat("Concurrency", "short", controllerGauge("workerscale_current_concurrency", wl), "", nil), 6, 3)
		l.add(stat("Cost per hour", "currencyUSD", fmt.Sprintf(
			`max by (workload) (%s * on (class) group_left () %s) * on (workload) %s`,
			selector("workerscale_workload_class", wl, `state="current"`), ClassCostSeries, replicas), "", nil), 6, 3)
	}
	d.Panels = l.panels
	return d
}

// WorkloadDashboard is one workload over time: its metrics with its own warning and
// critical levels, replicas, class and concurrency, the controller's decisions, limits
// and errors, and scaling events as annotations.
func WorkloadDashboard(r *rules.Rules) Dashboard {
	d := base(r, WorkloadUID, "workerscale / workload", "One workload over time, with the levels of its rules. Generated by workerscale render from "+r.File+".")
	d.Annotations.List = append(d.Annotations.List, Annotation{
		Name: "Scaling", Datasource: datasource, Enable: true, IconColor: "rgba(255, 152, 48, 1)",
		Expr:        `sum by (workload, kind) (increase(workerscale_decisions_total{workload=~"` + workloadVar + `", applied="true", kind!="hold"}[2m])) > 0`,
		Step:        "1m",
		TitleFormat: "{{kind}}", TextFormat: "workerscale applied a {{kind}} to {{workload}}", TagKeys: "kind",
	})
	wl := `workload=~"` + workloadVar + `"`
	l := &layout{}
	l.row("Metrics of ${workload:text}")
	var metrics []string
	for i := range r.Workloads {
		for _, m := range gradedWithQuery(&r.Workloads[i]) {
			if !slices.Contains(metrics, m) {
				metrics = append(metrics, m)
			}
		}
	}
	order := rules.GradedMetrics()
	slices.SortStableFunc(metrics, func(a, b string) int {
		ia, ib := slices.Index(order, a), slices.Index(order, b)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		return ia - ib
	})
	for _, m := range metrics {
		info := infoOf(m)
		p := timeseries(info.title, info.unit,
			Target{Expr: selector(MetricSeries(m), wl), LegendFormat: m},
			Target{Expr: selector(ThresholdSeries, wl, is("metric", m)), LegendFormat: "{{level}}"})
		p.FieldConfig.Overrides = levelLines()
		l.add(p, 8, 8)
	}
	if q, ok := r.Queries.Templates[rules.QueueDepth]; ok && q.Match == rules.MatchQueue {
		expr, err := q.Render(rules.TemplateData{Queues: queueVar, Namespaces: ".+", Workloads: ".+", RateWindow: r.Queries.RateWindow.String()})
		if err == nil {
			l.row("Queues")
			l.add(timeseries("Queue depth by queue", "short", Target{Expr: expr, LegendFormat: "{{queue}}"}), 24, 8)
		}
	}
	l.row("Scaling of ${workload:text}")
	l.add(timeseries("Replicas", "short",
		Target{Expr: controllerGauge("workerscale_current_replicas", wl), LegendFormat: "current"},
		Target{Expr: controllerGauge("workerscale_desired_replicas", wl), LegendFormat: "desired"}), 8, 8)
	classPanel := Panel{Type: "state-timeline", Title: "Class",
		Targets:     []Target{{Expr: controllerGaugeBy("workerscale_workload_class", "workload, class, state", wl), LegendFormat: "{{state}}: {{class}}"}},
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Color: map[string]any{"mode": "palette-classic"}, Mappings: []any{}}, Overrides: []any{}},
		Options:     map[string]any{"showValue": "never", "mergeValues": true, "legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true}},
	}
	l.add(classPanel, 8, 8)
	l.add(timeseries("Concurrency", "short",
		Target{Expr: controllerGauge("workerscale_current_concurrency", wl), LegendFormat: "current"},
		Target{Expr: controllerGauge("workerscale_desired_concurrency", wl), LegendFormat: "desired"}), 8, 8)
	l.row("The controller")
	// Counters are summed over the instances: each counts its own cycles (in --dry-run
	// every replica decides; otherwise only the leader does).
	l.add(timeseries("Decisions", "short", Target{Expr: `sum by (kind, applied) (increase(workerscale_decisions_total{` + wl + `}[$__rate_interval]))`, LegendFormat: "{{kind}} applied={{applied}}"}), 8, 8)
	l.add(timeseries("Limits hit", "short", Target{Expr: `sum by (limit) (increase(workerscale_limits_total{` + wl + `}[$__rate_interval]))`, LegendFormat: "{{limit}}"}), 8, 8)
	l.add(timeseries("Errors", "short",
		Target{Expr: `sum by (stage) (rate(workerscale_errors_total[$__rate_interval]))`, LegendFormat: "{{stage}}"},
		Target{Expr: `sum by (kind) (rate(workerscale_prometheus_query_errors_total[$__rate_interval]))`, LegendFormat: "prometheus {{kind}}"}), 8, 8)
	l.add(timeseries("Cycle duration (p90)", "s", Target{Expr: `histogram_quantile(0.9, sum by (le) (rate(workerscale_cycle_duration_seconds_bucket[$__rate_interval])))`, LegendFormat: "p90"}), 12, 8)
	l.add(timeseries("Observations by outcome", "short", Target{Expr: `sum by (outcome) (rate(workerscale_prometheus_observations_total[$__rate_interval]))`, LegendFormat: "{{outcome}}"}), 12, 8)
	d.Panels = l.panels
	return d
}
