package render

import (
	"fmt"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// controllerSeries are the per-workload gauges of one controller instance, as Prometheus
// stores them: with the instance, pod and job of its scrape.
func controllerSeries(workload, instance string, replicas, ready, concurrency int, class string) []inputSeries {
	target := []string{is("workload", workload), is("instance", instance+":8080"), is("pod", "workerscale-"+instance), `job="workerscale"`}
	gauge := func(metric string, v int, extra ...string) inputSeries {
		return inputSeries{Series: selector(metric, append(target, extra...)...), Values: fmt.Sprintf("%dx20", v)}
	}
	return []inputSeries{
		gauge("workerscale_current_replicas", replicas),
		gauge("workerscale_desired_replicas", replicas),
		gauge("workerscale_ready_replicas", ready),
		gauge("workerscale_current_concurrency", concurrency),
		gauge("workerscale_desired_concurrency", concurrency),
		gauge("workerscale_workload_class", 1, is("class", class), `state="current"`),
		gauge("workerscale_workload_class", 1, is("class", class), `state="desired"`),
		{Series: selector("up", is("instance", instance+":8080"), `job="workerscale"`), Values: "1x20"},
	}
}

// TestPromtoolTwoControllers: two controller instances (the shipped Deployment's two
// replicas in --dry-run, or a rolling update) export the same gauges. The saturation
// recording rule still has one value per workload, its alerts fire once with the
// workload's labels only, WorkerscaleDown waits for both instances to be down, and the
// dashboards' controller panels, cost per hour included, read one instance's worth.
func TestPromtoolTwoControllers(t *testing.T) {
	r, files := renderExample(t, "luneo-render")
	w := r.Workloads[0]
	medium := r.Class("medium")
	// 2 ready replicas of concurrency 5, 10 active jobs: saturation 1, beyond critical.
	input := []inputSeries{{Series: `bullmq_job_count{queue="render", state="active"}`, Values: "10x20"}}
	input = append(input, controllerSeries(w.Name, "a", 2, 2, 5, medium.Name)...)
	input = append(input, controllerSeries(w.Name, "b", 2, 2, 5, medium.Name)...)
	one := is("workload", w.Name)
	test := unitTest{Name: "two controllers", Interval: "1m", InputSeries: input}
	test.ExprTests = append(test.ExprTests, exprTest{Expr: MetricSeries(rules.Saturation), EvalTime: "5m",
		ExpSamples: []expSample{{Labels: selector(MetricSeries(rules.Saturation), one), Value: 1}}})

	// The dashboards' panels on the controller's gauges, the workload dashboard's with
	// its variables on this workload and all queues.
	want := map[string][]expSample{
		"Replicas":      {{Labels: "{" + one + "}", Value: 2}},
		"Class":         {{Labels: "{" + one + ", " + is("class", medium.Name) + "}", Value: 1}},
		"Concurrency":   {{Labels: "{" + one + "}", Value: 5}},
		"Cost per hour": {{Labels: "{" + one + "}", Value: 2 * medium.CostPerHour}},
	}
	checked := 0
	for _, p := range FleetDashboard(r).Panels {
		if exp, ok := want[p.Title]; ok {
			test.ExprTests = append(test.ExprTests, exprTest{Expr: p.Targets[0].Expr, EvalTime: "5m", ExpSamples: exp})
			checked++
		}
	}
	wd := WorkloadDashboard(r)
	vars := variableOptions(wd)
	for _, p := range wd.Panels {
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "max by") {
				continue
			}
			var exp []expSample
			switch p.Title {
			case "Replicas":
				exp = []expSample{{Labels: "{" + one + "}", Value: 2}}
			case "Concurrency":
				exp = []expSample{{Labels: "{" + one + "}", Value: 5}}
			case "Class":
				for _, state := range []string{"current", "desired"} {
					exp = append(exp, expSample{Labels: "{" + one + ", " + is("class", medium.Name) + ", " + is("state", state) + "}", Value: 1})
				}
			default:
				t.Fatalf("no expected value for the panel %q", p.Title)
			}
			test.ExprTests = append(test.ExprTests, exprTest{Expr: interpolate(t, tg.Expr, vars), EvalTime: "5m", ExpSamples: exp})
			checked++
		}
	}
	if checked != len(want)+5 {
		t.Errorf("%d controller panels checked, want %d", checked, len(want)+5)
	}

	// Saturation alerts: once each, with the workload's labels, not one per instance.
	th := w.Thresholds[rules.Saturation]
	var exp []expectedAlert
	for _, lv := range []struct {
		severity, word string
		level          float64
	}{{"warning", "at or above", *th.Warning}, {"critical", "above", *th.Critical}} {
		exp = append(exp, expectedAlert{
			ExpLabels: map[string]string{"severity": lv.severity, "workload": w.Name},
			ExpAnnotations: map[string]string{
				"summary":     fmt.Sprintf("saturation of %s is %s", w.Name, lv.severity),
				"description": fmt.Sprintf("saturation of workload %s is 1, %s its %s level %s, for %s.", w.Name, lv.word, lv.severity, num(lv.level), th.For),
				"runbook_url": DefaultOptions().runbook(AlertName(rules.Saturation)),
			},
		})
	}
	hold := fmt.Sprintf("%dm", int(th.For.D().Minutes())+2)
	test.AlertTests = append(test.AlertTests, alertTest{EvalTime: hold, AlertName: AlertName(rules.Saturation), ExpAlerts: exp})

	// One instance down: the other still scales, WorkerscaleDown stays quiet; both down,
	// it fires once.
	oneDown := unitTest{Name: "one of two controllers down", Interval: "1m", InputSeries: []inputSeries{
		{Series: `up{instance="a:8080", job="workerscale"}`, Values: "1x20"},
		{Series: `up{instance="b:8080", job="workerscale"}`, Values: "0x20"},
	}, AlertTests: []alertTest{{EvalTime: "10m", AlertName: "WorkerscaleDown"}}}
	bothDown := oneDown
	bothDown.Name = "both controllers down"
	bothDown.InputSeries = []inputSeries{
		{Series: `up{instance="a:8080", job="workerscale"}`, Values: "0x20"},
		{Series: `up{instance="b:8080", job="workerscale"}`, Values: "0x20"},
	}
	var down Rule
	rf, err := PrometheusRules(r, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, rule := range rf.Groups[2].Rules {
		if rule.Alert == "WorkerscaleDown" {
			down = rule
		}
	}
	bothDown.AlertTests = []alertTest{{EvalTime: "10m", AlertName: "WorkerscaleDown", ExpAlerts: []expectedAlert{{ExpLabels: down.Labels, ExpAnnotations: down.Annotations}}}}
	promtoolTest(t, files[RulesFile], unitTests{Tests: []unitTest{test, oneDown, bothDown}})
}
