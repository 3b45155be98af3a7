package render

import (
	"bytes"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/workerscale/workerscale/rules"
)

// hostileQueues are queue names that rewrite a query whose values are not escaped, and
// that Grafana's custom variables and interpolation read into (commas, " : ", $).
var hostileQueues = []string{
	`x", job!="`, `a|b`, `.*`, "new\nline", `}{`, `x"} or vector(1) or {y="`, `back\slash`, `\`, `it's`,
	`$1`, `${queue}`, `a,b`, `a\,b`, ` spaced `, `c : d`, `(?i)Q`, `ünï`, "\uFFFD", "tab\t", "u\u2028v",
}

// decoys are what an unescaped query over the hostile names would select instead.
var decoys = []string{"x", "a", "b", "c", "d", "new", "line", "y", "back", "it", "1", "spaced", "q", "Q", "", "anything"}

// hostileRules are rules whose queues are hostileQueues, one workload per queue and one
// with two, whose names are then made hostile too: validation keeps workload names to
// DNS labels, and the rendered queries must not rely on it.
func hostileRules(t *testing.T) *rules.Rules {
	t.Helper()
	var y strings.Builder
	y.WriteString("prometheus: {url: 'http://p:9090'}\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi, costPerHour: 1}]\nworkloads:\n")
	for i, q := range hostileQueues[2:] {
		fmt.Fprintf(&y, "  - {name: w%d, maxReplicas: 3, queues: [%q], target: {namespace: ns, name: w%d}}\n", i, q, i)
	}
	fmt.Fprintf(&y, "  - {name: two, maxReplicas: 3, queues: [%q, %q], target: {namespace: ns, name: two}}\n", hostileQueues[0], hostileQueues[1])
	r, err := rules.Parse("hostile.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"w\n{{ .Value }}", `w"} or vector(1) or {x="`, `w$1\`} {
		r.Workloads[i].Name = name
	}
	return r
}

// grafanaValue is a variable's selected values as Grafana's Prometheus data source
// writes them into a query (its interpolateQueryExpr): a single-value variable's value
// with backslashes and single quotes escaped; a multi-value or All variable's values
// escaped as regular expressions and joined as (a|b); All, when the variable has an
// allValue and nothing is selected, that value.
func grafanaValue(v Variable, values []string) string {
	if v.IncludeAll && values == nil && v.AllValue != "" {
		return v.AllValue
	}
	if !v.Multi && !v.IncludeAll {
		return strings.NewReplacer(`\`, `\\`, `'`, `\\'`).Replace(values[0])
	}
	special := regexp.MustCompile(`[$^*{}\[\]'+?.()|]`)
	var escaped []string
	for _, s := range values {
		s = strings.ReplaceAll(s, `\`, `\\\\`)
		escaped = append(escaped, special.ReplaceAllString(s, `\\$0`))
	}
	if len(escaped) == 1 {
		return escaped[0]
	}
	return "(" + strings.Join(escaped, "|") + ")"
}

// interpolate replaces a dashboard's variables as Grafana does, each with the given
// values selected (nil: All). A variable left over is an error.
func interpolate(t *testing.T, expr string, d Dashboard, selected map[string][]string) string {
	t.Helper()
	expr = strings.ReplaceAll(expr, "$__rate_interval", "1m")
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			continue
		}
		expr = strings.ReplaceAll(expr, "$"+v.Name, grafanaValue(v, selected[v.Name]))
	}
	if strings.Contains(expr, "$") {
		t.Fatalf("a variable is left: %s", expr)
	}
	return expr
}

// matchersOf parses expr and returns the label matchers of its selectors.
func matchersOf(t *testing.T, expr string) []*labels.Matcher {
	t.Helper()
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("%v\n%s", err, expr)
	}
	var out []*labels.Matcher
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs.LabelMatchers...)
		}
		return nil
	})
	return out
}

// selects checks that every matcher of expr on a label of want matches exactly want's
// values among the candidates, and that every other matcher is one of fixed.
func selects(t *testing.T, where, expr string, want map[string][]string, candidates []string) {
	t.Helper()
	fixed := regexp.MustCompile(`^(__name__=.*|state=~"waiting\|prioritized"|state="(active|current|completed)"|applied="true"|kind!="hold"|container!="(POD)?"|phase="Running"|resource="(cpu|memory)"|reason="OOMKilled"|metric="\w+"|result="error"|limit="circuitBreaker"|limit=~"maxReplicas\|classMax\|rateBudget"|owner_kind="Deployment"|cluster=~"\.\*")$`)
	for _, m := range matchersOf(t, expr) {
		values, ok := want[m.Name]
		if !ok {
			if !fixed.MatchString(m.String()) {
				t.Errorf("%s: unexpected matcher %s\n%s", where, m, expr)
			}
			continue
		}
		for _, c := range slices.Concat(values, candidates) {
			if w := slices.Contains(values, c); m.Matches(c) != w {
				t.Errorf("%s: %s matches %q: %v, want %v\n%s", where, m, c, !w, w, expr)
			}
		}
	}
}

// TestHostileNamesSelectOnlyThemselves: with hostile queue, workload and job names, every
// expression render writes parses, and its matchers select exactly the intended names:
// the recording rules and alerts of each workload its own queues and name, the fleet
// dashboard each row's workload, the workload dashboard the workload and queues selected
// in its variables, read as Grafana reads them.
func TestHostileNamesSelectOnlyThemselves(t *testing.T) {
	r := hostileRules(t)
	o := DefaultOptions()
	o.ControllerJob = `workerscale", job=~".*`
	files, err := Render(r, o)
	if err != nil {
		t.Fatal(err)
	}
	var names, queues []string
	for _, w := range r.Workloads {
		names = append(names, w.Name)
		queues = append(queues, w.Queues...)
	}
	candidates := slices.Concat(names, queues, decoys, []string{o.ControllerJob, "workerscale", "ns", "w0"})
	// One workload has its own levels, so that a rule names the workloads it is for.
	own := &r.Workloads[1]
	own.Thresholds = maps.Clone(own.Thresholds)
	own.Thresholds[rules.QueueDepth] = rules.Threshold{Warning: ptr(70.0), Critical: ptr(700.0), Direction: rules.HigherIsWorse, For: own.Thresholds[rules.QueueDepth].For}
	rf, err := PrometheusRules(r, o)
	if err != nil {
		t.Fatal(err)
	}
	// The recording rules read every queue, namespace and target name ("(?s:.+)") and narrow them by
	// the series of the rules' names, which carry them as label values; a matcher on the
	// workload selects (or leaves out) some of the rules' workloads and nothing else.
	generic := regexp.MustCompile(`^(queue|owner_name|namespace)=~"\(\?s:\.\+\)"$|^owner_kind="(StatefulSet|ReplicaSet|Deployment)"$|^owner_is_controller="true"$|^level="(target|warning|critical)"$|^metric=~"queueDepth\|waitSeconds"$`)
	selectedOwn := false
	for _, g := range rf.Groups {
		for _, rule := range g.Rules {
			where := rule.Record + rule.Alert
			var rest []string
			for _, m := range matchersOf(t, rule.Expr) {
				switch {
				case m.Name == "__name__":
				case m.Name == "workload":
					// workload=~ selects, workload!~ leaves out, only names of the rules.
					negative := m.Type == labels.MatchNotRegexp || m.Type == labels.MatchNotEqual
					for _, c := range candidates {
						if m.Matches(c) != negative && !slices.Contains(names, c) {
							t.Errorf("%s: %s tells %q, which is no workload of the rules\n%s", where, m, c, rule.Expr)
						}
					}
					selectedOwn = selectedOwn || m.Matches(own.Name)
				case !generic.MatchString(m.String()):
					rest = append(rest, m.String())
				}
			}
			if len(rest) > 0 {
				selects(t, where, selector("x", rest...), map[string][]string{"job": {o.ControllerJob}, "namespace": {"ns"}}, candidates)
			}
		}
	}
	if !selectedOwn {
		t.Errorf("no rule selects the workload %q with its own levels", own.Name)
	}

	// The dashboards hold no workload, queue or namespace name: they are the same for
	// rules whose names are plain.
	plain := hostileRules(t)
	for i := range plain.Workloads {
		plain.Workloads[i].Name = fmt.Sprintf("p%d", i)
		plain.Workloads[i].Queues = []string{fmt.Sprintf("q%d", i)}
	}
	plainFiles, err := Render(plain, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{FleetFile, WorkloadFile} {
		if !bytes.Equal(files[name], plainFiles[name]) {
			t.Errorf("%s depends on the names of the rules:\n%s", name, diff(plainFiles[name], files[name]))
		}
	}
	// The names Grafana reads from the recording rules (DNS labels, as rules.Load
	// requires) select themselves and nothing else once it interpolates them; the job
	// is written in, escaped.
	valid := []string{"w3", "w4", "w10"}
	for _, name := range []string{FleetFile, WorkloadFile} {
		d := decodeDashboard(t, files[name])
		var exprs []string
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				exprs = append(exprs, a.Expr)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				exprs = append(exprs, strings.TrimSuffix(strings.TrimPrefix(v.Query, "label_values("), ", "+v.Name+")"))
			}
		}
		selections := [][]string{{"w3"}, {"w10"}}
		if name == FleetFile {
			selections = append(selections, valid)
		}
		for _, sel := range selections {
			for _, expr := range exprs {
				expr = interpolate(t, expr, d, map[string][]string{"workload": sel, "namespace": {"ns"}})
				selects(t, name, expr, map[string][]string{"workload": sel, "namespace": {"ns"}, "job": {o.ControllerJob}}, candidates)
			}
		}
	}
}

// TestPromtoolHostileNames: Prometheus's own rule evaluation, over series of hostile
// queues and of the decoys an unescaped query would read, gives each workload the sum of
// its own queues; its alerts carry its name as it is, template syntax included; a
// constant label keeps a value with $ and quotes.
func TestPromtoolHostileNames(t *testing.T) {
	r := hostileRules(t)
	// The second workload has its own levels: each workload's level series is its own.
	own := &r.Workloads[1]
	own.Thresholds = maps.Clone(own.Thresholds)
	own.Thresholds[rules.QueueDepth] = rules.Threshold{Warning: ptr(70.0), Critical: ptr(700.0), Direction: rules.HigherIsWorse, For: own.Thresholds[rules.QueueDepth].For}
	files, err := Render(r, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	test := unitTest{Name: "hostile names", Interval: "1m"}
	depth := map[string]float64{}
	for i, q := range slices.Concat(hostileQueues, decoys) {
		v := float64(i + 1) // below every level
		if i >= len(hostileQueues) {
			v = 1e6
		}
		depth[q] = v
		test.InputSeries = append(test.InputSeries, inputSeries{Series: selector("bullmq_job_count", is("queue", q), `state="waiting"`), Values: fmt.Sprintf("%sx10", num(v))})
	}
	// The first workload's queue is deep enough for both of its queue-depth alerts.
	test.InputSeries[2].Values = "500x10"
	depth[hostileQueues[2]] = 500
	var samples []expSample
	for _, w := range r.Workloads {
		sum := 0.0
		for _, q := range w.Queues {
			sum += depth[q]
		}
		samples = append(samples, expSample{Labels: selector(MetricSeries(rules.QueueDepth), is("workload", w.Name)), Value: sum})
	}
	test.ExprTests = append(test.ExprTests, exprTest{Expr: MetricSeries(rules.QueueDepth), EvalTime: "5m", ExpSamples: samples})
	var levels []expSample
	for _, w := range r.Workloads {
		levels = append(levels, expSample{Labels: selector("", is("workload", w.Name)), Value: *w.Thresholds[rules.QueueDepth].Warning})
	}
	test.ExprTests = append(test.ExprTests, exprTest{Expr: "max by (workload) (" + thresholdOf(rules.QueueDepth, "warning") + ")", EvalTime: "5m", ExpSamples: levels})
	for _, v := range []string{`$1`, `$$`, `${x}`, `a"b`, "new\nline", `back\slash`, `}{`} {
		test.ExprTests = append(test.ExprTests, exprTest{Expr: constant(2, [2]string{"l", v}), EvalTime: "0m", ExpSamples: []expSample{{Labels: selector("", is("l", v)), Value: 2}}})
	}
	w := r.Workloads[0]
	th := w.Thresholds[rules.QueueDepth]
	a := metricAlertOf(rules.QueueDepth, th.Direction)
	alert := a.Name
	var exp []expectedAlert
	for _, lv := range []struct {
		level, severity, word string
		value                 float64
	}{{"warning", a.AtWarning, "at or above", *th.Warning}, {"critical", a.AtCritical, "above", *th.Critical}} {
		exp = append(exp, expectedAlert{
			ExpLabels: wantLabels(&w, lv.severity),
			ExpAnnotations: map[string]string{
				"summary": a.Summary,
				"description": fmt.Sprintf("queueDepth of workload %s (%s %s/%s) is 500, %s its %s level %s, for %s.",
					w.Name, w.Target.Kind, w.Target.Namespace, w.Target.Name, lv.word, lv.level, num(lv.value), th.For),
				"runbook_url": DefaultOptions().runbook(alert),
			},
		})
	}
	test.AlertTests = []alertTest{{EvalTime: "8m", AlertName: alert, ExpAlerts: exp}}
	promtoolTest(t, files[RulesFile], unitTests{Tests: []unitTest{test}})
	if !strings.Contains(w.Name, "{{") {
		t.Errorf("the first workload's name %q has no template syntax", w.Name)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRenderRefusesMetricNamesThatAreNotIdentifiers: a metric's name is part of a series
// name, which cannot be escaped.
func TestRenderRefusesMetricNamesThatAreNotIdentifiers(t *testing.T) {
	for _, name := range []string{`queue"depth`, "queue depth", "x{y}", "", "1st"} {
		r, _ := renderExample(t, "luneo-render")
		w := &r.Workloads[0]
		w.Queries = maps.Clone(w.Queries)
		w.Queries[name] = w.Queries[rules.QueueDepth]
		if _, err := Render(r, DefaultOptions()); err == nil || !strings.Contains(err.Error(), strconv.Quote(name)) {
			t.Errorf("metric %q: Render gives %v, want an error naming it", name, err)
		}
		if _, err := PrometheusRules(r, DefaultOptions()); err == nil {
			t.Errorf("metric %q: PrometheusRules gives no error", name)
		}
	}
}
