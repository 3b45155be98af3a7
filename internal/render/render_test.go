package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/workerscale/workerscale/rules"
)

var update = flag.Bool("update", false, "rewrite the checked-in dashboards/, deploy/prometheus/, deploy/alertmanager/ and deploy/components/kube-prometheus-stack/generated/ from their rules")

// examples are the rules files whose output is checked in, and where it goes.
var examples = []string{"luneo-render", "blizzard-workers"}

// checkedIn maps a rendered file to its place in the repository: dashboards/<example>/...,
// deploy/prometheus/<example>/... and deploy/alertmanager/<example>/... The
// kustomization.yaml is not kept: its paths hold only in one output directory.
func checkedIn(example, name string) string {
	if name == KustomizationFile {
		return ""
	}
	if dir, file, ok := strings.Cut(name, "/"); ok && (dir == "prometheus" || dir == "alertmanager") {
		return filepath.Join("../../deploy", dir, example, file)
	}
	return filepath.Join("../../dashboards", example, strings.TrimPrefix(name, "dashboards/"))
}

// The install's own rules (deploy/base/rules.yaml) are rendered whole, as `workerscale
// render --out` writes them, into the kube-prometheus-stack component, which applies them.
const (
	installRules     = "deploy/base/rules.yaml"
	installGenerated = "../../deploy/components/kube-prometheus-stack/generated"
)

func renderExample(t *testing.T, example string) (*rules.Rules, map[string][]byte) {
	t.Helper()
	return renderFile(t, filepath.Join("rules/examples", example+".yaml"))
}

// renderFile renders a rules file named by its path from the repository root, the path a
// user runs render with (it is in the generated files' header).
func renderFile(t *testing.T, path string) (*rules.Rules, map[string][]byte) {
	t.Helper()
	wd, _ := os.Getwd()
	if err := os.Chdir("../.."); err != nil {
		t.Fatal(err)
	}
	r, err := rules.Load(path)
	os.Chdir(wd)
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(r, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return r, files
}

// TestCheckedInFilesAreGenerated: the files under dashboards/, deploy/prometheus/ and
// deploy/components/kube-prometheus-stack/generated/ are exactly what render writes for
// their rules; a hand edit fails here with a diff.
func TestCheckedInFilesAreGenerated(t *testing.T) {
	type output struct {
		files map[string][]byte
		place func(name string) string
	}
	var outputs []output
	for _, ex := range examples {
		_, files := renderExample(t, ex)
		outputs = append(outputs, output{files, func(name string) string { return checkedIn(ex, name) }})
	}
	_, files := renderFile(t, installRules)
	outputs = append(outputs, output{files, func(name string) string { return filepath.Join(installGenerated, name) }})
	for _, out := range outputs {
		files := out.files
		for _, name := range slices.Sorted(maps.Keys(files)) {
			path := out.place(name)
			if path == "" {
				continue
			}
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, files[name], 0o644); err != nil {
					t.Fatal(err)
				}
			}
			have, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: %v (run make generate)", path, err)
				continue
			}
			if !bytes.Equal(have, files[name]) {
				t.Errorf("%s differs from what render writes (run make generate, or change the rules, not the file):\n%s", path, diff(have, files[name]))
			}
		}
	}
	// The component applies what its kustomization.yaml lists, but a file render no longer
	// writes would mislead a reader: the directory holds exactly the output.
	err := filepath.WalkDir(installGenerated, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(installGenerated, path)
		if err != nil {
			return err
		}
		if _, ok := files[filepath.ToSlash(rel)]; !ok {
			t.Errorf("%s is not what render writes for %s: remove it", path, installRules)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// diff shows the first lines that differ.
func diff(have, want []byte) string {
	a, b := strings.Split(string(have), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return fmt.Sprintf("line %d\n  checked in: %s\n  generated:  %s", i+1, x, y)
		}
	}
	return ""
}

func decodeDashboard(t *testing.T, b []byte) Dashboard {
	t.Helper()
	var d Dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// TestDashboardStructure: schema version, unique panel ids, no overlapping panels, a
// description and the datasource variable on every panel and query, the cluster,
// namespace and workload variables from label values, and a fleet column per metric.
func TestDashboardStructure(t *testing.T) {
	for _, ex := range examples {
		r, files := renderExample(t, ex)
		for _, name := range []string{FleetFile, WorkloadFile} {
			t.Run(ex+"/"+name, func(t *testing.T) {
				d := decodeDashboard(t, files[name])
				if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
					t.Errorf("schemaVersion %d uid %q title %q", d.SchemaVersion, d.UID, d.Title)
				}
				vars := map[string]Variable{}
				for _, v := range d.Templating.List {
					vars[v.Name] = v
				}
				if vars["datasource"].Type != "datasource" || vars["datasource"].Query != "prometheus" {
					t.Errorf("variables: %+v", d.Templating.List)
				}
				for _, v := range []string{"cluster", "namespace", "workload"} {
					if q := vars[v].Query; vars[v].Type != "query" || !strings.HasPrefix(q, "label_values("+InfoSeries) || !strings.HasSuffix(q, ", "+v+")") {
						t.Errorf("variable %s: %+v", v, vars[v])
					}
				}
				if vars["workload"].Multi != (name == FleetFile) || vars["cluster"].AllValue != ".*" {
					t.Errorf("the fleet dashboard selects several workloads, the workload dashboard one, and the cluster may be missing: %+v", d.Templating.List)
				}
				ids := map[int]bool{}
				var cells []GridPos
				for _, p := range d.Panels {
					if ids[p.ID] {
						t.Errorf("panel id %d is used twice", p.ID)
					}
					ids[p.ID] = true
					g := p.GridPos
					if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
						t.Errorf("panel %q is off the grid: %+v", p.Title, g)
					}
					for _, c := range cells {
						if g.X < c.X+c.W && c.X < g.X+g.W && g.Y < c.Y+c.H && c.Y < g.Y+g.H {
							t.Errorf("panel %q at %+v overlaps another at %+v", p.Title, g, c)
						}
					}
					cells = append(cells, g)
					if p.Type == "row" {
						continue
					}
					if p.Description == "" {
						t.Errorf("panel %q has no description", p.Title)
					}
					if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
						t.Errorf("panel %q does not use the datasource variable", p.Title)
					}
					for _, tg := range p.Targets {
						if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" || tg.Expr == "" {
							t.Errorf("panel %q has a query without the datasource variable or without an expression", p.Title)
						}
					}
				}
				for _, a := range d.Annotations.List {
					if a.BuiltIn == 0 && (a.Datasource == nil || a.Datasource.UID != "${datasource}") {
						t.Errorf("annotation %q does not use the datasource variable", a.Name)
					}
				}
				if name == FleetFile {
					checkFleetColumns(t, r, d)
				}
			})
		}
	}
}

// selectionOf selects r's first workload and its namespace in the dashboards'
// variables, and every cluster.
func selectionOf(r *rules.Rules) map[string][]string {
	w := r.Workloads[0]
	return map[string][]string{"workload": {w.Name}, "namespace": {w.Target.Namespace}}
}

// fleetColumns are the fleet table's value columns, each query by its column's title.
func fleetColumns(t *testing.T, d Dashboard) map[string]string {
	t.Helper()
	for _, p := range d.Panels {
		if p.Type != "table" {
			continue
		}
		title := map[string]string{}
		for _, o := range p.FieldConfig.Overrides {
			o := o.(map[string]any)
			name := o["matcher"].(map[string]any)["options"].(string)
			for _, prop := range o["properties"].([]any) {
				if prop := prop.(map[string]any); prop["id"] == "displayName" {
					title[name] = prop["value"].(string)
				}
			}
		}
		out := map[string]string{}
		for _, tg := range p.Targets {
			if c, ok := title["Value #"+tg.RefID]; ok {
				out[c] = tg.Expr
			}
		}
		return out
	}
	t.Fatalf("%s has no table", d.UID)
	return nil
}

// checkFleetColumns: the fleet table has a column for each metric some workload grades,
// and the levels, as every other name and number, come from series.
func checkFleetColumns(t *testing.T, r *rules.Rules, d Dashboard) {
	t.Helper()
	cols := fleetColumns(t, d)
	for _, m := range graded(r) {
		if cols[infoOf(m).title] != fmt.Sprintf("max by (workload) (%s)", selector(MetricSeries(m), clusterMatcher, workloadsMatcher)) {
			t.Errorf("the fleet table's column for %s: %q", m, cols[infoOf(m).title])
		}
	}
	for _, c := range []string{"Level", "Replicas", "Desired", "Concurrency", "Cost per hour"} {
		if cols[c] == "" {
			t.Errorf("the fleet table has no column %s", c)
		}
	}
}

// TestDashboardsConfigMapAndPrometheusRule: the two Kubernetes forms carry the same
// content as the plain files.
func TestDashboardsConfigMapAndPrometheusRule(t *testing.T) {
	o := DefaultOptions()
	o.RuleLabels = map[string]string{"release": "kube-prometheus-stack"}
	r, _ := renderExample(t, "luneo-render")
	files, err := Render(r, o)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Metadata struct {
			Labels map[string]string
		}
		Data map[string]string
	}
	if err := yaml.Unmarshal(files[DashboardsCMFile], &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Metadata.Labels["grafana_dashboard"] != "1" || cm.Data["workerscale-fleet.json"] != string(files[FleetFile]) || cm.Data["workerscale-workload.json"] != string(files[WorkloadFile]) {
		t.Errorf("the dashboards ConfigMap does not carry the dashboards with grafana_dashboard: \"1\"")
	}
	var crd struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string
		Metadata   struct{ Labels map[string]string }
		Spec       RuleFile
	}
	var plain RuleFile
	if err := yaml.Unmarshal(files[PrometheusRuleFile], &crd); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(files[RulesFile], &plain); err != nil {
		t.Fatal(err)
	}
	if crd.Kind != "PrometheusRule" || crd.APIVersion != "monitoring.coreos.com/v1" || crd.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule header: %+v", crd)
	}
	a, _ := yaml.Marshal(crd.Spec)
	b, _ := yaml.Marshal(plain)
	if !bytes.Equal(a, b) {
		t.Error("the PrometheusRule's groups differ from the plain rule file's")
	}
}

// TestRunbooksCoverEveryAlert: each alert's runbook_url points at a section of
// docs/runbooks.md.
func TestRunbooksCoverEveryAlert(t *testing.T) {
	doc, err := os.ReadFile("../../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\w+)`).FindAllStringSubmatch(string(doc), -1) {
		anchors[strings.ToLower(m[1])] = true
	}
	for _, ex := range examples {
		r, _ := renderExample(t, ex)
		rf, err := PrometheusRules(r, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		rf.Groups = append(rf.Groups, ActionRules(r, DefaultOptions()).Groups...)
		for _, g := range rf.Groups {
			for _, rule := range g.Rules {
				if rule.Alert == "" {
					continue
				}
				_, anchor, _ := strings.Cut(rule.Annotations["runbook_url"], "#")
				if !anchors[anchor] {
					t.Errorf("%s: docs/runbooks.md has no section for %s (#%s)", ex, rule.Alert, anchor)
				}
			}
		}
	}
}

// TestPromtool: `promtool check rules` passes on the plain rule file, and generated unit
// tests show every warning and critical alert firing at its level and not before it.
func TestPromtool(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex, func(t *testing.T) {
			r, files := renderExample(t, ex)
			tests, n := alertUnitTests(r)
			promtoolTest(t, files[RulesFile], tests)
			if n < 8 {
				t.Errorf("only %d alert test cases", n)
			}
		})
	}
}

// TestPromtoolWorkloadsWithTheirOwnLevels: where workloads differ in a metric's levels,
// its `for` or its direction, the rules written once for all of them still fire each
// workload's alerts at its own level and not before it, after its own `for`.
func TestPromtoolWorkloadsWithTheirOwnLevels(t *testing.T) {
	r, err := rules.Parse("levels.yaml", []byte(`prometheus: {url: 'http://p:9090'}
queries:
  preset: bullmq
  templates:
    errorRatio: {query: 'max by (namespace, workload) (errors{namespace=~"{{.Namespaces}}"})', match: target}
classes: [{name: s, cpu: '1', memory: 2Gi, costPerHour: 1}]
thresholds:
  errorRatio: {warning: 0.1, critical: 0.2}
workloads:
  - {name: a, maxReplicas: 3, queues: [qa], target: {namespace: t1, name: a}}
  - name: b
    maxReplicas: 3
    queues: [qb]
    target: {namespace: t2, name: b}
    thresholds:
      queueDepth: {target: 5, warning: 7, critical: 9, for: 10m}
      errorRatio: {target: 0.95, warning: 0.9, critical: 0.8, direction: lowerIsWorse}
  - name: c
    maxReplicas: 3
    queues: [qc]
    target: {kind: StatefulSet, namespace: t1, name: c}
    thresholds:
      queueDepth: {warning: 100, critical: 200}
      cpu: {target: 0.4, warning: 0.5, critical: 0.7}
`))
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(r, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	tests, n := alertUnitTests(r)
	promtoolTest(t, files[RulesFile], tests)
	if n < 3*4*5 {
		t.Errorf("only %d alert test cases", n)
	}
}

// TestAlertConventions: every alert, the action alerts' included, has a severity of info,
// warning or critical; a namespace (a label, or the controller's series' by which it
// aggregates) so that a team's AlertmanagerConfig receives it; an alert about a workload
// also its target's kind and name and the workload's name; a static summary that is a
// capitalised sentence; a templated description with the value; and a runbook_url into
// docs/runbooks.md. One name keeps one summary and one runbook across severities.
func TestAlertConventions(t *testing.T) {
	o := DefaultOptions()
	for _, ex := range examples {
		r, _ := renderExample(t, ex)
		rf, err := PrometheusRules(r, o)
		if err != nil {
			t.Fatal(err)
		}
		rf.Groups = append(rf.Groups, ActionRules(r, o).Groups...)
		summaries := map[string]string{}
		severities := map[string]map[string]bool{}
		for _, g := range rf.Groups {
			for _, rule := range g.Rules {
				if rule.Alert == "" {
					continue
				}
				where := ex + " " + rule.Alert
				l, a := rule.Labels, rule.Annotations
				if !slices.Contains([]string{"info", "warning", "critical"}, l["severity"]) {
					t.Errorf("%s: severity %q", where, l["severity"])
				}
				if l["workload"] != "" {
					where += " of " + l["workload"]
					for _, k := range []string{"namespace", "target_kind", "target_name"} {
						if l[k] == "" {
							t.Errorf("%s: no %s label", where, k)
						}
					}
				} else if strings.Contains(rule.Expr, "group_left ("+targetLabels+")") {
					// An alert written once for all workloads takes each one's target
					// labels from its series (TestPromtool checks them).
					if !strings.Contains(a["description"], workloadText) {
						t.Errorf("%s: the description %q does not name the workload", where, a["description"])
					}
				} else if l["namespace"] == "" && !strings.Contains(rule.Expr, "by (namespace)") {
					t.Errorf("%s: neither a namespace label nor an aggregation by namespace: %s", where, rule.Expr)
				}
				s := a["summary"]
				if s == "" || strings.Contains(s, "{{") || !unicode.IsUpper([]rune(s)[0]) || !strings.HasSuffix(s, ".") {
					t.Errorf("%s: the summary %q is not a static, capitalised sentence", where, s)
				}
				if !strings.Contains(a["description"], "{{ $value") {
					t.Errorf("%s: the description %q does not give the value", where, a["description"])
				}
				if want := o.RunbookURL + "#" + strings.ToLower(rule.Alert); a["runbook_url"] != want {
					t.Errorf("%s: runbook_url %q, want %q", where, a["runbook_url"], want)
				}
				if prev, ok := summaries[rule.Alert]; ok && prev != s {
					t.Errorf("%s: the summary %q differs from the other severity's %q", where, s, prev)
				}
				summaries[rule.Alert] = s
				if severities[rule.Alert] == nil {
					severities[rule.Alert] = map[string]bool{}
				}
				severities[rule.Alert][l["severity"]] = true
			}
		}
		// The severities follow what a person must do: a symptom the autoscaler absorbs
		// is never critical; what it cannot absorb is.
		for _, name := range []string{"WorkerscaleQueueBacklogHigh", "WorkerscaleWaitTimeHigh", "WorkerscaleSaturationHigh", "WorkerscaleCPUHigh", "WorkerscaleMemoryHigh"} {
			if severities[name]["critical"] {
				t.Errorf("%s: %s is critical", ex, name)
			}
		}
		for _, name := range []string{"WorkerscaleWorkloadMaxedOut", "WorkerscaleCircuitBreakerOpen", "WorkerscaleMetricsMissing", "WorkerscaleDown", "WorkerscaleRulesInvalid"} {
			if !severities[name]["critical"] {
				t.Errorf("%s: %s is never critical (%v)", ex, name, severities[name])
			}
		}
	}
}

// kubectlApplyLimit is the most a Kubernetes object's annotations may hold: `kubectl
// apply` keeps the whole object in its last-applied-configuration annotation.
const kubectlApplyLimit = 256 << 10

// fleetRules are rules with n workloads, each in its own namespace with its own queue
// and its own levels, and each one's concurrency raised by the action alert.
func fleetRules(t *testing.T, n int) *rules.Rules {
	t.Helper()
	var y strings.Builder
	y.WriteString("prometheus: {url: 'http://p:9090'}\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi, costPerHour: 1}]\nworkloads:\n")
	for i := range n {
		fmt.Fprintf(&y, "  - {name: w%d, maxReplicas: %d, queues: [q%d], target: {namespace: team%d, name: worker%d}, concurrency: {max: 9},\n", i, 3+i, i, i, i)
		fmt.Fprintf(&y, "     thresholds: {queueDepth: {warning: %d, critical: %d}}}\n", 100+i, 1000+i)
	}
	r, err := rules.Parse("fleet.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDashboardsDoNotGrowWithTheWorkloads: the dashboards, and so their ConfigMap, are
// the same for 1 workload and for 200 with their own names, namespaces, queues and
// levels, and the ConfigMap stays well under what `kubectl apply` can keep.
func TestDashboardsDoNotGrowWithTheWorkloads(t *testing.T) {
	sizes := map[int]map[string][]byte{}
	for _, n := range []int{1, 200} {
		files, err := Render(fleetRules(t, n), DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		sizes[n] = files
		t.Logf("%d workloads: ConfigMap %d bytes (fleet %d, workload %d), PrometheusRule %d bytes",
			n, len(files[DashboardsCMFile]), len(files[FleetFile]), len(files[WorkloadFile]), len(files[PrometheusRuleFile]))
	}
	for _, name := range []string{FleetFile, WorkloadFile, DashboardsCMFile} {
		if !bytes.Equal(sizes[1][name], sizes[200][name]) {
			t.Errorf("%s differs between 1 and 200 workloads:\n%s", name, diff(sizes[1][name], sizes[200][name]))
		}
	}
	if n := len(sizes[200][DashboardsCMFile]); n > kubectlApplyLimit/2 {
		t.Errorf("the dashboards ConfigMap is %d bytes, over half of kubectl apply's %d", n, kubectlApplyLimit)
	}
}

// TestRulesDoNotGrowWithTheWorkloads: the alerts, the action alerts' PrometheusRule
// included, and the recording rules of the metrics are the same for 1 workload and for
// 200, each with its own name, namespace, queue and levels; only each workload's info,
// queue and own levels are added, a few hundred bytes, so that the PrometheusRule for 200
// stays well under what `kubectl apply` can keep.
func TestRulesDoNotGrowWithTheWorkloads(t *testing.T) {
	files := map[int]map[string][]byte{}
	groups := map[int]map[string]RuleGroup{}
	for _, n := range []int{1, 200} {
		r := fleetRules(t, n)
		var err error
		if files[n], err = Render(r, DefaultOptions()); err != nil {
			t.Fatal(err)
		}
		rf, err := PrometheusRules(r, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		groups[n] = map[string]RuleGroup{}
		for _, g := range rf.Groups {
			groups[n][g.Name] = g
		}
		t.Logf("%d workloads: PrometheusRule %d bytes, rule file %d bytes, %d alerts, %d recording rules of metrics; action alerts' PrometheusRule %d bytes",
			n, len(files[n][PrometheusRuleFile]), len(files[n][RulesFile]), len(groups[n]["workerscale-alerts"].Rules), len(groups[n]["workerscale-metrics"].Rules), len(files[n][ActionPrometheusRuleFile]))
	}
	a1, _ := yamlOf(groups[1]["workerscale-alerts"])
	a200, _ := yamlOf(groups[200]["workerscale-alerts"])
	if !bytes.Equal(a1, a200) {
		t.Errorf("the alerts differ between 1 and 200 workloads:\n%s", diff(a1, a200))
	}
	if !bytes.Equal(files[1][ActionPrometheusRuleFile], files[200][ActionPrometheusRuleFile]) || files[1][ActionPrometheusRuleFile] == nil {
		t.Errorf("the action alerts differ between 1 and 200 workloads:\n%s", diff(files[1][ActionPrometheusRuleFile], files[200][ActionPrometheusRuleFile]))
	}
	m1, _ := yamlOf(groups[1]["workerscale-metrics"])
	m200, _ := yamlOf(groups[200]["workerscale-metrics"])
	if !bytes.Equal(m1, m200) {
		t.Errorf("the recording rules of metrics differ between 1 and 200 workloads:\n%s", diff(m1, m200))
	}
	size1, size200 := len(files[1][PrometheusRuleFile]), len(files[200][PrometheusRuleFile])
	if per := (size200 - size1) / 199; per > 1024 {
		t.Errorf("the PrometheusRule grows by %d bytes per workload (%d for 1, %d for 200), want at most 1 KiB", per, size1, size200)
	}
	if size200 > kubectlApplyLimit*6/10 {
		t.Errorf("the PrometheusRule for 200 workloads is %d bytes, over 60%% of kubectl apply's %d", size200, kubectlApplyLimit)
	}
}
