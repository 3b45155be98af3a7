package render

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// The promtool unit-test file format.
type unitTests struct {
	RuleFiles          []string   `yaml:"rule_files"`
	EvaluationInterval string     `yaml:"evaluation_interval"`
	Tests              []unitTest `yaml:"tests"`
}

type unitTest struct {
	Name        string        `yaml:"name"`
	Interval    string        `yaml:"interval"`
	InputSeries []inputSeries `yaml:"input_series"`
	AlertTests  []alertTest   `yaml:"alert_rule_test,omitempty"`
	ExprTests   []exprTest    `yaml:"promql_expr_test,omitempty"`
}

// exprTest evaluates an expression at a time: its samples must be exactly these.
type exprTest struct {
	Expr       string      `yaml:"expr"`
	EvalTime   string      `yaml:"eval_time"`
	ExpSamples []expSample `yaml:"exp_samples"`
}

// expSample is a series in PromQL notation, metric{label="value"}, and its value.
type expSample struct {
	Labels string  `yaml:"labels"`
	Value  float64 `yaml:"value"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertTest struct {
	EvalTime  string          `yaml:"eval_time"`
	AlertName string          `yaml:"alertname"`
	ExpAlerts []expectedAlert `yaml:"exp_alerts"`
}

type expectedAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// wantLabels are the labels every alert about w carries.
func wantLabels(w *rules.Workload, severity string) map[string]string {
	return map[string]string{"severity": severity, "namespace": w.Target.Namespace, "target_kind": w.Target.Kind, "target_name": w.Target.Name, "workload": w.Name}
}

// alertUnitTests writes promtool unit tests for every metric alert of r: a value just on
// the good side of warning fires nothing; the warning level fires the warning level's
// alert only; the critical level still only that one (critical is beyond it); just beyond
// critical fires both, each with its severity. Each value is held for the alert's `for`
// and a minute more.
func alertUnitTests(r *rules.Rules) (unitTests, int) {
	o := DefaultOptions()
	var file unitTests
	cases := 0
	for i := range r.Workloads {
		w := &r.Workloads[i]
		for _, metric := range gradedWithQuery(w) {
			t := w.Thresholds[metric]
			a := metricAlertOf(metric, t.Direction)
			warn, crit := *t.Warning, *t.Critical
			step := 0.001 * max(1, abs(crit))
			worse := 1.0
			if t.Direction == rules.LowerIsWorse {
				worse = -1
			}
			hold := t.For.D() + time.Minute
			for _, c := range []struct {
				name  string
				value float64
				fires []string
			}{
				{"just short of warning", warn - worse*step, nil},
				{"at warning", warn, []string{"warning"}},
				{"at critical", crit, []string{"warning"}},
				{"just beyond critical", crit + worse*step, []string{"warning", "critical"}},
			} {
				if c.name == "at critical" && crit == warn {
					continue
				}
				var exp []expectedAlert
				for _, lv := range c.fires {
					word, level, sev := "at or above", warn, a.AtWarning
					if lv == "critical" {
						word, level, sev = "above", crit, a.AtCritical
					}
					if t.Direction == rules.LowerIsWorse {
						word = strings.ReplaceAll(word, "above", "below")
					}
					exp = append(exp, expectedAlert{
						ExpLabels: wantLabels(w, sev),
						ExpAnnotations: map[string]string{
							"summary": a.Summary,
							"description": fmt.Sprintf("%s of workload %s (%s %s/%s) is %s, %s its %s level %s, for %s.",
								metric, w.Name, w.Target.Kind, w.Target.Namespace, w.Target.Name, fmt.Sprintf("%.3g", c.value), word, lv, num(level), t.For),
							"runbook_url": o.runbook(a.Name),
						},
					})
				}
				file.Tests = append(file.Tests, unitTest{
					Name:     fmt.Sprintf("%s %s %s", w.Name, metric, c.name),
					Interval: "1m",
					InputSeries: []inputSeries{{
						Series: selector(MetricSeries(metric), is("workload", w.Name)),
						Values: fmt.Sprintf("%sx%d", num(c.value), int(hold.Minutes())+2),
					}},
					AlertTests: []alertTest{{EvalTime: fmt.Sprintf("%dm", int(hold.Minutes())), AlertName: a.Name, ExpAlerts: exp}},
				})
				cases++
			}
		}
	}
	return file, cases
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// promtoolTest runs `promtool check rules` on a rule file and `promtool test rules` on
// unit tests of it.
func promtoolTest(t *testing.T, ruleFile []byte, tests unitTests) {
	t.Helper()
	bin := testenv.Command(t, "promtool")
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "workerscale.rules.yaml")
	if err := os.WriteFile(rulesPath, ruleFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", rulesPath).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	tests.RuleFiles = []string{"workerscale.rules.yaml"}
	tests.EvaluationInterval = "1m"
	b, err := yaml.Marshal(tests)
	if err != nil {
		t.Fatal(err)
	}
	testPath := filepath.Join(dir, "workerscale.test.yaml")
	if err := os.WriteFile(testPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "test", "rules", testPath).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules (%d tests): %v\n%s", len(tests.Tests), err, out)
	}
}
